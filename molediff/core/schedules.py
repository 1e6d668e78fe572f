"""Noise schedules: one abstraction for every forward process ``q(x_t | x_0) = N(α_t x_0, σ_t² I)``.

A :class:`NoiseSchedule` gives ``α(t)``, ``σ(t)``, their time derivatives, the SDE drift coefficient
``f(t) = α'/α`` and diffusion ``g(t)² = dσ²/dt - 2 f σ²`` (so that ``dx = f x dt + g dw``), and the
*VE-equivalent* noise level ``σ̂(t) = σ(t) / α(t)`` used by the samplers.

Samplers work in the σ-form of Karras et al. (2022, Sec. 4): with ``x̂ = x / α`` every schedule becomes the
variance-exploding process ``x̂ = x_0 + σ̂ ε``, the forward SDE becomes ``dx̂ = sqrt(dσ̂²/dt) dw`` and the
PF-ODE becomes ``dx̂/dσ̂ = (x̂ - D(x̂, σ̂)) / σ̂``. A schedule therefore only decides *which* σ̂ grid to use
(:meth:`NoiseSchedule.sigmas`) and how a network trained in its native ``(x_t, t)`` coordinates is wrapped
(:mod:`molediff.core.denoiser`); one set of samplers serves all of them.

Instances: :class:`VPLinear` (DDPM), :class:`VPCosine`, :class:`VE` (SMLD/NCSN), :class:`SubVP`,
:class:`EDM` (Karras ``σ(t) = t`` with the ρ grid) and :class:`LinearFlow` (rectified / OT flow matching).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional, Union

import torch
from torch import Tensor

from .utils import check_positive

__all__ = [
    "NoiseSchedule",
    "VPLinear",
    "VPCosine",
    "VE",
    "SubVP",
    "EDM",
    "LinearFlow",
    "karras_sigmas",
]

TimeLike = Union[Tensor, float]


def _t(t: TimeLike) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.get_default_dtype())


def karras_sigmas(
    num_steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    *,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Descending grid ``(σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ`` followed by 0 (Karras 2022, eq. 5).

    Shapes
    ------
    returns ``[num_steps + 1]``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    check_positive(torch.tensor([sigma_min, sigma_max]), "sigma_min/sigma_max")
    if sigma_min > sigma_max:
        raise ValueError(f"sigma_min={sigma_min} exceeds sigma_max={sigma_max}")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + ramp * (lo - hi)) ** rho
    if num_steps == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    s = torch.cat([s, s.new_zeros(1)])
    return s.to(device=device, dtype=dtype or torch.get_default_dtype())


class NoiseSchedule(ABC):
    """Abstract forward process ``x_t = α(t) x_0 + σ(t) ε`` on ``t ∈ [t_min, t_max]``.

    Subclasses implement :meth:`alpha`, :meth:`sigma`, :meth:`d_alpha`, :meth:`d_sigma` and, where a closed
    form exists, :meth:`t_from_sigma` (the default inverts :meth:`ve_sigma` by bisection). All methods take
    a float or a tensor of any shape and return a tensor of the same shape.
    """

    t_min: float = 0.0
    t_max: float = 1.0

    @abstractmethod
    def alpha(self, t: TimeLike) -> Tensor:
        """Signal scale ``α(t)``."""

    @abstractmethod
    def sigma(self, t: TimeLike) -> Tensor:
        """Noise scale ``σ(t)``."""

    @abstractmethod
    def d_alpha(self, t: TimeLike) -> Tensor:
        """Time derivative ``dα/dt``."""

    @abstractmethod
    def d_sigma(self, t: TimeLike) -> Tensor:
        """Time derivative ``dσ/dt``."""

    def drift(self, t: TimeLike) -> Tensor:
        """SDE drift coefficient ``f(t) = d log α / dt`` (the drift is ``f(t) x``)."""
        return self.d_alpha(t) / self.alpha(t)

    def diffusion(self, t: TimeLike) -> Tensor:
        """SDE diffusion ``g(t) = sqrt(dσ²/dt - 2 f(t) σ²)``."""
        s = self.sigma(t)
        g2 = 2 * s * self.d_sigma(t) - 2 * self.drift(t) * s.square()
        return g2.clamp(min=0).sqrt()

    def ve_sigma(self, t: TimeLike) -> Tensor:
        """VE-equivalent noise level ``σ̂(t) = σ(t) / α(t)`` (the σ the samplers and denoisers see)."""
        return self.sigma(t) / self.alpha(t)

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        """Inverse of :meth:`ve_sigma` (σ̂ is increasing in t). Default: 64 steps of vectorised bisection."""
        s = _t(sigma)
        lo = torch.full_like(s, self.t_min)
        hi = torch.full_like(s, self.t_max)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            up = self.ve_sigma(mid) < s
            lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def sigma_min(self) -> float:
        """Smallest VE-equivalent noise level ``σ̂(t_min)``."""
        return float(self.ve_sigma(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        """Largest VE-equivalent noise level ``σ̂(t_max)`` (the prior's scale)."""
        return float(self.ve_sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def sigmas(
        self,
        num_steps: int,
        *,
        sigma_min: Optional[float] = None,
        sigma_max: Optional[float] = None,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        """Descending VE-equivalent grid for samplers, ``num_steps`` positive levels then a final 0.

        The default places steps uniformly in the schedule's own time ``t`` (the native discretisation of
        DDPM / SMLD / flow matching); :class:`EDM` overrides it with the ρ grid.

        Shapes
        ------
        returns ``[num_steps + 1]``.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        lo = self.t_min if sigma_min is None else float(self.t_from_sigma(torch.tensor(sigma_min, dtype=torch.float64)))
        hi = self.t_max if sigma_max is None else float(self.t_from_sigma(torch.tensor(sigma_max, dtype=torch.float64)))
        if lo > hi:
            s_lo = self.sigma_min if sigma_min is None else sigma_min
            s_hi = self.sigma_max if sigma_max is None else sigma_max
            raise ValueError(f"sigma_min={s_lo} exceeds sigma_max={s_hi}")
        t = torch.linspace(hi, lo, num_steps, dtype=torch.float64) if num_steps > 1 else torch.tensor([hi], dtype=torch.float64)
        s = torch.cat([self.ve_sigma(t), torch.zeros(1, dtype=torch.float64)])
        check_positive(s[:-1], "sigma grid")
        return s.to(device=device, dtype=dtype or torch.get_default_dtype())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class VPLinear(NoiseSchedule):
    """Variance-preserving SDE with linear ``β(t) = β_min + t (β_max - β_min)`` (DDPM; Song et al. 2021).

    ``α = exp(-½ ∫β)``, ``σ = sqrt(1 - α²)``; the defaults match DDPM's 1000 steps of β ∈ [1e-4, 0.02].
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.t_min, self.t_max = beta_min, beta_max, t_min, t_max

    def beta(self, t: TimeLike) -> Tensor:
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t.square() * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        db, b0 = self.beta_max - self.beta_min, self.beta_min
        return (-0.5 * b0 + (0.25 * b0**2 - db * log_alpha).sqrt()) / (0.5 * db)

    def alpha(self, t: TimeLike) -> Tensor:
        return self._log_alpha(_t(t)).exp()

    def sigma(self, t: TimeLike) -> Tensor:
        return (-torch.expm1(2 * self._log_alpha(_t(t)))).sqrt()

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: TimeLike) -> Tensor:
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        return self._t_from_log_alpha(-0.5 * torch.log1p(_t(sigma).square()))


class SubVP(VPLinear):
    """Sub-VP SDE (Song et al. 2021): ``α`` as :class:`VPLinear`, ``σ = 1 - α²``."""

    def sigma(self, t: TimeLike) -> Tensor:
        return -torch.expm1(2 * self._log_alpha(_t(t)))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return -2 * self.alpha(t) * self.d_alpha(t)

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        # α = 2 / (σ̂ + sqrt(σ̂² + 4)), the root of α² + σ̂ α - 1 = 0, so log α = -asinh(σ̂/2) (no rounding of α near 1)
        return self._t_from_log_alpha(-torch.asinh(0.5 * _t(sigma)))


class VPCosine(NoiseSchedule):
    """Cosine VP schedule (Nichol & Dhariwal 2021): ``α = cos(φ(t)) / cos(φ(0))``, ``φ = π/2 (t+s)/(1+s)``."""

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.995):
        if not 0 < t_min < t_max < 1:  # σ̂(0) = 0: no positive sampling grid, an infinite DSM weight
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.s, self.t_min, self.t_max = s, t_min, t_max

    def _phi(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    @property
    def _c0(self) -> float:
        return math.cos(self.s / (1 + self.s) * math.pi / 2)

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.cos(self._phi(_t(t))) / self._c0

    def sigma(self, t: TimeLike) -> Tensor:
        # 1 - α² = (cos²φ0 - cos²φ) / c0² = sin(φ - φ0) sin(φ + φ0) / c0²: no cancellation at small t
        t, half = _t(t), math.pi / 2 / (1 + self.s)
        return (torch.sin(t * half) * torch.sin((t + 2 * self.s) * half)).clamp(min=0).sqrt() / self._c0

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -torch.sin(self._phi(_t(t))) / self._c0 * (math.pi / 2 / (1 + self.s))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        # cos φ = c0 / sqrt(1 + σ̂²), i.e. tan φ = sqrt(σ̂² + sin²φ0) / c0 (arccos near 1 loses precision)
        sin0 = math.sin(self.s / (1 + self.s) * math.pi / 2)
        phi = torch.atan((_t(sigma).square() + sin0**2).sqrt() / self._c0)
        return phi * (2 * (1 + self.s) / math.pi) - self.s


class VE(NoiseSchedule):
    """Variance-exploding SDE (SMLD / NCSN): ``α = 1``, geometric ``σ(t) = σ_min (σ_max/σ_min)^t``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self._smin, self._smax = sigma_min, sigma_max
        self.t_min, self.t_max = 0.0, 1.0

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return self._smin * (self._smax / self._smin) ** _t(t)

    def d_alpha(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return self.sigma(t) * math.log(self._smax / self._smin)

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        return torch.log(_t(sigma) / self._smin) / math.log(self._smax / self._smin)


class EDM(NoiseSchedule):
    """Karras et al. (2022): ``α = 1``, ``σ(t) = t`` on ``[σ_min, σ_max]``, with the ρ grid for sampling."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.t_min, self.t_max, self.rho = sigma_min, sigma_max, rho

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return _t(t).clone()

    def d_alpha(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        return _t(sigma).clone()

    def sigmas(self, num_steps, *, sigma_min=None, sigma_max=None, device=None, dtype=None) -> Tensor:
        """ρ grid of Karras et al. (2022, eq. 5); see :func:`karras_sigmas`."""
        return karras_sigmas(
            num_steps,
            self.t_min if sigma_min is None else sigma_min,
            self.t_max if sigma_max is None else sigma_max,
            self.rho,
            device=device,
            dtype=dtype,
        )


class LinearFlow(NoiseSchedule):
    """Linear (rectified / OT) flow-matching path ``x_t = (1 - t) x_0 + t ε`` (Lipman 2023; Liu 2023).

    ``σ̂ = t / (1 - t)`` diverges at ``t = 1``, hence ``t_max < 1``: at ``σ̂_max = 999`` the prior
    ``σ̂_max · ε`` matches ``x_{t_max} / α`` up to the data's (negligible) contribution.
    """

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999):
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.t_min, self.t_max = t_min, t_max

    def alpha(self, t: TimeLike) -> Tensor:
        return 1 - _t(t)

    def sigma(self, t: TimeLike) -> Tensor:
        return _t(t).clone()

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -torch.ones_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def t_from_sigma(self, sigma: TimeLike) -> Tensor:
        s = _t(sigma)
        return s / (1 + s)
