"""Training losses: denoising score matching with weightings, and conditional flow matching.

Denoising score matching (Vincent 2011) is written on the denoiser: with ``x = x0 + σ n`` (``n`` drawn by the
space) the loss is ``λ(σ) ‖D(x, σ) - x0‖² / dof``, per sample. Its minimiser is ``D = E[x0 | x]``, i.e. the
score ``∇log p_σ = (D - x) / σ²``. Weightings, written on the x0 error:

* :class:`SimpleWeighting` -- ``1/σ²``: the score-space ``σ²`` weighting of Song & Ermon, equal to the
  ε-MSE ("L_simple") of Ho et al. 2020;
* :class:`EDMWeighting` -- ``(σ² + σ_d²) / (σ σ_d)²`` (Karras et al. 2022), with :class:`LogNormalSigma`;
* :class:`LikelihoodWeighting` -- score-space ``g(t)²`` (Song et al. 2021b), i.e. ``ĝ² / σ⁴`` in σ-form.

Losses are averaged per sample over that sample's degrees of freedom (``space.dof``), so molecules of
different sizes count equally; ``reduction="none"`` returns the per-sample vector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .schedules import NoiseSchedule
from .spaces import EuclideanSpace, Space
from .utils import ShapeError, append_dims, check_floating, flat_rows

__all__ = [
    "SigmaSampler",
    "LogNormalSigma",
    "LogUniformSigma",
    "ScheduleSigma",
    "MixtureSigma",
    "Weighting",
    "SimpleWeighting",
    "EDMWeighting",
    "LikelihoodWeighting",
    "UnitWeighting",
    "DSMLoss",
    "edm_loss",
    "FlowMatchingLoss",
]

Device = Optional[Union[str, torch.device]]


# ----------------------------------------------------------------------------------------- sigma samplers
class SigmaSampler(ABC):
    """Draws one training noise level per sample: ``sampler(n, generator=, device=, dtype=) -> [n]``."""

    @abstractmethod
    def __call__(self, n: int, *, generator=None, device: Device = None, dtype=None) -> Tensor: ...


class LogNormalSigma(SigmaSampler):
    """``log σ ~ N(P_mean, P_std²)`` (EDM defaults ``-1.2, 1.2``)."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(self, n, *, generator=None, device=None, dtype=None):
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return (self.p_mean + self.p_std * z).exp()


class LogUniformSigma(SigmaSampler):
    """``log σ ~ U(log σ_min, log σ_max)`` (SMLD / NCSN)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.lo, self.hi = float(torch.tensor(sigma_min).log()), float(torch.tensor(sigma_max).log())

    def __call__(self, n, *, generator=None, device=None, dtype=None):
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return (self.lo + (self.hi - self.lo) * u).exp()


class ScheduleSigma(SigmaSampler):
    """``t ~ U(t_min, t_max)`` of a schedule, returned as the VE-equivalent ``σ̂(t)`` (Song et al. 2021)."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def __call__(self, n, *, generator=None, device=None, dtype=None):
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        t = self.schedule.t_min + (self.schedule.t_max - self.schedule.t_min) * u
        return self.schedule.ve_sigma(t)


class MixtureSigma(SigmaSampler):
    """Mixture of sigma samplers with the given weights (each sample picks one component)."""

    def __init__(self, samplers: Sequence[SigmaSampler], weights: Optional[Sequence[float]] = None) -> None:
        if len(samplers) == 0:
            raise ValueError("MixtureSigma needs at least one sampler")
        w = torch.ones(len(samplers)) if weights is None else torch.as_tensor(weights, dtype=torch.float)
        if w.shape != (len(samplers),) or bool((w < 0).any()) or not w.sum() > 0:
            raise ValueError(f"weights must be {len(samplers)} non-negative numbers with a positive sum")
        self.samplers, self.weights = list(samplers), w / w.sum()

    def __call__(self, n, *, generator=None, device=None, dtype=None):
        pick = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        out = torch.stack([s(n, generator=generator, device=device, dtype=dtype) for s in self.samplers])
        return out.gather(0, pick[None]).squeeze(0)


# ---------------------------------------------------------------------------------------------- weightings
class Weighting(ABC):
    """Per-sample weight ``λ(σ)`` of the x0 error ``‖D - x0‖²``."""

    @abstractmethod
    def __call__(self, sigma: Tensor) -> Tensor: ...


class UnitWeighting(Weighting):
    """``λ = 1`` (plain x0 regression)."""

    def __call__(self, sigma):
        return torch.ones_like(sigma)


class SimpleWeighting(Weighting):
    """``λ = 1/σ²``: score-space ``σ²`` weighting = ε-prediction MSE (Ho et al. 2020)."""

    def __call__(self, sigma):
        return sigma.square().reciprocal()


class EDMWeighting(Weighting):
    """``λ = (σ² + σ_d²) / (σ σ_d)²`` (Karras et al. 2022): unit loss at every σ for an ideal precond."""

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = float(sigma_data)

    def __call__(self, sigma):
        return (sigma.square() + self.sigma_data**2) / (sigma * self.sigma_data).square()


