"""On-disk cache for processed molecular data sets: safetensors arrays + a JSON sidecar.

No pickle: arrays go to ``<stem>.safetensors`` and strings / metadata to ``<stem>.json``.
Both files are written to a temporary name and renamed, so a crashed run never leaves a
half-written cache that a later run would trust; the JSON is written last and marks the
entry as complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from molediff.temp_files import reserve_temp_path, set_default_mode

__all__ = ["default_cache_dir", "save_arrays", "load_arrays", "cache_complete"]


def default_cache_dir(name: str) -> Path:
    """``$MOLEDIFF_CACHE/<name>`` if set, else ``~/.cache/molediff/<name>``."""
    root = os.environ.get("MOLEDIFF_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "molediff"
    return base / name


def cache_complete(stem: Path) -> bool:
    """True if both ``stem.safetensors`` and ``stem.json`` exist."""
    stem = Path(stem)
    return stem.with_suffix(".safetensors").exists() and stem.with_suffix(".json").exists()


def save_arrays(stem: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Atomically write ``arrays`` (safetensors) and ``meta`` (JSON) next to each other."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    # Unique temporary names (not the pid: ranks on several hosts can share a pid and a cache).
    tmp_st = _temp_name(st)
    tmp_js = _temp_name(js)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp_st))
        set_default_mode(tmp_st)  # safetensors writes 0600 files
        with open(tmp_js, "w") as fh:
            json.dump(meta, fh)
        os.replace(tmp_st, st)
        os.replace(tmp_js, js)
    finally:
        for tmp in (tmp_st, tmp_js):
            if tmp.exists():
                tmp.unlink()


def _temp_name(path: Path) -> Path:
    return reserve_temp_path(path)


def load_arrays(stem: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read back what :func:`save_arrays` wrote."""
    stem = Path(stem)
    with open(stem.with_suffix(".json")) as fh:
        meta = json.load(fh)
    return load_file(str(stem.with_suffix(".safetensors"))), meta
