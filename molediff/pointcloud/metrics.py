"""Distances between point clouds and set-level generation metrics (Yang et al. 2019, PointFlow).

Cloud distances
---------------
- Chamfer distance, ``squared=True`` (the PointFlow convention)::

      CD(X, Y) = 1/|X| sum_x min_y ||x - y||^2 + 1/|Y| sum_y min_x ||x - y||^2

  and with ``squared=False`` the same sum of means with plain Euclidean distances ``||x - y||``.
- Earth mover's distance for equal-size clouds, solved *exactly* as an assignment problem
  (:func:`scipy.optimize.linear_sum_assignment`)::

      EMD(X, Y) = min over bijections phi: X -> Y of 1/|X| sum_x ||x - phi(x)||

  (``squared=True`` uses ``||x - phi(x)||^2``). Cost is cubic in the number of points, so
  clouds above ``max_points`` are refused instead of silently approximated.

Set metrics, for a generated set ``S_g`` and a reference set ``S_r`` and a cloud distance ``D``
------------------------------------------------------------------------------------------------
- ``MMD(S_g, S_r) = 1/|S_r| sum_{Y in S_r} min_{X in S_g} D(X, Y)`` (lower is better).
- ``COV(S_g, S_r) = |{argmin_{Y in S_r} D(X, Y) : X in S_g}| / |S_r|``, a fraction in [0, 1]
  (higher is better; ties in the argmin go to the lowest reference index).
- ``1-NNA(S_g, S_r)``: leave-one-out accuracy of the 1-nearest-neighbour classifier on
  ``S_g ∪ S_r`` labelled by set, ``(sum_{X in S_g} 1[N_X in S_g] + sum_{Y in S_r} 1[N_Y in S_r])
  / (|S_g| + |S_r|)``, a fraction in [0, 1]; 0.5 is ideal, 1.0 means the sets are perfectly
  separable. **Ties**: a cloud counts as correctly classified only if its nearest same-set
  neighbour is *strictly* closer than its nearest other-set neighbour, so exact copies of the
  reference give 0.0 (the memorisation signature), never a flattering 0.5.

No normalisation is applied here: clouds are compared in the units given (PointFlow tables
report MMD-CD x 10^3 and MMD-EMD x 10^2 on shapes normalised to the data set's scale).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "EMDSizeError",
    "chamfer_distance",
    "coverage",
    "earth_movers_distance",
    "minimum_matching_distance",
    "one_nn_accuracy",
    "pairwise_chamfer",
    "pairwise_emd",
    "point_cloud_metrics",
]

#: Largest cloud for which :func:`earth_movers_distance` solves the exact assignment by default.
EMD_MAX_POINTS = 2048


class EMDSizeError(ValueError):
    """Exact EMD requested for clouds of different sizes or beyond the size limit."""


def _as_batch(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be [N, 3] or [B, N, 3], got {list(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has no points")
    return t


def _nearest_sq(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance from each point to its nearest neighbour in the other cloud, all pairs.

    Each pair is first moved so that ``x``'s centroid is at the origin: distances do not change, but
    ``|x|^2 + |y|^2 - 2 x.y`` cancels catastrophically in float32 for clouds far from the origin.

    Shapes: ``x: [a, N, 3]``, ``y: [b, M, 3]`` -> ``([a, b, N], [a, b, M])``.
    """
    centre = x.mean(dim=1)  # [a, 3]
    x = x - centre[:, None, :]  # [a, N, 3]
    y = y[None] - centre[:, None, None, :]  # [a, b, M, 3]
    xx = (x * x).sum(-1)  # [a, N]
    yy = (y * y).sum(-1)  # [a, b, M]
    cross = torch.einsum("anc,abmc->abnm", x, y)
    d = (xx[:, None, :, None] + yy[:, :, None, :] - 2.0 * cross).clamp_min_(0.0)
    return d.amin(dim=3), d.amin(dim=2)


