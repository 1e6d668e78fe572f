"""Reduced-precision inference for score networks: which dtype their per-edge work runs in.

Message passing spends most of its time in per-edge MLPs (``E ≈ N²`` rows on a dense molecular
graph). Running only those in bfloat16, while positions, distances, coordinate updates and sums
stay in float32, changes the denoiser's output by far less than the sampler's own noise and is
several times faster where bf16 is native (recent x86 CPUs with AVX512-BF16 / AMX, GPUs since
Ampere). Networks opt in by exposing an ``edge_dtype`` attribute (:class:`molediff.nn.egnn.EGNN`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["PRECISIONS", "bf16_is_fast", "resolve_precision", "supports_reduced_precision", "edge_precision"]

#: precision name -> dtype of the per-edge work (``None``: the input's dtype, float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # an older torch without the including_emulation keyword
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`bf16_is_fast`, else ``"fp32"``; other names are checked."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {['auto', *PRECISIONS]}")
    return precision


def _edge_dtype_modules(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "edge_dtype")]


def supports_reduced_precision(module: nn.Module) -> bool:
    """Whether ``module`` contains a network with a reduced-precision path (an ``edge_dtype`` attribute)."""
    return bool(_edge_dtype_modules(module))


@contextmanager
def edge_precision(module: nn.Module, precision: str) -> Iterator[None]:
    """Run ``module``'s per-edge work in ``precision`` (``"fp32"`` or ``"bf16"``) inside the block.

    Raises
    ------
    ValueError
        ``precision`` is unknown, or reduced precision is asked of a network without an ``edge_dtype``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    targets = _edge_dtype_modules(module)
    dtype = PRECISIONS[precision]
    if dtype is not None and not targets:
        raise ValueError(f"{type(module).__name__} has no reduced-precision path; use precision='fp32'")
    saved = [m.edge_dtype for m in targets]
    try:
        for m in targets:
            m.edge_dtype = dtype
        yield
    finally:
        for m, d in zip(targets, saved):
            m.edge_dtype = d
