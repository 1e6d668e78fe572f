"""Small tensor helpers and input validation shared by the diffusion core.

Validation helpers come in two kinds: *shape/dtype* checks, which read only metadata and are safe inside
sampling loops, and *value* checks (:func:`check_positive`), which synchronise with the device and belong at
entry points only (building a σ grid, a loss call, a likelihood call), never inside a per-step loop.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

__all__ = [
    "ShapeError",
    "DTypeError",
    "NoiseLevelError",
    "append_dims",
    "flat_rows",
    "as_row_sigma",
    "check_floating",
    "check_positive",
    "check_batch_index",
    "check_same_rows",
]

Scalar = Union[float, int]


class ShapeError(ValueError):
    """A tensor has the wrong number of dimensions or the wrong size."""


class DTypeError(TypeError):
    """A tensor has the wrong dtype (e.g. an integer tensor where floats are needed)."""


class NoiseLevelError(ValueError):
    """A noise level σ is invalid (non-positive where it must be positive, non-finite, ...)."""


def flat_rows(x: Tensor) -> Tensor:
    """``x`` with every row's trailing dims flattened, ``[R, ...] -> [R, prod(...)]``.

    Unlike ``reshape(R, -1)`` this also holds for an empty batch (``R = 0``), where ``-1`` is ambiguous.
    """
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``t`` until it has ``ndim`` dimensions.

    Parameters
    ----------
    t : Tensor
        Per-row values, typically a noise level ``sigma`` of shape ``[N]``.
    ndim : int
        Target number of dimensions (usually ``x.ndim``).

    Returns
    -------
    Tensor
        A view of ``t`` with shape ``t.shape + (1,) * (ndim - t.ndim)``.

    Shapes
    ------
    ``[N] -> [N, 1, ..., 1]``.
    """
    extra = ndim - t.ndim
    if extra < 0:
        raise ShapeError(f"append_dims: tensor has {t.ndim} dims, more than the target ndim={ndim}")
    return t.reshape(*t.shape, *([1] * extra))


def check_floating(x: Tensor, name: str = "x") -> Tensor:
    """Raise :class:`DTypeError` unless ``x`` is a floating-point tensor; return ``x``."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def as_row_sigma(sigma: Union[Tensor, Scalar], x: Tensor, name: str = "sigma") -> Tensor:
    """Return ``sigma`` as a per-row tensor of shape ``[x.shape[0]]`` (dtype and device of ``x``).

    A Python number or a 0-d tensor is broadcast; a 1-d tensor must already have ``x.shape[0]`` entries.
    Only metadata is inspected, so this is safe inside sampling loops (no device synchronisation).

    Shapes
    ------
    sigma: ``[]`` or ``[N]``; x: ``[N, ...]``; returns ``[N]``.
    """
    if x.ndim == 0:
        raise ShapeError("x must have a leading row dimension, got a 0-d tensor")
    if not isinstance(sigma, Tensor):
        if isinstance(sigma, bool) or not isinstance(sigma, (float, int)):
            raise DTypeError(f"{name} must be a float or a tensor, got {type(sigma).__name__}")
        return x.new_full((x.shape[0],), float(sigma))
    if not sigma.is_floating_point():
        raise DTypeError(f"{name} must be a floating-point tensor, got dtype {sigma.dtype}")
    if sigma.ndim == 0:
        return sigma.to(dtype=x.dtype, device=x.device).expand(x.shape[0])
    if sigma.ndim != 1 or sigma.shape[0] != x.shape[0]:
        raise ShapeError(
            f"{name} must hold one noise level per row of x: expected shape [{x.shape[0]}], "
            f"got {list(sigma.shape)}"
        )
    return sigma.to(dtype=x.dtype, device=x.device)


def check_positive(sigma: Union[Tensor, Scalar], name: str = "sigma") -> None:
    """Raise :class:`NoiseLevelError` unless every entry of ``sigma`` is finite and > 0.

    Synchronises with the device: call it at entry points, not inside per-step loops.
    """
    s = torch.as_tensor(sigma)
    if s.numel() == 0:
        return
    if not bool(torch.isfinite(s).all()):
        raise NoiseLevelError(f"{name} must be finite, got non-finite values")
    if not bool((s > 0).all()):
        raise NoiseLevelError(f"{name} must be > 0, got min {float(s.min())}")


def check_batch_index(batch: Tensor, num_rows: int | None = None, name: str = "batch") -> Tensor:
    """Validate a PyG-style graph index vector (1-d, integer, non-negative, sorted); return it.

    Synchronises with the device (value checks): meant for constructors such as ``CenteredSpace``.

    Shapes
    ------
    batch: ``[N]`` with ``N == num_rows`` when given.
    """
    if not isinstance(batch, Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.dtype not in (torch.int64, torch.int32):
        raise DTypeError(f"{name} must be an integer (long) tensor, got dtype {batch.dtype}")
    if batch.ndim != 1:
        raise ShapeError(f"{name} must be 1-d [num_nodes], got shape {list(batch.shape)}")
    if num_rows is not None and batch.shape[0] != num_rows:
        raise ShapeError(f"{name} has {batch.shape[0]} entries but x has {num_rows} rows")
    if batch.numel() > 0:
        if bool((batch < 0).any()):
            raise ValueError(f"{name} must be non-negative graph indices")
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(f"{name} must be sorted (PyG convention: nodes of a graph are contiguous)")
    return batch


def check_same_rows(x: Tensor, num_rows: int, what: str) -> None:
    """Raise :class:`ShapeError` unless ``x.shape[0] == num_rows`` (``what`` names the owner)."""
    if x.ndim == 0 or x.shape[0] != num_rows:
        got = "a 0-d tensor" if x.ndim == 0 else f"{x.shape[0]} rows"
        raise ShapeError(f"{what} expects x with {num_rows} rows, got {got}")