def pairwise_chamfer(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    squared: bool = True,
    max_elements: int = 2**24,
) -> torch.Tensor:
    """Chamfer distance between every cloud of ``x`` and every cloud of ``y`` (see module doc).

    Parameters
    ----------
    x, y
        Point clouds; the number of points may differ between ``x`` and ``y``.
    squared
        Squared Euclidean point distances (PointFlow) or plain Euclidean ones.
    max_elements
        Bound on the size of one ``[a, b, N, M]`` block of point distances (memory control).

    Shapes
    ------
    ``x: [A, N, 3]``, ``y: [B, M, 3]`` -> ``[A, B]``.
    """
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(device=x.device, dtype=dtype)
    per_pair = x.shape[1] * y.shape[1]
    b_chunk = max(1, min(y.shape[0], max_elements // per_pair))
    a_chunk = max(1, max_elements // (per_pair * b_chunk))
    out = torch.empty(x.shape[0], y.shape[0], dtype=dtype, device=x.device)
    for i in range(0, x.shape[0], a_chunk):
        for j in range(0, y.shape[0], b_chunk):
            dx, dy = _nearest_sq(x[i : i + a_chunk], y[j : j + b_chunk])
            if not squared:
                dx, dy = dx.sqrt(), dy.sqrt()
            out[i : i + a_chunk, j : j + b_chunk] = dx.mean(-1) + dy.mean(-1)
    return out


def chamfer_distance(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, squared: bool = True
) -> torch.Tensor:
    """Chamfer distance between paired clouds ``x[i]`` and ``y[i]`` (see module doc).

    Shapes
    ------
    ``x: [B, N, 3]``, ``y: [B, M, 3]`` -> ``[B]``; unbatched ``[N, 3]``, ``[M, 3]`` -> scalar.
    """
    unbatched = torch.as_tensor(x).ndim == 2
    xb, yb = _as_batch(x, "x"), _as_batch(y, "y")
    if xb.shape[0] != yb.shape[0]:
        raise ValueError(f"paired Chamfer needs equal batch sizes, got {xb.shape[0]} and {yb.shape[0]}")
    out = torch.stack([pairwise_chamfer(a[None], b[None], squared=squared)[0, 0] for a, b in zip(xb, yb)])
    return out[0] if unbatched else out


def _emd_pair(a: np.ndarray, b: np.ndarray, squared: bool) -> float:
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    if not squared:
        cost = np.sqrt(cost)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def _check_emd_sizes(n: int, m: int, max_points: int) -> None:
    if n != m:
        raise EMDSizeError(f"exact EMD needs clouds of equal size, got {n} and {m} points")
    if n > max_points:
        raise EMDSizeError(
            f"exact EMD on {n} points exceeds max_points={max_points} (cubic cost); "
            "subsample the clouds or raise max_points"
        )


def earth_movers_distance(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    squared: bool = False,
    max_points: int = EMD_MAX_POINTS,
) -> torch.Tensor:
    """Exact earth mover's distance between paired equal-size clouds (see module doc).

    Raises
    ------
    EMDSizeError
        If the clouds differ in size or have more than ``max_points`` points.

    Shapes
    ------
    ``x, y: [B, N, 3]`` -> ``[B]`` (float64); unbatched ``[N, 3]`` -> scalar.
    """
    unbatched = torch.as_tensor(x).ndim == 2
    xb, yb = _as_batch(x, "x"), _as_batch(y, "y")
    if xb.shape[0] != yb.shape[0]:
        raise ValueError(f"paired EMD needs equal batch sizes, got {xb.shape[0]} and {yb.shape[0]}")
    _check_emd_sizes(xb.shape[1], yb.shape[1], max_points)
    xn, yn = xb.detach().cpu().double().numpy(), yb.detach().cpu().double().numpy()
    out = torch.tensor([_emd_pair(a, b, squared) for a, b in zip(xn, yn)], dtype=torch.float64)
    return out[0] if unbatched else out


def pairwise_emd(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    squared: bool = False,
    max_points: int = EMD_MAX_POINTS,
) -> torch.Tensor:
    """Exact EMD between every cloud of ``x`` and every cloud of ``y`` (``A * B`` assignments).

    Shapes
    ------
    ``x: [A, N, 3]``, ``y: [B, N, 3]`` -> ``[A, B]`` (float64).
    """
    xb, yb = _as_batch(x, "x"), _as_batch(y, "y")
    _check_emd_sizes(xb.shape[1], yb.shape[1], max_points)
    xn, yn = xb.detach().cpu().double().numpy(), yb.detach().cpu().double().numpy()
    out = np.array([[_emd_pair(a, b, squared) for b in yn] for a in xn], dtype=np.float64)
    return torch.from_numpy(out.reshape(len(xn), len(yn)))


def minimum_matching_distance(d_gen_ref: torch.Tensor) -> float:
    """MMD: mean over reference clouds of the distance to the closest generated cloud.

    Shapes
    ------
    ``d_gen_ref: [G, R]`` (``D(generated_i, reference_j)``) -> float.
    """
    _check_cross(d_gen_ref)
    return float(d_gen_ref.amin(dim=0).double().mean())


def coverage(d_gen_ref: torch.Tensor) -> float:
    """COV: fraction of reference clouds that are the nearest reference of some generated cloud.

    Shapes
    ------
    ``d_gen_ref: [G, R]`` -> float in [0, 1].
    """
    _check_cross(d_gen_ref)
    matched = torch.unique(d_gen_ref.argmin(dim=1))
    return matched.numel() / d_gen_ref.shape[1]


def one_nn_accuracy(d_gen_gen: torch.Tensor, d_gen_ref: torch.Tensor, d_ref_ref: torch.Tensor) -> float:
    """1-NNA: leave-one-out 1-nearest-neighbour accuracy of telling generated from reference.

    A cloud is correct only if its nearest *same-set* neighbour is strictly closer than its
    nearest *other-set* neighbour (ties count as errors; see module doc).

    Shapes
    ------
    ``d_gen_gen: [G, G]``, ``d_gen_ref: [G, R]``, ``d_ref_ref: [R, R]`` -> float in [0, 1].
    """
    g, r = d_gen_ref.shape
    if d_gen_gen.shape != (g, g) or d_ref_ref.shape != (r, r):
        raise ValueError(
            f"inconsistent shapes {list(d_gen_gen.shape)}, {list(d_gen_ref.shape)}, {list(d_ref_ref.shape)}"
        )
    if g < 2 or r < 2:
        raise ValueError(f"1-NNA needs at least 2 clouds per set, got {g} generated and {r} reference")
    inf_g = torch.full((g,), float("inf"), dtype=d_gen_gen.dtype, device=d_gen_gen.device)
    inf_r = torch.full((r,), float("inf"), dtype=d_ref_ref.dtype, device=d_ref_ref.device)
    same_g = (d_gen_gen + torch.diag(inf_g)).amin(dim=1)
    same_r = (d_ref_ref + torch.diag(inf_r)).amin(dim=1)
    correct = (same_g < d_gen_ref.amin(dim=1)).sum() + (same_r < d_gen_ref.amin(dim=0)).sum()
    return float(correct) / (g + r)


def _check_cross(d: torch.Tensor) -> None:
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"expected a non-empty [G, R] distance matrix, got {list(d.shape)}")


def point_cloud_metrics(
    generated: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray,
    *,
    distances: Iterable[str] = ("cd",),
    max_points: int = EMD_MAX_POINTS,
) -> dict[str, float]:
    """MMD, COV and 1-NNA of a generated set against a reference set.

    Parameters
    ----------
    generated, reference
        Sets of clouds (may differ in count; must have equal point counts for ``"emd"``).
    distances
        Any of ``"cd"`` (squared Chamfer) and ``"emd"`` (exact, Euclidean, slow).

    Shapes
    ------
    ``generated: [G, N, 3]``, ``reference: [R, N, 3]`` -> dict with keys ``"MMD-CD"``,
    ``"COV-CD"``, ``"1-NNA-CD"`` (and the ``-EMD`` versions), fractions in [0, 1].
    """
    gen, ref = _as_batch(generated, "generated"), _as_batch(reference, "reference")
    out: dict[str, float] = {}
    for name in distances:
        if name == "cd":
            fn = pairwise_chamfer
        elif name == "emd":
            def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return pairwise_emd(a, b, max_points=max_points)
        else:
            raise ValueError(f"unknown distance {name!r}; use 'cd' or 'emd'")
        d_gr = fn(gen, ref)
        tag = name.upper()
        out[f"MMD-{tag}"] = minimum_matching_distance(d_gr)
        out[f"COV-{tag}"] = coverage(d_gr)
        out[f"1-NNA-{tag}"] = one_nn_accuracy(fn(gen, gen), d_gr, fn(ref, ref))
    return out
