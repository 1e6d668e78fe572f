"""Probability-flow ODE as a bijection: log-likelihood, encode / decode, latent interpolation.

In σ-form the PF-ODE is ``dx/dσ = v(x, σ) = (x - D(x, σ)) / σ`` (Karras et al. 2022). The instantaneous
change of variables (Chen et al. 2018; Song et al. 2021, App. D.2) gives

``log p_{σ_min}(x) = log π_{σ_max}(x(σ_max)) + ∫_{σ_min}^{σ_max} div v(x(σ), σ) dσ``

with the prior ``π = N(0, σ_max² I)`` restricted to the space (``space.log_prior``; its dimension is
``space.dof``). The divergence is exact (one backward pass per coordinate; small ``d``, rows = samples) or the
Hutchinson estimate ``zᵀ (∂v/∂x) z`` with a fixed seeded probe (Rademacher or Gaussian) per solve
(Grathwohl et al. 2019). Integration uses torchdiffeq (adaptive ``dopri5`` by default) or fixed-step Heun on a
geometric σ grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .ode import odeint_checked
from .spaces import EuclideanSpace, Space
from .utils import check_floating, check_positive, flat_rows

__all__ = ["LikelihoodResult", "log_likelihood", "encode", "decode", "slerp", "lerp"]


@dataclass
class LikelihoodResult:
    """Output of :func:`log_likelihood` (per-sample tensors, ``[num_samples]``)."""

    log_prob: Tensor  #: log p(x) in nats
    bits_per_dim: Tensor  #: -log p(x) / (dof · ln 2)
    prior_log_prob: Tensor  #: log π(x(σ_max))
    delta_log_prob: Tensor  #: ∫ div v dσ
    latent: Tensor  #: x(σ_max), shaped like x
    nfe: int  #: number of ODE right-hand-side evaluations


def _velocity(denoiser: Callable, space: Space, cond: dict) -> Callable[[Tensor, Tensor], Tensor]:
    def v(s: Tensor, x: Tensor) -> Tensor:
        s = s.to(x.dtype)
        return (x - space.project(denoiser(x, s.expand(x.shape[0]), **cond))) / s

    return v


# torchdiffeq's fixed-step methods take one step per pair of output times: they need the whole grid
_FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")


def _integrate(f, state, s0: float, s1: float, method: str, num_steps: int, rtol: float, atol: float, ref: Tensor):
    """Integrate ``d state/dσ = f(σ, state)`` from ``s0`` to ``s1`` (tuples of tensors allowed)."""
    if ref.numel() == 0:  # an empty batch: nothing moves (dopri5 would underflow on an empty error norm)
        return state
    grid = torch.logspace(math.log10(s0), math.log10(s1), num_steps + 1, dtype=torch.float64)
    if method == "heun":
        grid = grid.tolist()
        for a, b in zip(grid[:-1], grid[1:]):
            ta, tb = ref.new_tensor(a), ref.new_tensor(b)
            k1 = f(ta, state)
            pred = tuple(y + (b - a) * k for y, k in zip(state, k1))
            k2 = f(tb, pred)
            state = tuple(y + (b - a) * 0.5 * (p + q) for y, p, q in zip(state, k1, k2))
        return state
    span = grid if method in _FIXED_GRID_METHODS else torch.tensor([s0, s1], dtype=torch.float64)
    span = span.to(dtype=ref.dtype, device=ref.device)
    return tuple(y[-1] for y in odeint_checked(f, state, span, rtol=rtol, atol=atol, method=method))


def _check_on_space(space: Space, x: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming the samples of ``x`` (graphs of a graph space) that lie off ``space``.

    The PF-ODE bijection and its density live on the space (e.g. the zero-CoM subspace of every graph); a point
    off it has no likelihood, and the ODE would carry its off-space part along unchecked. Round-off is allowed:
    an entry may move by up to ``1e-4 (1 + max|x|)`` under ``space.project``.
    """
    with torch.no_grad():
        off = (x - space.project(x)).abs()
        tol = 1e-4 * (1 + float(x.abs().max())) if x.numel() else 0.0
        flagged = space.sum_per_sample((off > tol).to(x.dtype)) > 0
        if bool(flagged.any()):
            bad = flagged.nonzero().flatten().tolist()
            raise ValueError(
                f"{name} is off the support of {space!r}: sample(s) {bad} (graphs, for a graph space) move by up to "
                f"{float(off.max()):.3g} under space.project (tolerance {tol:.3g}), e.g. a centre of mass not at 0; "
                f"the PF-ODE density is only defined on the space: pass space.project({name})"
            )


def _check_range(sigma_min: float, sigma_max: float) -> None:
    check_positive(torch.tensor([sigma_min, sigma_max]), "sigma_min/sigma_max")
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min}, {sigma_max}")


