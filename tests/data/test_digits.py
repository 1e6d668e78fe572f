"""Tests for molediff.data.digits."""

import torch

from molediff.data.digits import (
    NUM_LEVELS,
    PIXEL_SCALE,
    dequantize,
    load_digits_split,
    to_model_space,
    to_pixels,
)


def test_split_is_fixed_stratified_and_scaled():
    a, b = load_digits_split(), load_digits_split()
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.y_train.dtype == torch.long and a.x_train.dtype == torch.float32
    torch.testing.assert_close(a.x_test, b.x_test, rtol=0, atol=0)
    assert torch.equal(a.y_test, b.y_test)
    assert a.x_train.min() == -1.0 and a.x_train.max() == 1.0
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46
    c = load_digits_split(seed=1)
    assert not torch.equal(a.y_test, c.y_test)


def test_train_and_test_are_disjoint():
    s = load_digits_split()
    train = {tuple(v.tolist()) for v in to_pixels(s.x_train).flatten(1)}
    test = [tuple(v.tolist()) for v in to_pixels(s.x_test).flatten(1)]
    # the raw data has a handful of exact duplicate images; the split itself must not copy rows
    assert sum(t in train for t in test) <= 5


def test_pixel_round_trip_and_dequantisation():
    v = torch.arange(NUM_LEVELS)
    x = to_model_space(v)
    assert torch.equal(to_pixels(x), v)
    g = torch.Generator().manual_seed(0)
    xd = dequantize(x.repeat(1000), generator=g)
    assert torch.equal(to_pixels(xd), v.repeat(1000))  # stays in its own bin
    assert (xd - x.repeat(1000)).abs().max() <= PIXEL_SCALE / 2
