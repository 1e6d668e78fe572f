"""molediff.nn: equivariant score networks and pure-torch graph utilities.

Names are imported lazily, so ``import molediff.nn`` does not import e3nn until a network that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EGNN": "molediff.nn.egnn",
    "GraphFieldNetwork": "molediff.nn.gfn",
    "TensorFieldNetwork": "molediff.nn.tensor_field",
    "ResidualMLP": "molediff.nn.mlp",
    "UNet": "molediff.nn.unet",
    "radius_graph": "molediff.nn.graph",
    "knn_graph": "molediff.nn.graph",
    "fully_connected_graph": "molediff.nn.graph",
    "build_edges": "molediff.nn.graph",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'molediff.nn' has no attribute {name!r}")
