"""Two-dimensional toy distributions for testing and demonstrating the diffusion core.

Every sampler is a pure function of ``(n, seed)``: the same arguments give the same points on any
machine (numpy ``Generator`` / scikit-learn ``random_state``), never touching global RNG state.
Each set is mapped by a *fixed* affine transform (not estimated from the sample) to roughly zero
mean and unit per-coordinate scale, so train and held-out draws share one normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["TOY2D_DATASETS", "sample_toy2d", "checkerboard", "two_moons", "eight_gaussians", "swiss_roll"]


def _to_tensor(points: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(points), dtype=dtype)


def checkerboard(n: int, seed: int = 0, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform density on the black squares of a 4×4 checkerboard over ``[-2, 2]²``, scaled by 1/√(4/3)
    (so each coordinate has unit variance).

    Shapes
    ------
    - output: ``[n, 2]``
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2.0, 2.0, size=n)
    offset = rng.integers(0, 2, size=n) * 2.0  # pick one of the two squares in the column pair
    x2 = rng.uniform(0.0, 1.0, size=n) - 2.0 + offset + (np.floor(x1) % 2)
    points = np.stack([x1, x2], axis=1) / np.sqrt(4.0 / 3.0)
    return _to_tensor(points, dtype)


def two_moons(n: int, seed: int = 0, *, noise: float = 0.05, dtype: torch.dtype = torch.float32) -> Tensor:
    """scikit-learn's interleaving half circles (``make_moons``), centred and scaled to unit-ish size.

    Shapes
    ------
    - output: ``[n, 2]``
    """
    _check_n(n)
    from sklearn.datasets import make_moons

    points, _ = make_moons(n_samples=n, noise=noise, random_state=seed)
    # Fixed transform: the noiseless moons have mean (0.5, 0.25) and std ≈ (0.87, 0.50).
    points = (points - np.array([0.5, 0.25])) / np.array([0.87, 0.50])
    return _to_tensor(points, dtype)


def eight_gaussians(n: int, seed: int = 0, *, std: float = 0.1, dtype: torch.dtype = torch.float32) -> Tensor:
    """Equal mixture of 8 isotropic Gaussians (standard deviation ``std`` before scaling) centred on
    the unit circle at angles ``k·π/4``, scaled by 1/√(1/2 + std²) to unit variance per coordinate.

    Shapes
    ------
    - output: ``[n, 2]``
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, size=n) * (np.pi / 4.0)
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = (centres + std * rng.standard_normal((n, 2))) / np.sqrt(0.5 + std**2)
    return _to_tensor(points, dtype)


def swiss_roll(n: int, seed: int = 0, *, noise: float = 0.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """scikit-learn's swiss roll projected on its (x, z) plane, shifted by −(2, 0.25) and scaled by 1/6.6.

    Shapes
    ------
    - output: ``[n, 2]``
    """
    _check_n(n)
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n_samples=n, noise=noise, random_state=seed)
    return _to_tensor((points[:, [0, 2]] - np.array([2.0, 0.25])) / 6.6, dtype)


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of points must be a positive integer, got {n!r}")


TOY2D_DATASETS: dict[str, Callable[..., Tensor]] = {
    "checkerboard": checkerboard,
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "swissroll": swiss_roll,
}
"""Registry of toy sets by name (as accepted by :func:`sample_toy2d` and ``examples/toy2d.py``)."""


def sample_toy2d(name: str, n: int, seed: int = 0, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw ``n`` points from the toy set ``name`` (a key of :data:`TOY2D_DATASETS`).

    Parameters
    ----------
    name : str
        ``"checkerboard"``, ``"moons"``, ``"8gaussians"`` or ``"swissroll"``.
    n : int
        Number of points.
    seed : int
        Seed; equal seeds give identical points, different seeds independent draws.
    dtype : torch.dtype
        Floating dtype of the result.

    Shapes
    ------
    - output: ``[n, 2]``
    """
    try:
        fn = TOY2D_DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown toy data set {name!r}; choose from {sorted(TOY2D_DATASETS)}") from None
    return fn(n, seed, dtype=dtype)
