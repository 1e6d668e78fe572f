"""Tests for molediff.data.toy2d."""

import numpy as np
import pytest
import torch

from molediff.data.toy2d import TOY2D_DATASETS, sample_toy2d


@pytest.mark.parametrize("name", sorted(TOY2D_DATASETS))
def test_deterministic_shape_and_scale(name):
    a = sample_toy2d(name, 4000, seed=3)
    b = sample_toy2d(name, 4000, seed=3)
    c = sample_toy2d(name, 4000, seed=4)
    assert a.shape == (4000, 2) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a.mean(0).abs().max() < 0.15
    assert ((a.std(0) > 0.8) & (a.std(0) < 1.25)).all()


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    expected_t, expected_n = torch.rand(1), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    for name in TOY2D_DATASETS:
        sample_toy2d(name, 10, seed=1)
    assert torch.rand(1) == expected_t and np.random.rand() == expected_n


def test_checkerboard_support():
    x = sample_toy2d("checkerboard", 5000, seed=0, dtype=torch.float64) * np.sqrt(4.0 / 3.0)
    cells = torch.floor(x).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()  # only the "black" squares
    assert x.abs().max() <= 2.0


def test_eight_gaussians_modes():
    x = sample_toy2d("8gaussians", 8000, seed=0) * np.sqrt(0.5 + 0.01)
    angle = torch.atan2(x[:, 1], x[:, 0])
    mode = torch.round(angle / (np.pi / 4)).long() % 8
    counts = torch.bincount(mode, minlength=8).float()
    assert (counts / 8000 - 1 / 8).abs().max() < 0.03


def test_errors():
    with pytest.raises(ValueError, match="unknown toy"):
        sample_toy2d("spirals", 10)
    with pytest.raises(ValueError):
        sample_toy2d("moons", 0)
