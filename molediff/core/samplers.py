"""Samplers: short free functions over a denoiser ``D(x, σ, **cond) -> x̂0`` and a descending σ grid.

Every sampler works in the σ-form of Karras et al. (2022): ``x = x0 + σ ε`` with the VE-equivalent noise level
``σ = σ_t / α_t`` of any schedule (VP, sub-VP, VE, EDM, linear flow; see :mod:`molediff.core.schedules`).
For a VP process the state is ``x_t / α_t``: the forward SDE of the rescaled state is the VE SDE with
``g² = dσ²/dt`` and its PF-ODE is ``dx/dσ = (x - D(x; σ)) / σ``, so one set of samplers serves all schedules;
a schedule only supplies the grid (``schedule.sigmas(n)``) and the network adapter (``molediff.core.denoiser``).
At ``σ = 0`` (``α = 1``) both coordinate systems agree, so the result needs no rescaling.

Common signature::

    sample_xxx(denoiser, x, sigmas, *, space=None, generator=None, callback=None, progress=False, **cond)

``x`` is the initial state already at noise level ``sigmas[0]`` (see :func:`prior_sample`), ``sigmas`` a
descending grid ending in 0 (``[num_steps + 1]``), ``space`` draws all noise and projects every denoiser
output (default :class:`~molediff.core.spaces.EuclideanSpace`), ``generator`` feeds all its noise (a
:class:`torch.Generator`, or a :class:`~molediff.core.noise.PerSampleNoise` giving every sample its own stream),
``callback`` receives a dict per step and ``**cond`` goes to the denoiser. The grid is read to the host once per
call; the loop itself makes no host-device synchronisation. Samplers never look at the shape of ``x`` beyond its number of rows.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .noise import NoiseGenerator
from .ode import odeint_checked
from .spaces import EuclideanSpace, Space
from .utils import ShapeError, check_floating, check_positive

__all__ = [
    "prior_sample",
    "sample_euler",
    "sample_heun",
    "sample_ddpm",
    "sample_ddim",
    "sample_euler_maruyama",
    "sample_pc",
    "sample_dpmpp_2m",
    "sample_adaptive",
    "SAMPLERS",
    "sample",
]

Callback = Optional[Callable[[Dict[str, Any]], None]]
_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def prior_sample(
    space: Space,
    shape: Sequence[int],
    sigma_max: float,
    generator: NoiseGenerator = None,
    *,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Tensor:
    """Initial state ``σ_max · z`` with ``z`` standard noise of ``space``.

    Shapes
    ------
    returns ``shape`` (``[N, ...]``).
    """
    check_positive(sigma_max, "sigma_max")
    return float(sigma_max) * space.randn(shape, generator=generator, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------- helpers
def _setup(x: Tensor, sigmas: Union[Tensor, Sequence[float]], space: Optional[Space]) -> tuple:
    check_floating(x, "x")
    grid = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if grid.ndim != 1 or grid.numel() < 2:
        raise ShapeError(f"sigmas must be a 1-d grid with at least 2 entries, got shape {list(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or bool((grid < 0).any()) or bool((grid[1:] > grid[:-1]).any()):
        raise ValueError("sigmas must be finite, non-negative and non-increasing")
    if not bool((grid[:-1] > 0).all()):
        raise ValueError("sigmas must be > 0 except the last entry (a step from or to a repeated 0 divides by 0)")
    return grid.tolist(), space if space is not None else EuclideanSpace()


def _denoise(denoiser: Callable, x: Tensor, s: float, space: Space, cond: dict) -> Tensor:
    return space.project(denoiser(x, x.new_full((x.shape[0],), s), **cond))


def _steps(n: int, progress: bool):
    if progress:
        from tqdm.auto import trange

        return trange(n)
    return range(n)


def _report(callback: Callback, i: int, x: Tensor, s: float, s_next: float, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})


def _churn(x, s, n, churn, s_tmin, s_tmax, s_noise, space, generator):
    gamma = min(churn / n, math.sqrt(2) - 1) if churn > 0 and s_tmin <= s <= s_tmax else 0.0
    s_hat = s * (1 + gamma)
    if gamma > 0:
        x = x + math.sqrt(s_hat**2 - s**2) * s_noise * space.randn_like(x, generator)
    return x, s_hat


# -------------------------------------------------------------------------------------------------- samplers
@torch.no_grad()
def sample_euler(
    denoiser, x, sigmas, *, space=None, generator=None, churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0,
    callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """PF-ODE Euler, first order (Karras et al. 2022, Alg. 2 without the 2nd-order correction; optional churn)."""
    grid, space = _setup(x, sigmas, space)
    n = len(grid) - 1
    for i in _steps(n, progress):
        x, s_hat = _churn(x, grid[i], n, churn, s_tmin, s_tmax, s_noise, space, generator)
        d = _denoise(denoiser, x, s_hat, space, cond)
        x = x + (grid[i + 1] - s_hat) * (x - d) / s_hat
        _report(callback, i, x, grid[i], grid[i + 1], d)
    return x


@torch.no_grad()
def sample_heun(
    denoiser, x, sigmas, *, space=None, generator=None, churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0,
    callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """PF-ODE Heun, second order, with EDM's optional churn S_churn/S_tmin/S_tmax/S_noise (Karras 2022, Alg. 2)."""
    grid, space = _setup(x, sigmas, space)
    n = len(grid) - 1
    for i in _steps(n, progress):
        x, s_hat = _churn(x, grid[i], n, churn, s_tmin, s_tmax, s_noise, space, generator)
        s_next = grid[i + 1]
        d = _denoise(denoiser, x, s_hat, space, cond)
        slope = (x - d) / s_hat
        x_next = x + (s_next - s_hat) * slope
        if s_next > 0:
            slope2 = (x_next - _denoise(denoiser, x_next, s_next, space, cond)) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (slope + slope2)
        x = x_next
        _report(callback, i, x, grid[i], s_next, d)
    return x


