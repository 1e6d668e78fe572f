"""molediff: SE(3)-equivariant diffusion for molecules and point clouds.

Submodules are imported lazily: ``import molediff`` is cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "generate_conformers": ("molediff.chem.generate", "generate_conformers"),
    "generate_conformers_batch": ("molediff.chem.generate", "generate_conformers_batch"),
    "load_conformer_model": ("molediff.chem.model", "load_conformer_model"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'molediff' has no attribute {name!r}")
