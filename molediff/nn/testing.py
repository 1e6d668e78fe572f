"""Reusable property checks for score networks: rotations, reflections, translations, permutations.

Each ``assert_*`` function raises :class:`EquivarianceError` (an ``AssertionError``) with the measured error and
the tolerance. Errors are *relative*: ``max|a - b| / max|b|`` over all nodes and components. The default tolerance
is ``1e-5`` for float32 and ``1e-10`` for float64 (:func:`default_rtol`).

``net_fn`` arguments are functions of the positions only, ``x: [N, 3] -> [N, 3]``; close over the other inputs,
e.g. ``lambda x: net(x, c_noise, batch=batch)``. :func:`assert_permutation_equivariant` takes the network itself,
because it has to permute every node and edge input consistently.

Example
-------
>>> net = EGNN(knn=8)  # doctest: +SKIP
>>> assert_equivariant_vector_field(lambda x: net(x, c, batch=batch), x)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "EquivarianceError",
    "assert_e3nn_equivariant",
    "assert_equivariant_vector_field",
    "assert_permutation_equivariant",
    "assert_reflection_equivariant",
    "assert_translation_invariant",
    "default_rtol",
    "random_improper_rotation",
    "random_rotation",
    "relative_error",
]

VectorField = Callable[[Tensor], Tensor]


class EquivarianceError(AssertionError):
    """A network failed a symmetry property check."""


def default_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance for a dtype: 1e-10 for float64, 1e-5 otherwise (float32)."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def relative_error(a: Tensor, b: Tensor) -> float:
    """``max|a - b| / max|b|`` (with a tiny floor on the denominator)."""
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    return diff / max(scale, torch.finfo(b.dtype).tiny)


def random_rotation(
    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """A Haar-random proper rotation matrix (det +1), from the QR decomposition of a Gaussian matrix.

    Shapes
    ------
    -> ``[3, 3]``; apply to row vectors as ``x @ R.T``.
    """
    g = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype=dtype, device=device)


def random_improper_rotation(
    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """A random orthogonal matrix with det -1 (a rotation composed with a mirror plane).

    Shapes
    ------
    -> ``[3, 3]``.
    """
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    return (random_rotation(generator, torch.float64) @ mirror).to(dtype=dtype, device=device)


def _matrices(
    rotations: int | Tensor, improper: bool, generator: torch.Generator | None, x: Tensor
) -> Tensor:
    if isinstance(rotations, Tensor):
        mats = rotations.reshape(-1, 3, 3)
    else:
        draw = random_improper_rotation if improper else random_rotation
        mats = torch.stack([draw(generator) for _ in range(int(rotations))])
    return mats.to(dtype=x.dtype, device=x.device)


def assert_equivariant_vector_field(
    net_fn: VectorField,
    x: Tensor,
    *,
    rotations: int | Tensor = 3,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> float:
    """Assert ``f(x R^T) = f(x) R^T`` for random (or given) rotations ``R``.

    Parameters
    ----------
    net_fn : callable
        ``x: [N, 3] -> [N, 3]``.
    x : Tensor
        Positions ``[N, 3]``.
    rotations : int or Tensor
        Number of random proper rotations, or explicit matrices ``[K, 3, 3]`` (improper ones allowed).
    generator : torch.Generator, optional
        Source of the random rotations.
    rtol : float, optional
        Relative tolerance; :func:`default_rtol` of ``x.dtype`` by default.

    Returns
    -------
    float
        The largest relative error observed.
    """
    rtol = default_rtol(x.dtype) if rtol is None else rtol
    y = net_fn(x)
    worst = 0.0
    for rot in _matrices(rotations, False, generator, x):
        err = relative_error(net_fn(x @ rot.T), y @ rot.T)
        worst = max(worst, err)
        if not err <= rtol:
            raise EquivarianceError(
                f"not rotation-equivariant: relative error {err:.3e} > rtol {rtol:.1e} (det R = {torch.det(rot):+.0f})"
            )
    return worst


def assert_reflection_equivariant(
    net_fn: VectorField,
    x: Tensor,
    *,
    expect: bool = True,
    rotations: int = 3,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
    margin: float = 1e-2,
) -> float:
    """Assert that ``f`` is (``expect=True``) or is clearly not (``expect=False``) equivariant under reflections.

    With ``expect=False`` (a chirality-aware, SE(3)-only network) *every* random improper rotation ``Q`` must give
    ``relative_error(f(x Q^T), f(x) Q^T) > margin``.

    Returns
    -------
    float
        The largest (``expect=True``) or smallest (``expect=False``) relative error observed.
    """
    mats = _matrices(rotations, True, generator, x)
    if expect:
        return assert_equivariant_vector_field(net_fn, x, rotations=mats, rtol=rtol)
    y = net_fn(x)
    smallest = float("inf")
    for rot in mats:
        err = relative_error(net_fn(x @ rot.T), y @ rot.T)
        smallest = min(smallest, err)
        if not err > margin:
            raise EquivarianceError(
                f"expected a reflection-sensitive (chiral) network, but the mirrored output matches the mirrored "
                f"input's output: relative difference {err:.3e} <= margin {margin:.1e}"
            )
    return smallest


def assert_translation_invariant(
    net_fn: VectorField,
    x: Tensor,
    *,
    batch: Tensor | None = None,
    trials: int = 3,
    scale: float = 3.0,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> float:
    """Assert ``f(x + t) = f(x)``, with an independent random shift ``t`` per graph when ``batch`` is given.

    Returns
    -------
    float
        The largest relative error observed.
    """
    rtol = default_rtol(x.dtype) if rtol is None else rtol
    y = net_fn(x)
    num_graphs = int(batch.max()) + 1 if batch is not None and batch.numel() else 1
    worst = 0.0
    for _ in range(trials):
        shift = scale * torch.randn(num_graphs, 3, generator=generator, dtype=torch.float64)
        shift = shift.to(dtype=x.dtype, device=x.device)
        t = shift[batch] if batch is not None else shift[0].expand_as(x)
        err = relative_error(net_fn(x + t), y)
        worst = max(worst, err)
        if not err <= rtol:
            raise EquivarianceError(f"not translation-invariant: relative error {err:.3e} > rtol {rtol:.1e}")
    return worst


def _within_graph_permutation(batch: Tensor, generator: torch.Generator | None) -> Tensor:
    keys = batch.to(torch.float64).cpu() + torch.rand(batch.shape[0], generator=generator, dtype=torch.float64) * 0.5
    return torch.argsort(keys).to(batch.device)


def assert_permutation_equivariant(
    net: Callable[..., Tensor],
    x: Tensor,
    c_noise: Tensor,
    *,
    node_attr: Tensor | None = None,
    batch: Tensor | None = None,
    edge_index: Tensor | None = None,
    edge_attr: Tensor | None = None,
    perm: Tensor | None = None,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> float:
    """Assert ``net(P x, ...)[i] = net(x, ...)[perm[i]]`` for a node permutation (relabelling edges accordingly).

    ``net`` has the molediff score-network signature; ``c_noise`` is ``[N]`` or a scalar (broadcast). By default
    ``perm`` is random and only shuffles nodes within each graph, so that ``batch`` stays sorted; edges are
    relabelled and shuffled too.

    Returns
    -------
    float
        The relative error.
    """
    rtol = default_rtol(x.dtype) if rtol is None else rtol
    n = x.shape[0]
    b = batch if batch is not None else torch.zeros(n, dtype=torch.long, device=x.device)
    if perm is None:
        perm = _within_graph_permutation(b, generator)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n, device=perm.device)
    y = net(x, c_noise, node_attr=node_attr, batch=batch, edge_index=edge_index, edge_attr=edge_attr)
    new_index, new_attr = None, None
    if edge_index is not None:
        order = torch.randperm(edge_index.shape[1], generator=generator).to(edge_index.device)
        new_index = inverse[edge_index][:, order]
        new_attr = edge_attr[order] if edge_attr is not None else None
    y_perm = net(
        x[perm], c_noise[perm] if c_noise.ndim else c_noise, node_attr=node_attr[perm] if node_attr is not None else None,
        batch=batch[perm] if batch is not None else None, edge_index=new_index, edge_attr=new_attr,
    )  # fmt: skip
    err = relative_error(y_perm, y[perm])
    if not err <= rtol:
        raise EquivarianceError(f"not permutation-equivariant: relative error {err:.3e} > rtol {rtol:.1e}")
    return err


def assert_e3nn_equivariant(net_fn: VectorField, x: Tensor, *, parity: bool = False, tolerance: float | None = None) -> dict:
    """Check ``net_fn`` with :func:`e3nn.util.test.assert_equivariant`: input ``'cartesian_points'``, output ``1o``.

    ``parity=False`` tests proper rotations and translations only (SE(3)); ``parity=True`` adds inversion (E(3)).
    The tolerance is absolute, as in e3nn (default: ``default_rtol(x.dtype)`` times ``max|net_fn(x)|``).
    """
    from e3nn.util.test import assert_equivariant

    if tolerance is None:
        tolerance = default_rtol(x.dtype) * max(net_fn(x).abs().max().item(), 1.0)
    # e3nn builds its Wigner D matrices in the default dtype; use float64 so the check itself is exact enough
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return assert_equivariant(
            net_fn, args_in=[x], irreps_in=["cartesian_points"], irreps_out=["1o"], tolerance=tolerance,
            do_parity=parity, ntrials=3,
        )  # fmt: skip
    finally:
        torch.set_default_dtype(old)
