"""Samplers driven by the exact Gaussian-mixture denoiser reproduce the mixture; ODE solvers converge at their order."""

import math

import pytest
import torch

from molediff.core.samplers import SAMPLERS, prior_sample, sample, sample_euler, sample_heun
from molediff.core.schedules import EDM, VE, VPLinear
from molediff.core.spaces import CenteredSpace, EuclideanSpace
from molediff.core.utils import DTypeError, ShapeError

from .gaussian_mixture import mixture_16d, mixture_2d, moment_errors, sliced_wasserstein

# (sampler, steps, kwargs); step counts keep every case well under a second
CASES = [
    ("euler", 200, {}),
    ("heun", 40, {}),
    ("heun", 64, {"churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}),
    ("ddim", 200, {"eta": 0.0}),
    ("ddim", 200, {"eta": 0.5}),
    ("ddpm", 400, {}),
    ("euler_maruyama", 600, {}),
    ("pc", 300, {"snr": 0.1}),
    ("dpmpp_2m", 40, {}),
    ("adaptive", 2, {"rtol": 1e-4, "atol": 1e-4}),
]
N = 4000


TOL = {  # sliced-W relative to the mean exact-vs-exact floor; absolute moment errors (16-D covariances reach ~10)
    "2d": {"sw": 2.0, "mean": 0.1, "cov": 0.2, "weights": 0.04},
    "16d": {"sw": 2.0, "mean": 0.2, "cov": 1.2, "weights": 0.03},
}


def _check(problem, name, steps, kw):
    gm = mixture_2d() if problem == "2d" else mixture_16d()
    x = prior_sample(EuclideanSpace(), (N, gm.dim), 80.0, torch.Generator().manual_seed(0))
    out = sample(name, gm.denoiser, x, EDM().sigmas(steps), generator=torch.Generator().manual_seed(1), **kw)
    assert out.shape == x.shape and torch.isfinite(out).all()
    ref = gm.sample(N, torch.Generator().manual_seed(2))
    others = [gm.sample(N, torch.Generator().manual_seed(k)) for k in (3, 5)]
    pairs = [(ref, others[0]), (ref, others[1]), (others[0], others[1])]
    floor = sum(float(sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(4))) for a, b in pairs) / 3
    err = moment_errors(gm, out)
    err["sw"] = float(sliced_wasserstein(out, ref, generator=torch.Generator().manual_seed(4))) / floor
    return {k: (err[k], TOL[problem][k]) for k in err}


@pytest.mark.parametrize("problem", ["2d", "16d"])
@pytest.mark.parametrize("name,steps,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sampler_reproduces_mixture(problem, name, steps, kw):
    res = _check(problem, name, steps, kw)
    assert all(v < tol for v, tol in res.values()), res


@pytest.mark.parametrize("problem", ["2d", "16d"])
@pytest.mark.parametrize("name,steps", [("euler", 4), ("ddpm", 10)])
def test_broken_or_coarse_sampler_fails_the_tolerance(problem, name, steps):
    """The tolerances have teeth: far too few steps (a stand-in for a wrong update) fail them."""
    res = _check(problem, name, steps, {})
    assert any(v >= tol for v, tol in res.values()), res


def _convergence_errors(solver, steps, gm, x, ref):
    sig = torch.cat([EDM().sigmas(steps, sigma_min=0.05, sigma_max=10.0)[:-1]])
    out = solver(gm.denoiser, x, sig)
    return float((out - ref).norm(dim=1).mean())


def test_ode_convergence_orders():
    gm = mixture_2d(torch.float64)
    x = prior_sample(EuclideanSpace(), (256, 2), 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    ref_grid = EDM().sigmas(4096, sigma_min=0.05, sigma_max=10.0)[:-1]
    ref = sample_heun(gm.denoiser, x, ref_grid)
    e_euler = [_convergence_errors(sample_euler, n, gm, x, ref) for n in (32, 64, 128)]
    e_heun = [_convergence_errors(sample_heun, n, gm, x, ref) for n in (32, 64, 128)]
    r_euler = [e_euler[i] / e_euler[i + 1] for i in range(2)]
    r_heun = [e_heun[i] / e_heun[i + 1] for i in range(2)]
    assert all(1.7 < r < 2.4 for r in r_euler), r_euler
    assert all(3.2 < r < 4.8 for r in r_heun), r_heun


def test_schedule_grids_drive_samplers():
    """VP and VE grids in σ-form sample the same mixture (one set of samplers for all schedules)."""
    gm = mixture_2d()
    for sch in (VPLinear(), VE(sigma_max=80.0)):
        sig = sch.sigmas(60)
        x = prior_sample(EuclideanSpace(), (N, 2), float(sig[0]), torch.Generator().manual_seed(0))
        err = moment_errors(gm, sample_heun(gm.denoiser, x, sig))
        assert err["mean"] < 0.1 and err["cov"] < 0.2 and err["weights"] < 0.03, (sch, err)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_are_shape_agnostic_and_stay_in_space(name):
    """Images [B, C, H, W] work, and graph samples stay zero-CoM in CenteredSpace."""
    img = torch.randn(3, 2, 4, 4)
    den = lambda x, s, **c: 0.5 * x  # noqa: E731
    out = sample(name, den, img * 5, EDM().sigmas(4), generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    space = CenteredSpace(batch)
    x = prior_sample(space, (9, 3), 5.0, torch.Generator().manual_seed(0))
    shifted = lambda x, s, **c: 0.5 * x + 1.0  # noqa: E731  (output off the space: the sampler projects it)
    out = sample(name, shifted, x, EDM().sigmas(4, sigma_max=5.0), space=space, generator=torch.Generator().manual_seed(1))
    com = torch.zeros(3, 3).index_add_(0, batch, out)
    assert com.abs().max() < 1e-5


def test_callback_and_info():
    gm = mixture_2d()
    x = prior_sample(EuclideanSpace(), (16, 2), 80.0)
    seen = []
    sample_heun(gm.denoiser, x, EDM().sigmas(5), callback=seen.append)
    assert [d["i"] for d in seen] == list(range(5)) and seen[-1]["sigma_next"] == 0.0
    info = {}
    sample("adaptive", gm.denoiser, x, EDM().sigmas(5), info=info)
    assert info["nfe"] > 5


def test_adaptive_with_a_fixed_step_method_uses_the_grid():
    """A fixed-step torchdiffeq method (rk4) steps through the grid's levels, not once from σ_max to σ_min."""
    gm = mixture_2d(torch.float64)
    x = prior_sample(EuclideanSpace(), (64, 2), 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = EDM().sigmas(64, dtype=torch.float64)
    ref = sample("adaptive", gm.denoiser, x, grid, rtol=1e-8, atol=1e-8)
    info = {}
    out = sample("adaptive", gm.denoiser, x, grid, method="rk4", info=info)
    assert info["nfe"] == 4 * 63 + 1
    assert (out - ref).abs().max() < 1e-3


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_repeated_levels_are_allowed(name):
    """The grid may repeat a level (non-increasing): a zero-length step, not a division by zero."""
    gm = mixture_2d(torch.float64)
    x = prior_sample(EuclideanSpace(), (8, 2), 5.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.tensor([5.0, 1.0, 1.0, 0.5, 0.0])
    out = sample(name, gm.denoiser, x, grid, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()


def test_invalid_inputs():
    gm = mixture_2d()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="non-increasing"):
        sample_euler(gm.denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ShapeError):
        sample_euler(gm.denoiser, x, torch.ones(2, 2))
    for name in SAMPLERS:  # a 0 before the end would divide by σ = 0 (NaN or ZeroDivisionError)
        with pytest.raises(ValueError, match="except the last"):
            sample(name, gm.denoiser, x, torch.tensor([5.0, 1.0, 0.0, 0.0]))
    with pytest.raises(DTypeError):
        sample_euler(gm.denoiser, torch.ones(4, 2, dtype=torch.long), EDM().sigmas(3))
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("nope", gm.denoiser, x, EDM().sigmas(3))
    with pytest.raises(ValueError, match="> 0"):
        prior_sample(EuclideanSpace(), (4, 2), -1.0)
    assert math.isclose(float(EDM().sigmas(3)[0]), 80.0, rel_tol=1e-6)


@pytest.mark.parametrize("graphs", [False, True])
def test_pc_per_sample_step_ignores_the_other_samples(graphs):
    # with per-sample steps, sample 0 must not feel whether its batch-mate has scale 1 or 100 (same shapes and
    # seed: same noise); the default batch-averaged step moves it
    space = CenteredSpace(torch.arange(2).repeat_interleave(4)) if graphs else EuclideanSpace()
    rows = 8 if graphs else 2

    def run(scale, per_sample=True):
        var = torch.tensor([1.0, scale**2], dtype=torch.float64)  # per-sample data variance
        var = var.repeat_interleave(4)[:, None] if graphs else var[:, None]

        def den(x, s):  # exact denoiser of N(0, var) per sample
            return x * var / (var + s[:, None] ** 2)

        x0 = prior_sample(space, (rows, 3), 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
        return sample("pc", den, x0, EDM().sigmas(20), space=space, generator=torch.Generator().manual_seed(1),
                      per_sample=per_sample)

    a, b = run(1.0), run(100.0)
    first = slice(0, 4) if graphs else slice(0, 1)
    assert torch.isfinite(a).all() and torch.equal(a[first], b[first])
    assert not torch.allclose(run(1.0, False)[first], run(100.0, False)[first])  # the coupled default


def test_pc_per_sample_step_reproduces_a_16d_mixture():
    res = _check("16d", "pc", 300, {"snr": 0.1, "per_sample": True})
    assert all(v < tol for v, tol in res.values()), res


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_accept_an_empty_batch(name):
    """A batch of zero samples comes back empty (pc summed per sample, adaptive took a max over no entries)."""
    gm = mixture_2d()
    x = torch.zeros(0, 2)
    out = sample(name, gm.denoiser, x, EDM().sigmas(4), generator=torch.Generator().manual_seed(0))
    assert out.shape == (0, 2)
