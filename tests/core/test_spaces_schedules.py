"""Spaces (zero-CoM and harmonic noise, dof, priors), schedules (derivatives, SDE coefficients, grids), utils."""

import math

import pytest
import torch

from molediff.core.schedules import EDM, VE, LinearFlow, NoiseSchedule, SubVP, VPCosine, VPLinear
from molediff.core.spaces import CenteredSpace, EuclideanSpace, HarmonicSpace
from molediff.core.utils import DTypeError, NoiseLevelError, ShapeError, append_dims, as_row_sigma, check_positive

SCHEDULES = [VPLinear(), SubVP(), VPCosine(), VE(), EDM(), LinearFlow()]


@pytest.mark.parametrize("sch", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_derivatives_inverse_and_sde(sch):
    t = torch.linspace(sch.t_min, sch.t_max, 7, dtype=torch.float64)[1:-1]
    h = 1e-6 * (sch.t_max - sch.t_min)
    assert torch.allclose((sch.alpha(t + h) - sch.alpha(t - h)) / (2 * h), sch.d_alpha(t), rtol=1e-5, atol=1e-7)
    assert torch.allclose((sch.sigma(t + h) - sch.sigma(t - h)) / (2 * h), sch.d_sigma(t), rtol=1e-5, atol=1e-7)
    assert torch.allclose(sch.t_from_sigma(sch.ve_sigma(t)), t, atol=1e-9)
    assert torch.allclose(NoiseSchedule.t_from_sigma(sch, sch.ve_sigma(t)), t, atol=1e-9)  # generic bisection
    # the SDE dx = f x dt + g dw has marginal variance σ²: dσ²/dt = 2 f σ² + g²
    lhs = 2 * sch.sigma(t) * sch.d_sigma(t)
    assert torch.allclose(lhs, 2 * sch.drift(t) * sch.sigma(t) ** 2 + sch.diffusion(t) ** 2, rtol=1e-8)
    grid = sch.sigmas(10)
    assert grid.shape == (11,) and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())


@pytest.mark.parametrize("sch", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_float32_matches_float64(sch):
    """σ(t) and t(σ̂) in float32 are accurate to float32 rounding, also near t_min (σ̂ ~ 1e-4 for sub-VP)."""
    t0 = sch.t_min if sch.t_min > 0 else 1e-2  # VE: t = 0 is σ_min itself
    t = torch.logspace(math.log10(t0), math.log10(sch.t_max), 200, dtype=torch.float64)
    sig = sch.ve_sigma(t)
    rel = lambda a, b: float(((a.double() - b) / b).abs().max())  # noqa: E731
    assert rel(sch.t_from_sigma(sig.float()), sch.t_from_sigma(sig)) < 1e-5
    assert rel(sch.sigma(t.float()), sch.sigma(t)) < 1e-5


def test_schedule_closed_forms():
    vp = VPLinear()
    t = torch.tensor([0.3], dtype=torch.float64)
    assert torch.allclose(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, torch.ones(1, dtype=torch.float64))
    assert torch.allclose(vp.diffusion(t) ** 2, vp.beta(t))
    sub = SubVP()
    assert torch.allclose(sub.diffusion(t) ** 2, vp.beta(t) * (1 - vp.alpha(t) ** 4))
    flow = LinearFlow()
    assert torch.allclose(flow.alpha(t) + flow.sigma(t), torch.ones(1, dtype=torch.float64))
    ve = VE(0.01, 50.0).sigmas(5, dtype=torch.float64)
    ratios = ve[1:-1] / ve[:-2]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))  # geometric
    edm = EDM().sigmas(18, dtype=torch.float64)
    assert math.isclose(edm[0], 80.0) and math.isclose(edm[-2], 0.002, rel_tol=1e-9)
    rho = edm[:-1] ** (1 / 7)
    assert torch.allclose(rho[1:] - rho[:-1], (rho[1] - rho[0]).expand(17))


