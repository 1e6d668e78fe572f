"""Denoiser adapters and conversions, EDM preconditioning, DSM / flow-matching losses."""

import math

import pytest
import torch

from molediff.core.denoiser import PREDICTIONS, EDMPrecond, from_prediction, x0_to_eps, x0_to_score, x0_to_v, x0_to_velocity
from molediff.core.losses import (
    DSMLoss, EDMWeighting, FlowMatchingLoss, LikelihoodWeighting, LogNormalSigma, LogUniformSigma, MixtureSigma,
    ScheduleSigma, SimpleWeighting, edm_loss,
)
from molediff.core.schedules import LinearFlow, VPCosine, VPLinear
from molediff.core.utils import DTypeError, ShapeError

from .gaussian_mixture import mixture_2d


def _native_net(gm, schedule, prediction):
    """An exact network in native (x_t, t) coordinates, built from the mixture oracle."""
    def net(x_t, t):
        a = schedule.alpha(t)[:, None]
        s = schedule.sigma(t)[:, None]
        x0 = gm.denoiser(x_t / a, (s / a)[:, 0])
        if prediction == "eps":
            return x0_to_eps(x_t, x0, s, a)
        if prediction == "x0":
            return x0
        if prediction == "v":
            return x0_to_v(x_t, x0, s, a)
        if prediction == "score":
            return x0_to_score(x_t, x0, s, a)
        return x0_to_velocity(x_t, x0, s, a, schedule.d_sigma(t)[:, None], schedule.d_alpha(t)[:, None])
    return net


@pytest.mark.parametrize("prediction", sorted(PREDICTIONS))
@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine(), LinearFlow()], ids=lambda s: type(s).__name__)
def test_adapters_recover_the_denoiser(prediction, schedule):
    gm = mixture_2d(torch.float64)
    den = from_prediction(_native_net(gm, schedule, prediction), prediction, schedule)
    x = torch.randn(64, 2, dtype=torch.float64) * 3
    sigma = torch.logspace(-2, 1.5, 64, dtype=torch.float64)
    assert torch.allclose(den(x, sigma), gm.denoiser(x, sigma), atol=1e-8)


def test_edm_precond():
    seen = {}

    def net(x, c_noise):
        seen["c_noise"], seen["x"] = c_noise, x
        return torch.zeros_like(x)

    pre = EDMPrecond(net, sigma_data=0.5)
    x, sigma = torch.randn(4, 3), torch.tensor([0.1, 1.0, 10.0, 80.0])
    out = pre(x, sigma)
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.allclose(out, c_skip[:, None] * x)
    assert torch.allclose(seen["c_noise"], sigma.log() / 4)
    assert torch.allclose(seen["x"], x / (sigma**2 + 0.25).sqrt()[:, None])
    with pytest.raises(ShapeError):
        pre(x, torch.ones(3))
    with pytest.raises(DTypeError):
        pre(x.long(), sigma)


class _Perturbed(torch.nn.Module):
    """Exact denoiser plus a parametrised perturbation eps * h(x, σ)."""

    def __init__(self, gm):
        super().__init__()
        self.gm, self.eps = gm, torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, sigma):
        return self.gm.denoiser(x, sigma) + self.eps * torch.tanh(x + sigma[:, None])


@pytest.mark.parametrize("loss", [
    DSMLoss(LogUniformSigma(0.05, 5.0), SimpleWeighting()),
    edm_loss(0.5),
    DSMLoss(ScheduleSigma(VPLinear()), LikelihoodWeighting(VPLinear())),
], ids=["simple", "edm", "likelihood"])
def test_exact_denoiser_is_stationary_point_of_dsm(loss):
    gm = mixture_2d(torch.float64)
    x0 = gm.sample(20000, torch.Generator().manual_seed(0))
    model = _Perturbed(gm)

    def value(eps):
        with torch.no_grad():
            model.eps.fill_(eps)
        return loss(model, x0, generator=torch.Generator().manual_seed(1))

    base = value(0.0)
    grad = torch.autograd.grad(base, model.eps)[0]
    curvature = (value(0.1) + value(-0.1) - 2 * value(0.0)).detach() / 0.01
    # gradient ~ 0 relative to the curvature scale (Monte-Carlo noise only) and exact beats perturbations
    assert abs(float(grad)) < 0.05 * float(curvature) * 1.0 + 1e-9, (grad, curvature)
    assert value(0.1) > base and value(-0.1) > base


def test_sigma_samplers_and_weights():
    g = torch.Generator().manual_seed(0)
    s = LogNormalSigma(-1.2, 1.2)(50000, generator=g, dtype=torch.float64)
    assert abs(float(s.log().mean()) + 1.2) < 0.03 and abs(float(s.log().std()) - 1.2) < 0.03
    u = LogUniformSigma(0.01, 100.0)(50000, generator=g, dtype=torch.float64)
    assert u.min() >= 0.01 and u.max() <= 100.0 and abs(float(u.log().mean())) < 0.05
    m = MixtureSigma([LogUniformSigma(0.01, 0.02), LogUniformSigma(10.0, 20.0)], [0.25, 0.75])(20000, generator=g)
    assert abs(float((m > 1).float().mean()) - 0.75) < 0.02
    sig = torch.tensor([0.5])
    assert torch.allclose(EDMWeighting(0.5)(sig), torch.tensor([8.0]))


def test_flow_matching_loss_and_ot_coupling():
    gm = mixture_2d(torch.float64)
    x0 = gm.sample(256, torch.Generator().manual_seed(0))
    x1 = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    paired = FlowMatchingLoss.ot_pair(x0, x1)
    assert (paired - x0).square().sum() < (x1 - x0).square().sum()
    assert torch.allclose(paired.sort(0)[0], x1.sort(0)[0])
    # the exact marginal velocity (from the oracle) beats a perturbed one under both couplings
    flow = LinearFlow()
    net = _native_net(gm, flow, "velocity")
    for coupling in ("independent", "ot"):
        loss = FlowMatchingLoss(coupling, t_min=0.01, t_max=0.99)
        exact = loss(net, x0, generator=torch.Generator().manual_seed(2))
        worse = loss(lambda x, t: net(x, t) + 0.3, x0, generator=torch.Generator().manual_seed(2))
        assert math.isfinite(float(exact)) and worse > exact
    with pytest.raises(ValueError):
        FlowMatchingLoss("sinkhorn")


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_losses_of_an_empty_batch(coupling):
    """Zero samples give an empty per-sample loss vector, not a reshape error (OT pairing of nothing included)."""
    gm = mixture_2d(torch.float64)
    x0 = torch.zeros(0, 2, dtype=torch.float64)
    assert edm_loss()(gm.denoiser, x0, reduction="none").shape == (0,)
    assert FlowMatchingLoss(coupling)(lambda x, t: x, x0, reduction="none").shape == (0,)


def test_dsm_loss_casts_a_given_sigma_to_the_data():
    """A float64 (or Python-float) σ for float32 data must not turn the network's input into float64."""
    net = torch.nn.Linear(2, 2)
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    loss = edm_loss()
    for sigma in (torch.ones(4, dtype=torch.float64), 1.0):
        out = loss(lambda x, s: net(x), x0, sigma=sigma, generator=torch.Generator().manual_seed(1))
        assert out.dtype == torch.float32 and torch.isfinite(out)
    with pytest.raises(ShapeError, match="one entry per sample"):
        loss(lambda x, s: net(x), x0, sigma=torch.ones(3))
