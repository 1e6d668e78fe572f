"""PenaltyGuidance: a constraint on the denoiser's estimate, applied only inside its σ range."""

import pytest
import torch

from molediff.core.guidance import PenaltyGuidance, PenaltySum, SigmaWindow


def _shrink(x, sigma, **cond):
    return 0.5 * x


def _above_one(y):  # feasible set: every entry >= 1
    return torch.relu(1.0 - y).square().sum()


def test_corrects_the_estimate_inside_the_range_only():
    guided = PenaltyGuidance(_shrink, _above_one, sigma_range=(0.1, 2.0), iters=50, step_size=0.2)
    x = torch.full((4, 3), -2.0)
    inside = guided(x, torch.full((4,), 1.0))
    outside = guided(x, torch.full((4,), 5.0))
    torch.testing.assert_close(outside, _shrink(x, None))
    assert _above_one(inside) < 1e-6 < _above_one(_shrink(x, None))


def test_feasible_estimates_are_left_alone():
    guided = PenaltyGuidance(_shrink, _above_one, iters=10, step_size=0.5)
    x = torch.full((3, 2), 4.0)
    torch.testing.assert_close(guided(x, torch.ones(3)), _shrink(x, None))


def test_gradient_tracking_is_not_required_by_the_caller():
    guided = PenaltyGuidance(_shrink, _above_one, iters=3)
    with torch.no_grad():
        out = guided(torch.zeros(2, 3), torch.ones(2))
    assert not out.requires_grad and torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs", [{"iters": -1}, {"step_size": 0.0}, {"sigma_range": (2.0, 1.0)}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        PenaltyGuidance(_shrink, _above_one, **kwargs)


def test_max_move_caps_each_rows_step():
    def steep(y):
        return 1e6 * y.square().sum()

    guided = PenaltyGuidance(lambda x, s, **c: x, steep, iters=1, step_size=1.0, max_move=0.25)
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    out = guided(x, torch.ones(2))
    moved = (out - x).norm(dim=1)
    torch.testing.assert_close(moved, torch.tensor([0.25, 0.0]))
    with pytest.raises(ValueError):
        PenaltyGuidance(_shrink, _above_one, max_move=0.0)


class _AboveTheEstimate:
    """Feasible set: every entry >= the estimate it was bound to, plus one; records each binding."""

    def __init__(self, floor=None):
        self.floor, self.bound = floor, []

    def bind(self, x0, sigma):
        self.bound.append((x0.clone(), sigma))
        return _AboveTheEstimate(x0 + 1.0)

    def __call__(self, y):
        return torch.relu(self.floor - y).square().sum()


def test_a_bindable_penalty_is_bound_once_per_call_to_the_network_estimate():
    penalty = _AboveTheEstimate()
    guided = PenaltyGuidance(_shrink, penalty, iters=60, step_size=0.3)
    x = torch.full((2, 3), 4.0)
    out = guided(x, torch.full((2,), 0.7))
    assert len(penalty.bound) == 1  # not re-bound at each of the 60 steps, where the target would run away
    torch.testing.assert_close(penalty.bound[0][0], _shrink(x, None))
    assert penalty.bound[0][1] == pytest.approx(0.7)
    torch.testing.assert_close(out, _shrink(x, None) + 1.0, atol=1e-3, rtol=0)


def test_penalty_sum_adds_terms_and_binds_each_within_its_sigma_window():
    penalty = _AboveTheEstimate()
    windowed = SigmaWindow(penalty, (0.5, 1.0))
    total = PenaltySum([_above_one, windowed])
    y = torch.full((2, 3), -1.0)
    inside = total.bind(y, 0.7)
    assert len(penalty.bound) == 1 and len(inside.penalties) == 2  # bound once, to the estimate
    torch.testing.assert_close(inside(y), _above_one(y) + torch.relu((y + 1.0) - y).square().sum())
    outside = total.bind(y, 3.0)
    assert len(penalty.bound) == 1 and len(outside.penalties) == 1  # the windowed term sits the call out
    torch.testing.assert_close(outside(y), _above_one(y))


def test_an_empty_penalty_sum_is_zero_with_a_gradient():
    y = torch.ones(3, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(PenaltySum([])(y), y)
    assert float(PenaltySum([])(y).detach()) == 0.0 and torch.equal(grad, torch.zeros_like(y))


class _CountingClosedForm:
    """``_above_one`` with its gradient in closed form, counting the calls of each."""

    def __init__(self):
        self.values = self.gradients = 0

    def __call__(self, y):
        self.values += 1
        return _above_one(y)

    def gradient(self, y):
        self.gradients += 1
        return -2.0 * torch.relu(1.0 - y)


def test_a_closed_form_gradient_replaces_autograd():
    from molediff.core.guidance import penalty_gradient

    penalty = _CountingClosedForm()
    x = torch.linspace(-2.0, 3.0, 12).reshape(4, 3)
    torch.testing.assert_close(penalty_gradient(penalty, x), penalty_gradient(_above_one, x))
    guided = PenaltyGuidance(_shrink, penalty, iters=7, step_size=0.2)
    out = guided(x, torch.ones(4))
    assert (penalty.values, penalty.gradients) == (0, 8)
    torch.testing.assert_close(out, PenaltyGuidance(_shrink, _above_one, iters=7, step_size=0.2)(x, torch.ones(4)))


def test_penalty_sum_adds_closed_form_and_autograd_terms():
    total = PenaltySum([_CountingClosedForm(), SigmaWindow(_above_one, (0.0, 1.0))])
    x = torch.linspace(-2.0, 3.0, 12).reshape(4, 3)
    torch.testing.assert_close(total.gradient(x), 2 * total.penalties[0].gradient(x))
    assert total.penalties[0].values == 0
    torch.testing.assert_close(PenaltySum([]).gradient(x), torch.zeros_like(x))


def test_project_is_the_correction_forward_applies_to_the_estimate():
    guided = PenaltyGuidance(_shrink, _above_one, iters=7, step_size=0.2, max_move=0.5)
    x = torch.full((4, 3), -2.0)
    torch.testing.assert_close(guided.project(_shrink(x, None), 1.0, 7), guided(x, torch.ones(4)))
    fine = guided.project(_shrink(x, None), 1.0, 7, step_size=0.01)
    assert _above_one(fine) < _above_one(_shrink(x, None))
    assert not torch.allclose(fine, guided(x, torch.ones(4)))
    torch.testing.assert_close(guided.project(x, 1.0, 0), x)
