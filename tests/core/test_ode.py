"""A collapsing adaptive step is a FloatingPointError, from the samplers and the likelihood alike."""

from __future__ import annotations

import pytest
import torch

from molediff.core.likelihood import log_likelihood
from molediff.core.ode import odeint_checked
from molediff.core.samplers import sample_adaptive


def _nan_denoiser(x, sigma, **cond):
    return torch.full_like(x, float("nan"))


def test_a_non_finite_drift_is_a_floating_point_error_not_an_assertion():
    with pytest.raises(FloatingPointError, match="step size underflowed between 10 and 1"):
        sample_adaptive(_nan_denoiser, 10 * torch.randn(4, 3), [10.0, 5.0, 1.0, 0.0])


def test_the_likelihood_solver_reports_it_the_same_way():
    with pytest.raises(FloatingPointError, match="step size underflowed"):
        log_likelihood(_nan_denoiser, torch.randn(4, 3))


def test_other_assertions_and_good_solves_pass_through():
    y = odeint_checked(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="dopri5")
    torch.testing.assert_close(y[-1], torch.full((2,), float(torch.exp(torch.tensor(-1.0)))), rtol=1e-5, atol=1e-6)

    def fails(t, y):
        raise AssertionError("something else")

    with pytest.raises(AssertionError, match="something else"):
        odeint_checked(fails, torch.ones(2), torch.tensor([0.0, 1.0]))
