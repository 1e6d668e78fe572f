"""The property checks of molediff.nn.testing must catch broken networks (negative controls)."""

from __future__ import annotations

import pytest
import torch

from molediff.nn.egnn import EGNN
from molediff.nn.testing import (
    EquivarianceError,
    assert_e3nn_equivariant,
    assert_equivariant_vector_field,
    assert_permutation_equivariant,
    assert_reflection_equivariant,
    assert_translation_invariant,
    default_rtol,
    random_improper_rotation,
    random_rotation,
)


class AbsolutePositionMLP(torch.nn.Module):
    """Deliberately broken: an MLP on absolute coordinates (no symmetry at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 3))

    def forward(self, x, c_noise, **_):
        return self.mlp(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_rotations_are_orthogonal(dtype):
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(3, dtype=dtype)
    for _ in range(5):
        r, q = random_rotation(g, dtype), random_improper_rotation(g, dtype)
        assert r.dtype == dtype
        torch.testing.assert_close(r @ r.T, eye)
        torch.testing.assert_close(q @ q.T, eye)
        assert torch.det(r).item() == pytest.approx(1.0, abs=1e-5)
        assert torch.det(q).item() == pytest.approx(-1.0, abs=1e-5)
    assert default_rtol(torch.float64) == 1e-10 and default_rtol(torch.float32) == 1e-5


def test_broken_network_fails_every_check():
    torch.manual_seed(0)
    net = AbsolutePositionMLP().double()
    x, c = torch.randn(10, 3, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    f = lambda x: net(x, c)  # noqa: E731
    with pytest.raises(EquivarianceError, match="rotation"):
        assert_equivariant_vector_field(f, x)
    with pytest.raises(EquivarianceError, match="translation"):
        assert_translation_invariant(f, x)
    with pytest.raises(EquivarianceError):
        assert_reflection_equivariant(f, x, expect=True)
    with pytest.raises(AssertionError):
        assert_e3nn_equivariant(f, x)


def test_translation_and_permutation_controls():
    x = torch.randn(8, 3, dtype=torch.float64)
    # equivariant under rotation but moves with translations
    assert_equivariant_vector_field(lambda x: x, x)
    with pytest.raises(EquivarianceError, match="translation"):
        assert_translation_invariant(lambda x: x, x)

    def by_index(x, c_noise, **_):  # depends on the node's position in the array
        return (x - x.mean(0)) * torch.arange(1, x.shape[0] + 1, dtype=x.dtype).unsqueeze(1)

    with pytest.raises(EquivarianceError, match="permutation"):
        assert_permutation_equivariant(by_index, x, torch.zeros(8, dtype=x.dtype), generator=torch.Generator().manual_seed(1))


def test_translation_is_per_graph():
    """A field that couples graphs of a batch (global centring) is caught by independent per-graph shifts."""
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    x = torch.randn(6, 3, dtype=torch.float64)
    assert_translation_invariant(lambda x: x - x.mean(0), x)  # one shared shift: invariant
    with pytest.raises(EquivarianceError):
        assert_translation_invariant(lambda x: x - x.mean(0), x, batch=batch)


def test_e3_network_fails_the_chirality_check():
    torch.manual_seed(0)
    net = EGNN(0, 0, hidden=16, num_layers=2, fully_connected=True).double()
    x, c = torch.randn(7, 3, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    f = lambda x: net(x, c)  # noqa: E731
    assert_reflection_equivariant(f, x, expect=True)
    with pytest.raises(EquivarianceError, match="chiral"):
        assert_reflection_equivariant(f, x, expect=False)


def test_permutation_check_accepts_a_scalar_noise_level():
    """The networks broadcast a scalar ``c_noise`` (one level for all nodes); the check must accept it too."""
    torch.manual_seed(0)
    net = EGNN(0, 0, hidden=8, num_layers=2, knn=3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    assert_permutation_equivariant(net, x, torch.tensor(0.3, dtype=x.dtype), generator=torch.Generator().manual_seed(0))