@torch.no_grad()
def sample_ddim(
    denoiser, x, sigmas, *, space=None, generator=None, eta: float = 0.0,
    callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """DDIM (Song, Meng & Ermon 2021, eq. 12) in σ-form; ``eta=0`` is deterministic, ``eta=1`` is DDPM."""
    grid, space = _setup(x, sigmas, space)
    for i in _steps(len(grid) - 1, progress):
        s, s_next = grid[i], grid[i + 1]
        d = _denoise(denoiser, x, s, space, cond)
        c = eta * s_next * math.sqrt(max(s * s - s_next * s_next, 0.0)) / s
        c = min(c, s_next)
        x = d + math.sqrt(s_next * s_next - c * c) / s * (x - d)
        if c > 0:
            x = x + c * space.randn_like(x, generator)
        _report(callback, i, x, s, s_next, d)
    return x


def sample_ddpm(
    denoiser, x, sigmas, *, space=None, generator=None, callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): draw the posterior q(x_σ' | x_σ, x̂0) each step.

    In σ-form the posterior is ``N(x̂0 + (σ'/σ)² (x - x̂0), σ'² (σ² - σ'²) / σ²)``, which is DDIM with ``eta=1``.
    """
    return sample_ddim(
        denoiser, x, sigmas, space=space, generator=generator, eta=1.0, callback=callback, progress=progress, **cond
    )


@torch.no_grad()
def sample_euler_maruyama(
    denoiser, x, sigmas, *, space=None, generator=None, callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """Reverse SDE ``dx = -2σ ∇log p(x; σ) dσ + sqrt(2σ |dσ|) z`` by Euler–Maruyama (Song et al. 2021); last step denoises."""
    grid, space = _setup(x, sigmas, space)
    for i in _steps(len(grid) - 1, progress):
        s, s_next = grid[i], grid[i + 1]
        d = _denoise(denoiser, x, s, space, cond)
        if s_next > 0:
            x = x + 2 * (s_next - s) / s * (x - d) + math.sqrt(2 * s * (s - s_next)) * space.randn_like(x, generator)
        else:
            x = d
        _report(callback, i, x, s, s_next, d)
    return x


@torch.no_grad()
def sample_pc(
    denoiser, x, sigmas, *, space=None, generator=None, snr: float = 0.16, n_corrector: int = 1,
    per_sample: bool = False, callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """Predictor–corrector (Song et al. 2021, Alg. 2-3): Euler–Maruyama predictor, Langevin corrector with SNR step.

    The corrector step is ``2 (snr ‖z‖ / ‖score‖)²``. By default (as in Song et al.'s reference code) the norms
    are per-sample norms averaged over the batch, which couples the samples: one sample's step depends on the
    others (on the batch composition). ``per_sample=True`` gives every sample (every graph) its own step
    ``2 (snr √dof / ‖score‖)²`` (``√dof`` ≈ ``‖z‖``, the expected noise norm), so samples stay independent. It
    needs many degrees of freedom per sample (molecules, images): with a few (2-D toys) one draw of ``‖score‖``
    is a poor estimate of its typical size, ~0 near a mode, and the step explodes.
    """
    grid, space = _setup(x, sigmas, space)
    for i in _steps(len(grid) - 1, progress):
        s, s_next = grid[i], grid[i + 1]
        d = _denoise(denoiser, x, s, space, cond)
        if s_next == 0:
            x = d
        else:
            x = x + 2 * (s_next - s) / s * (x - d) + math.sqrt(2 * s * (s - s_next)) * space.randn_like(x, generator)
            for _ in range(n_corrector):
                score = (_denoise(denoiser, x, s_next, space, cond) - x) / (s_next * s_next)
                z = space.randn_like(x, generator)
                g_norm = space.sum_per_sample(score.square()).sqrt()
                if per_sample:
                    step = 2 * (snr * space.dof(x).sqrt() / g_norm.clamp_min(1e-30)).square()
                    step = space.per_row(step).reshape(-1, *([1] * (x.ndim - 1)))
                else:
                    z_norm = space.sum_per_sample(z.square()).sqrt()
                    step = 2 * (snr * z_norm.mean() / g_norm.mean().clamp_min(1e-30)).square()
                x = x + step * score + (2 * step).sqrt() * z
        _report(callback, i, x, s, s_next, d)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser, x, sigmas, *, space=None, generator=None, callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """DPM-Solver++(2M), multistep second order in λ = -log σ (Lu et al. 2022, Alg. 2)."""
    grid, space = _setup(x, sigmas, space)
    old: Optional[Tensor] = None
    for i in _steps(len(grid) - 1, progress):
        s, s_next = grid[i], grid[i + 1]
        d = _denoise(denoiser, x, s, space, cond)
        if s_next == 0:
            x = d
        else:
            d_eff = d
            if old is not None and grid[i - 1] > s > s_next:  # a repeated level has step 0: first order
                r = math.log(grid[i - 1] / s) / math.log(s / s_next)
                d_eff = (1 + 0.5 / r) * d - (0.5 / r) * old
            x = (s_next / s) * x + (1 - s_next / s) * d_eff
        old = d
        _report(callback, i, x, s, s_next, d)
    return x


@torch.no_grad()
def sample_adaptive(
    denoiser, x, sigmas, *, space=None, generator=None, rtol: float = 1e-4, atol: float = 1e-4,
    method: str = "dopri5", info: Optional[dict] = None, callback: Callback = None, progress: bool = False, **cond,
) -> Tensor:
    """Adaptive PF-ODE solve ``dx/dσ = (x - D)/σ`` with torchdiffeq (default dopri5; Dormand & Prince 1980).

    Integrates from ``sigmas[0]`` to the smallest positive level of the grid, then denoises if the grid ends
    in 0; a fixed-step method (``"rk4"``, ``"euler"``, ...) steps through every positive level of the grid.
    The number of denoiser evaluations is stored in ``info["nfe"]`` and passed to ``callback``.
    Error control uses the max-norm over all entries (so no sample of the batch is left inaccurate);
    adaptive step control reads error norms on the host (one synchronisation per step, by design).
    """
    grid, space = _setup(x, sigmas, space)
    positive: List[float] = [s for s in grid if s > 0]
    nfe = 0

    def velocity(s: Tensor, y: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        d = space.project(denoiser(y, s.to(y.dtype).expand(y.shape[0]), **cond))
        return (y - d) / s.to(y.dtype)

    if positive[-1] < positive[0] and x.numel() > 0:  # an empty batch has nothing to integrate
        # fixed-step torchdiffeq methods step between output times: give them every positive level of the grid
        adaptive = method in _ADAPTIVE_METHODS + ("scipy_solver",)
        levels = [positive[0], positive[-1]] if adaptive else sorted(set(positive), reverse=True)
        span = torch.tensor(levels, dtype=x.dtype, device=x.device)
        # max-norm error control: torchdiffeq's default RMS over the whole batch lets a few samples drift
        options = {"norm": lambda t: t.abs().max()} if method in _ADAPTIVE_METHODS else None
        x = odeint_checked(velocity, x, span, rtol=rtol, atol=atol, method=method, options=options)[-1]
    d = x
    if grid[-1] == 0:
        d = _denoise(denoiser, x, positive[-1], space, cond)
        nfe += 1
        x = d
    if info is not None:
        info["nfe"] = nfe
    if callback is not None:
        callback({"i": 0, "x": x, "sigma": grid[0], "sigma_next": grid[-1], "denoised": d, "nfe": nfe})
    return x


SAMPLERS: Dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "dpmpp_2m": sample_dpmpp_2m,
    "adaptive": sample_adaptive,
}


def sample(name: str, denoiser: Callable, x: Tensor, sigmas: Union[Tensor, Sequence[float]], **kw: Any) -> Tensor:
    """Run the sampler registered as ``name`` in :data:`SAMPLERS` (see the module docstring for ``kw``)."""
    try:
        fn = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    return fn(denoiser, x, sigmas, **kw)