def test_centered_space_noise_and_dof():
    sizes = [2, 5, 9]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes)).repeat(1)
    reps = 4000
    batch = torch.cat([batch + 3 * r for r in range(reps)])
    space = CenteredSpace(batch)
    z = space.randn((batch.shape[0], 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    com = torch.zeros(space.num_graphs, 3, dtype=torch.float64).index_add_(0, batch, z)
    assert com.abs().max() < 1e-10
    dof = space.dof(z)
    assert torch.equal(dof[:3], torch.tensor([3.0, 12.0, 24.0], dtype=torch.float64))
    sq = space.sum_per_sample(z.square()).reshape(reps, 3)
    # ‖z‖² ~ χ²(3 (N-1)) per graph: mean dof, variance 2 dof
    assert torch.allclose(sq.mean(0), dof[:3], rtol=0.05)
    assert torch.allclose(sq.var(0), 2 * dof[:3], rtol=0.15)
    # log_prior is the normalised density of N(0, σ² I) on the dof-dimensional subspace
    lp = space.log_prior(z * 2.0, 2.0)[:3]
    expected = -0.5 * sq[0] - 0.5 * dof[:3] * math.log(2 * math.pi * 4.0)
    assert torch.allclose(lp, expected)
    assert torch.equal(space.per_row(torch.arange(space.num_graphs)), batch)


def test_harmonic_space_covariance():
    # a 4-atom chain and a triangle, replicated: empirical covariance matches C (kL + eps I)^-1 C
    base = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    edges = torch.tensor([[0, 1, 2, 4, 5, 6], [1, 2, 3, 5, 6, 4]])
    reps = 6000
    batch = torch.cat([base + 2 * r for r in range(reps)])
    edge_index = torch.cat([edges + 7 * r for r in range(reps)], dim=1)
    space = HarmonicSpace(batch, edge_index, eps=0.1, stiffness=2.0)
    z = space.randn((batch.shape[0], 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert space.project(z).sub(z).abs().max() < 1e-10  # CoM-free
    chain = z.reshape(reps, 7, 3)[:, :4].permute(0, 2, 1).reshape(-1, 4)  # each coordinate a sample
    emp = chain.T @ chain / chain.shape[0]
    lap = torch.tensor([[1.0, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1], [0, 0, -1, 1]], dtype=torch.float64)
    c = torch.eye(4, dtype=torch.float64) - 1 / 4
    exact = c @ torch.linalg.inv(2.0 * lap + 0.1 * torch.eye(4, dtype=torch.float64)) @ c
    assert torch.allclose(space.covariance(0), exact, atol=1e-10)
    assert torch.allclose(emp, exact, atol=0.03 * exact.abs().max())
    # log_prior: Gaussian density on the 3(N-1)-dim subspace, checked on one graph against the pseudo-inverse
    x = z[:4]
    single = HarmonicSpace(torch.zeros(4, dtype=torch.long), edges[:, :3], eps=0.1, stiffness=2.0)
    prec = torch.linalg.pinv(exact)
    eig = torch.linalg.eigvalsh(exact)[1:]
    quad = (x.T @ prec @ x).trace()
    expected = -0.5 * quad - 0.5 * 9 * math.log(2 * math.pi) - 1.5 * eig.log().sum()
    assert torch.allclose(single.log_prior(x, 1.0), expected.reshape(1))
    # rotation invariance of the prior
    q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    assert torch.allclose(single.log_prior(x @ q.T, 1.0), single.log_prior(x, 1.0))


def test_euclidean_space():
    space = EuclideanSpace()
    x = torch.randn(4, 2, 3)
    assert space.num_samples(x) == 4 and torch.equal(space.dof(x), torch.full((4,), 6.0))
    assert torch.allclose(space.sum_per_sample(x), x.sum((1, 2)))


def test_validation_errors():
    with pytest.raises(ShapeError):
        append_dims(torch.zeros(2, 2), 1)
    assert append_dims(torch.zeros(5), 4).shape == (5, 1, 1, 1)
    x = torch.zeros(3, 2)
    with pytest.raises(ShapeError, match="one noise level per row"):
        as_row_sigma(torch.ones(4), x)
    with pytest.raises(DTypeError):
        as_row_sigma(torch.ones(3, dtype=torch.long), x)
    with pytest.raises(NoiseLevelError, match="> 0"):
        check_positive(torch.tensor([1.0, 0.0]))
    with pytest.raises(DTypeError):
        CenteredSpace(torch.zeros(3))
    with pytest.raises(ValueError, match="sorted"):
        CenteredSpace(torch.tensor([1, 0]))
    with pytest.raises(ShapeError):
        CenteredSpace(torch.tensor([0, 0, 1])).project(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="different graphs"):
        HarmonicSpace(torch.tensor([0, 0, 1, 1]), torch.tensor([[0], [2]]))
    with pytest.raises(ValueError):
        VPLinear(beta_min=-1.0)


def test_sum_per_sample_and_log_prior_of_an_empty_batch():
    """Zero samples (or zero nodes) reduce to an empty per-sample vector instead of a reshape error."""
    x = torch.zeros(0, 3)
    assert EuclideanSpace().sum_per_sample(x).shape == (0,)
    assert EuclideanSpace().log_prior(x, 1.0).shape == (0,)
    empty = CenteredSpace(torch.zeros(0, dtype=torch.long), num_graphs=2)
    assert torch.equal(empty.sum_per_sample(x), torch.zeros(2))


@pytest.mark.parametrize("sch", SCHEDULES, ids=lambda s: type(s).__name__)
def test_sigmas_refuse_sigma_min_above_sigma_max(sch):
    """The grid is documented as descending: swapped bounds are an error (as in karras_sigmas), not a rising grid."""
    with pytest.raises(ValueError, match="exceeds sigma_max"):
        sch.sigmas(3, sigma_min=10.0, sigma_max=1.0)


def test_vp_cosine_refuses_t_min_zero():
    """σ̂(0) = 0: a schedule starting there has no positive sampling grid and an infinite DSM weight."""
    with pytest.raises(ValueError, match="0 < t_min"):
        VPCosine(t_min=0.0)
    assert VPCosine(t_min=1e-4).sigmas(3)[-2] > 0
