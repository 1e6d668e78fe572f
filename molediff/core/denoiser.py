"""The denoiser contract ``D(x, σ, **cond) -> x̂0`` and every conversion between parametrisations.

Everything downstream (samplers, losses, guidance, likelihood) talks to a *denoiser*: a callable taking a
noisy point ``x = x0 + σ ε`` in VE-equivalent (σ-form) coordinates and one noise level per row, returning
``E[x0 | x]``. This module is the only place that converts between the score, the noise estimate ε̂, the
clean estimate x̂0, the v-prediction and a flow velocity, and the only place that maps σ-form inputs to a
network's native ``(x_t, t)`` coordinates.

Projection policy: denoisers are space-agnostic (one module serves every batch of graphs). Whoever holds the
:class:`~molediff.core.spaces.Space` (samplers, losses, likelihood) projects the denoiser's output with it;
:class:`ProjectedDenoiser` does the same for any other caller.

Conversions use native coordinates ``x_t = α x0 + σ ε``; with the default ``α = 1`` they are the σ-form ones.
Tensor arguments ``alpha``, ``sigma`` must broadcast against ``x`` (use :func:`append_dims`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Protocol, Union

from torch import Tensor, nn

from .schedules import NoiseSchedule
from .spaces import Space
from .utils import append_dims, as_row_sigma, check_floating

__all__ = [
    "Denoiser",
    "eps_to_x0",
    "x0_to_eps",
    "score_to_x0",
    "x0_to_score",
    "v_to_x0",
    "x0_to_v",
    "velocity_to_x0",
    "x0_to_velocity",
    "ScheduleDenoiser",
    "EpsDenoiser",
    "X0Denoiser",
    "VDenoiser",
    "ScoreDenoiser",
    "VelocityDenoiser",
    "PREDICTIONS",
    "from_prediction",
    "EDMPrecond",
    "ProjectedDenoiser",
]

Num = Union[Tensor, float]


class Denoiser(Protocol):
    """``D(x: [N, ...], sigma: [N], **cond) -> [N, ...]`` returning ``E[x0 | x]`` in σ-form coordinates."""

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor: ...


# ----------------------------------------------------------------------------------------------- conversions
def eps_to_x0(x: Tensor, eps: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """``x̂0 = (x_t - σ ε̂) / α``."""
    return (x - sigma * eps) / alpha


def x0_to_eps(x: Tensor, x0: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """``ε̂ = (x_t - α x̂0) / σ``."""
    return (x - alpha * x0) / sigma


def score_to_x0(x: Tensor, score: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """Tweedie: ``x̂0 = (x_t + σ² ∇log p_t(x_t)) / α``."""
    return (x + sigma * sigma * score) / alpha


def x0_to_score(x: Tensor, x0: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """``∇log p_t(x_t) = (α x̂0 - x_t) / σ²``."""
    return (alpha * x0 - x) / (sigma * sigma)


def v_to_x0(x: Tensor, v: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """v-prediction (Salimans & Ho 2022), ``v = α ε - σ x0``: ``x̂0 = (α x_t - σ v) / (α² + σ²)``."""
    return (alpha * x - sigma * v) / (alpha * alpha + sigma * sigma)


def x0_to_v(x: Tensor, x0: Tensor, sigma: Num, alpha: Num = 1.0) -> Tensor:
    """``v = α ε̂ - σ x̂0``."""
    return alpha * x0_to_eps(x, x0, sigma, alpha) - sigma * x0


def velocity_to_x0(x: Tensor, u: Tensor, sigma: Num, alpha: Num, d_sigma: Num, d_alpha: Num) -> Tensor:
    """Flow velocity ``u = α' x0 + σ' ε`` to ``x̂0 = (σ' x_t - σ u) / (σ' α - σ α')``."""
    return (d_sigma * x - sigma * u) / (d_sigma * alpha - sigma * d_alpha)


def x0_to_velocity(x: Tensor, x0: Tensor, sigma: Num, alpha: Num, d_sigma: Num, d_alpha: Num) -> Tensor:
    """``u = α' x̂0 + σ' ε̂`` (the conditional path's time derivative at ``x_t``)."""
    return d_alpha * x0 + d_sigma * x0_to_eps(x, x0, sigma, alpha)


def _check_inputs(x: Tensor, sigma: Union[Tensor, float]) -> Tensor:
    check_floating(x, "x")
    return as_row_sigma(sigma, x)


# -------------------------------------------------------------------------------------------------- adapters
class ScheduleDenoiser(nn.Module):
    """Base adapter: a network trained in native coordinates ``net(x_t, t, **cond)`` under ``schedule``.

    ``forward`` maps σ-form inputs to ``t = schedule.t_from_sigma(σ)``, ``x_t = α(t) x`` and converts the
    network's output to ``x̂0`` with :meth:`to_x0`, which each subclass implements.

    Shapes
    ------
    x: ``[N, ...]``; sigma: ``[N]`` (or a scalar); the network receives ``x_t: [N, ...]`` and ``t: [N]``.
    """

    def __init__(self, net: Callable[..., Tensor], schedule: NoiseSchedule) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule

    def to_x0(self, x_t: Tensor, out: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        s_hat = _check_inputs(x, sigma)
        t = self.schedule.t_from_sigma(s_hat)
        alpha = append_dims(self.schedule.alpha(t), x.ndim)
        sig = append_dims(self.schedule.sigma(t), x.ndim)
        x_t = alpha * x
        return self.to_x0(x_t, self.net(x_t, t, **cond), t, alpha, sig)


class EpsDenoiser(ScheduleDenoiser):
    """Adapter for a network predicting the noise ε (DDPM)."""

    def to_x0(self, x_t, out, t, alpha, sigma):
        return eps_to_x0(x_t, out, sigma, alpha)


class X0Denoiser(ScheduleDenoiser):
    """Adapter for a network predicting the clean sample x0."""

    def to_x0(self, x_t, out, t, alpha, sigma):
        return out


class VDenoiser(ScheduleDenoiser):
    """Adapter for a network predicting ``v = α ε - σ x0``."""

    def to_x0(self, x_t, out, t, alpha, sigma):
        return v_to_x0(x_t, out, sigma, alpha)


class ScoreDenoiser(ScheduleDenoiser):
    """Adapter for a network predicting the score ``∇_{x_t} log p_t(x_t)``."""

    def to_x0(self, x_t, out, t, alpha, sigma):
        return score_to_x0(x_t, out, sigma, alpha)


class VelocityDenoiser(ScheduleDenoiser):
    """Adapter for a flow-matching network predicting ``u = dx_t/dt`` (e.g. under :class:`LinearFlow`)."""

    def to_x0(self, x_t, out, t, alpha, sigma):
        nd = x_t.ndim
        d_alpha = append_dims(self.schedule.d_alpha(t), nd)
        d_sigma = append_dims(self.schedule.d_sigma(t), nd)
        return velocity_to_x0(x_t, out, sigma, alpha, d_sigma, d_alpha)


PREDICTIONS: Dict[str, type] = {
    "eps": EpsDenoiser,
    "x0": X0Denoiser,
    "v": VDenoiser,
    "score": ScoreDenoiser,
    "velocity": VelocityDenoiser,
}


def from_prediction(net: Callable[..., Tensor], prediction: str, schedule: NoiseSchedule) -> ScheduleDenoiser:
    """Wrap ``net`` predicting ``prediction`` (one of :data:`PREDICTIONS`) under ``schedule`` as a denoiser."""
    try:
        cls = PREDICTIONS[prediction]
    except KeyError:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {sorted(PREDICTIONS)}") from None
    return cls(net, schedule)


class EDMPrecond(nn.Module):
    """EDM preconditioning (Karras et al. 2022, Table 1): ``D = c_skip x + c_out F(c_in x, c_noise, **cond)``.

    ``c_skip = σ_d² / (σ² + σ_d²)``, ``c_out = σ σ_d / sqrt(σ² + σ_d²)``, ``c_in = 1 / sqrt(σ² + σ_d²)``,
    ``c_noise = log(σ) / 4`` per row.

    Parameters
    ----------
    net : callable
        ``net(x: [N, ...], c_noise: [N], **cond) -> [N, ...]`` (e.g. a :mod:`molediff.nn` score network).
    sigma_data : float
        Standard deviation of the data (per coordinate).

    Shapes
    ------
    x: ``[N, ...]``; sigma: ``[N]`` (or a scalar); returns ``[N, ...]``.
    """

    def __init__(self, net: Callable[..., Tensor], sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: Tensor) -> tuple:
        """``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma``."""
        sd2 = self.sigma_data**2
        denom = sigma.square() + sd2
        return sd2 / denom, sigma * self.sigma_data * denom.rsqrt(), denom.rsqrt(), sigma.log() / 4

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        sigma = _check_inputs(x, sigma)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        f = self.net(append_dims(c_in, x.ndim) * x, c_noise, **cond)
        if f.shape != x.shape:
            raise ValueError(f"network output shape {list(f.shape)} differs from input shape {list(x.shape)}")
        return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * f.to(x.dtype)


class ProjectedDenoiser(nn.Module):
    """``space.project(D(x, σ, **cond))``: keeps a denoiser's output in ``space`` (e.g. zero CoM)."""

    def __init__(self, denoiser: Callable[..., Tensor], space: Space) -> None:
        super().__init__()
        self.denoiser, self.space = denoiser, space

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        return self.space.project(self.denoiser(x, sigma, **cond))