def log_likelihood(
    denoiser: Callable, x: Tensor, *, space: Optional[Space] = None, sigma_min: float = 1e-3,
    sigma_max: float = 80.0, divergence: str = "exact", probe: str = "rademacher",
    generator: Optional[torch.Generator] = None, num_probes: int = 1, method: str = "dopri5",
    num_steps: int = 128, rtol: float = 1e-5, atol: float = 1e-5, **cond,
) -> LikelihoodResult:
    """Log-likelihood of ``x`` (taken at noise level ``sigma_min``) through the PF-ODE.

    Parameters
    ----------
    divergence : {"exact", "hutchinson"}
        Exact needs rows to be samples (EuclideanSpace); Hutchinson works in any space.
    probe : {"rademacher", "gaussian"}
        Hutchinson probe distribution (projected onto the space), drawn once with ``generator``.
    num_probes : int
        Hutchinson probes averaged per evaluation (variance falls as ``1/num_probes``).
    method : str
        A torchdiffeq method (``"dopri5"``, ``"rk4"``, ...) or ``"heun"``; fixed-step methods take ``num_steps``
        steps on a geometric σ grid.

    Raises
    ------
    ValueError
        If ``x`` is off the space (e.g. a graph whose centre of mass is not at 0 in a ``CenteredSpace``): the
        density is only defined on the space; the message names the samples (graphs).

    Shapes
    ------
    x: ``[N, ...]``; every tensor of the result is ``[num_samples]`` except ``latent`` (``[N, ...]``).
    """
    check_floating(x, "x")
    _check_range(sigma_min, sigma_max)
    space = space or EuclideanSpace()
    _check_on_space(space, x, "x")
    v = _velocity(denoiser, space, cond)
    nfe = 0
    if divergence == "exact":
        if not isinstance(space, EuclideanSpace):
            raise ValueError("exact divergence needs rows to be samples (EuclideanSpace); use 'hutchinson'")
        z = None
    elif divergence == "hutchinson":
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        shape = (num_probes, *x.shape)
        if probe == "rademacher":
            z = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        elif probe == "gaussian":
            z = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        z = torch.stack([space.project(zk) for zk in z])
    else:
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")

    def augmented(s: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            xr = state[0].detach().requires_grad_(True)
            out = v(s, xr)
            if z is None:
                flat = flat_rows(out)
                div = torch.zeros_like(flat[:, 0])
                for j in range(flat.shape[1]):
                    g = torch.autograd.grad(flat[:, j].sum(), xr, retain_graph=True)[0]
                    div = div + g.reshape(g.shape[0], -1)[:, j]
            else:
                div = 0
                for k, zk in enumerate(z):
                    g = torch.autograd.grad((out * zk).sum(), xr, retain_graph=k + 1 < len(z))[0]
                    div = div + space.sum_per_sample(g * zk) / len(z)
        return out.detach(), div.detach()

    delta0 = x.new_zeros(space.num_samples(x))
    latent, delta = _integrate(augmented, (x, delta0), sigma_min, sigma_max, method, num_steps, rtol, atol, x)
    prior = space.log_prior(latent, sigma_max)
    log_prob = prior + delta
    bpd = -log_prob / (space.dof(x).clamp_min(1) * math.log(2))
    return LikelihoodResult(log_prob, bpd, prior, delta, latent, nfe)


@torch.no_grad()
def encode(
    denoiser: Callable, x: Tensor, *, space: Optional[Space] = None, sigma_min: float = 1e-3,
    sigma_max: float = 80.0, method: str = "dopri5", num_steps: int = 128, rtol: float = 1e-5,
    atol: float = 1e-5, **cond,
) -> Tensor:
    """Data → latent: solve the PF-ODE from ``sigma_min`` up to ``sigma_max``. Shapes: ``[N, ...] -> [N, ...]``.

    ``x`` must lie on ``space`` (ValueError naming the off-space samples otherwise, as in :func:`log_likelihood`).
    """
    check_floating(x, "x")
    _check_range(sigma_min, sigma_max)
    space = space or EuclideanSpace()
    _check_on_space(space, x, "x")
    v = _velocity(denoiser, space, cond)
    return _integrate(lambda s, st: (v(s, st[0]),), (x,), sigma_min, sigma_max, method, num_steps, rtol, atol, x)[0]


@torch.no_grad()
def decode(
    denoiser: Callable, z: Tensor, *, space: Optional[Space] = None, sigma_min: float = 1e-3,
    sigma_max: float = 80.0, method: str = "dopri5", num_steps: int = 128, rtol: float = 1e-5,
    atol: float = 1e-5, **cond,
) -> Tensor:
    """Latent → data: solve the PF-ODE from ``sigma_max`` down to ``sigma_min`` (inverse of :func:`encode`).

    ``z`` must lie on ``space`` (ValueError naming the off-space samples otherwise). Shapes: ``[N, ...]``.
    """
    check_floating(z, "z")
    _check_range(sigma_min, sigma_max)
    space = space or EuclideanSpace()
    _check_on_space(space, z, "z")
    v = _velocity(denoiser, space, cond)
    return _integrate(lambda s, st: (v(s, st[0]),), (z,), sigma_max, sigma_min, method, num_steps, rtol, atol, z)[0]


def lerp(z0: Tensor, z1: Tensor, t: float) -> Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``."""
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: float, space: Optional[Space] = None) -> Tensor:
    """Spherical interpolation per sample (norms and angles over each sample's rows), shapes ``[N, ...]``."""
    space = space or EuclideanSpace()
    dot = space.sum_per_sample(z0 * z1)
    n0, n1 = space.sum_per_sample(z0.square()).sqrt(), space.sum_per_sample(z1.square()).sqrt()
    omega = torch.arccos((dot / (n0 * n1).clamp_min(1e-30)).clamp(-1, 1))
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    a = torch.where(safe, torch.sin((1 - t) * omega) / so.where(safe, torch.ones_like(so)), torch.full_like(so, 1 - t))
    b = torch.where(safe, torch.sin(t * omega) / so.where(safe, torch.ones_like(so)), torch.full_like(so, t))
    shape = (-1, *([1] * (z0.ndim - 1)))
    return space.per_row(a).reshape(shape) * z0 + space.per_row(b).reshape(shape) * z1
