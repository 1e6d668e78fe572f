"""The ``.json`` + ``.safetensors`` pair that every molediff model, checkpoint and cache is stored as.

A user may name such a pair by either file or by their common stem, and a stem may itself contain dots
(``qm9_egnn.v2``, ``step_00001000.best``): ``Path.with_suffix`` would replace the ``.v2``, so the pair is
built by appending to the stem's name instead.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PAIR_SUFFIXES", "pair_stem", "file_pair"]

PAIR_SUFFIXES = (".json", ".safetensors")


def pair_stem(path: str | os.PathLike[str]) -> Path:
    """The common stem of the pair ``path`` names: ``path`` less a ``.json`` / ``.safetensors`` ending.

    >>> pair_stem("runs/qm9_egnn.v2.json").name, pair_stem("runs/qm9_egnn.v2").name
    ('qm9_egnn.v2', 'qm9_egnn.v2')
    """
    path = Path(path)
    return path.with_suffix("") if path.suffix in PAIR_SUFFIXES else path


def file_pair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.safetensors)`` for ``path``, either file of the pair or their stem.

    >>> [p.name for p in file_pair("model.v2.safetensors")]
    ['model.v2.json', 'model.v2.safetensors']
    """
    stem = pair_stem(path)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")