class LikelihoodWeighting(Weighting):
    """Score-space ``g²`` (Song et al. 2021b); σ-form ``ĝ² = dσ̂²/dt`` gives ``λ = ĝ²/σ̂⁴`` on the x0 error.

    Use with :class:`ScheduleSigma` of the same schedule (``t`` uniform) for the likelihood bound.
    """

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def __call__(self, sigma):
        sch = self.schedule
        t = sch.t_from_sigma(sigma)
        a, s = sch.alpha(t), sch.sigma(t)
        d_hat = (sch.d_sigma(t) * a - s * sch.d_alpha(t)) / a.square()  # dσ̂/dt
        return 2 * sigma * d_hat / sigma.pow(4)


# ------------------------------------------------------------------------------------------------- losses
def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class DSMLoss:
    """Denoising score matching on a denoiser with a sigma sampler and a weighting.

    ``loss(denoiser, x0, *, space=None, generator=None, reduction="mean", sigma=None, **cond)``; a given
    ``sigma`` (one level per sample, or a scalar for all) replaces the sampler's draw and is cast to the dtype
    and device of ``x0``.

    Shapes
    ------
    x0: ``[N, ...]``; sigma: ``[num_samples]`` or ``[]``; returns ``[]`` or ``[num_samples]`` (``reduction="none"``).
    """

    def __init__(self, sigma_sampler: SigmaSampler, weighting: Weighting) -> None:
        self.sigma_sampler, self.weighting = sigma_sampler, weighting

    def __call__(
        self, denoiser: Callable, x0: Tensor, *, space: Optional[Space] = None, generator=None,
        reduction: str = "mean", sigma: Optional[Union[Tensor, float]] = None, **cond,
    ) -> Tensor:
        check_floating(x0, "x0")
        space = space or EuclideanSpace()
        n = space.num_samples(x0)
        if sigma is None:
            sigma = self.sigma_sampler(n, generator=generator, device=x0.device, dtype=x0.dtype)
        else:
            sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
            sigma = sigma.expand(n) if sigma.ndim == 0 else sigma
            if sigma.shape != (n,):
                raise ShapeError(f"sigma must have one entry per sample ({n}), got {list(sigma.shape)}")
        rows = space.per_row(sigma)
        noise = space.randn_like(x0, generator)
        x = x0 + append_dims(rows, x0.ndim) * noise
        d = space.project(denoiser(x, rows, **cond))
        err = space.sum_per_sample((d - x0).square()) / space.dof(x0).clamp_min(1)
        return _reduce(self.weighting(sigma) * err, reduction)


def edm_loss(sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2) -> DSMLoss:
    """EDM training loss (Karras et al. 2022): log-normal σ and ``λ = (σ² + σ_d²)/(σ σ_d)²``."""
    return DSMLoss(LogNormalSigma(p_mean, p_std), EDMWeighting(sigma_data))


class FlowMatchingLoss:
    """Conditional flow matching on the linear path ``x_t = (1 - t) x0 + t x1`` (Lipman et al. 2023).

    ``t = 0`` is data and ``t = 1`` noise, matching :class:`~molediff.core.schedules.LinearFlow`, so the trained
    ``net(x_t, t, **cond) -> u`` samples with ``VelocityDenoiser(net, LinearFlow())``. The target is
    ``u = x1 - x0``. ``coupling="ot"`` pairs data and noise by a minibatch optimal-transport assignment
    (Tong et al. 2023; Pooladian et al. 2023) with ``scipy.optimize.linear_sum_assignment`` -- only where rows
    are samples (Euclidean space).

    Shapes
    ------
    x0: ``[N, ...]``; the network gets ``x_t: [N, ...]``, ``t: [N]``; returns ``[]`` or ``[num_samples]``.
    """

    def __init__(self, coupling: str = "independent", t_min: float = 0.0, t_max: float = 1.0) -> None:
        if coupling not in ("independent", "ot"):
            raise ValueError(f"coupling must be 'independent' or 'ot', got {coupling!r}")
        self.coupling, self.t_min, self.t_max = coupling, t_min, t_max

    @staticmethod
    def ot_pair(x0: Tensor, x1: Tensor) -> Tensor:
        """Permutation of ``x1`` minimising ``Σ‖x0_i - x1_π(i)‖²`` (exact, Hungarian algorithm)."""
        from scipy.optimize import linear_sum_assignment

        cost = torch.cdist(flat_rows(x0).double(), flat_rows(x1).double()).square()
        _, col = linear_sum_assignment(cost.cpu().numpy())
        return x1[torch.as_tensor(col, device=x1.device)]

    def __call__(
        self, net: Callable, x0: Tensor, *, space: Optional[Space] = None, generator=None,
        reduction: str = "mean", **cond,
    ) -> Tensor:
        check_floating(x0, "x0")
        space = space or EuclideanSpace()
        x1 = space.randn_like(x0, generator)
        if self.coupling == "ot":
            if not isinstance(space, EuclideanSpace):
                raise ValueError("minibatch OT coupling needs rows to be samples (EuclideanSpace)")
            x1 = self.ot_pair(x0, x1)
        n = space.num_samples(x0)
        t = self.t_min + (self.t_max - self.t_min) * torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
        tr = space.per_row(t)
        tb = append_dims(tr, x0.ndim)
        x_t = (1 - tb) * x0 + tb * x1
        u = space.project(net(x_t, tr, **cond))
        err = space.sum_per_sample((u - (x1 - x0)).square()) / space.dof(x0).clamp_min(1)
        return _reduce(err, reduction)
