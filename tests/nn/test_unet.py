"""Contract tests for molediff.nn.unet.UNet."""

import pytest
import torch

from molediff.nn.unet import UNet


def _small(**kw) -> UNet:
    cfg = dict(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, emb_dim=32, num_heads=2)
    cfg.update(kw)
    return UNet(**cfg)


def _randomise(net: UNet) -> UNet:
    # zero-initialised output layers make a fresh U-Net output exactly 0; perturb all weights
    torch.manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 1, 4, 12)])
def test_shape(attention, shape):
    net = _small(attention=attention)
    out = net(torch.randn(shape), torch.randn(shape[0]))
    assert out.shape == shape


def test_fresh_net_outputs_zero_and_three_levels():
    net = _small(channel_mult=(1, 2, 2), in_channels=3)
    out = net(torch.randn(2, 3, 8, 8), torch.randn(2))
    assert out.shape == (2, 3, 8, 8)
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


def test_float64():
    net = _small().double()
    out = net(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_images_are_independent_and_noise_matters():
    net = _randomise(_small()).eval()
    x = torch.randn(4, 1, 8, 8)
    c = torch.tensor([-1.0, 0.0, 1.0, 0.5])
    full = net(x, c)
    single = torch.cat([net(x[i : i + 1], c[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)
    other = net(x, c + 1.0)
    assert not torch.allclose(full, other, atol=1e-4)


def test_class_conditioning_and_null_class():
    net = _randomise(_small(num_classes=10)).eval()
    assert net.null_class == 10
    x, c = torch.randn(3, 1, 8, 8), torch.randn(3)
    torch.testing.assert_close(net(x, c), net(x, c, torch.full((3,), 10)))
    out3 = net(x, c, torch.full((3,), 3))
    out7 = net(x, c, torch.full((3,), 7))
    assert not torch.allclose(out3, out7, atol=1e-4)


def test_backward():
    net = _randomise(_small(num_classes=2))
    net(torch.randn(2, 1, 8, 8), torch.randn(2), torch.tensor([0, 2])).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_bad_inputs_raise():
    net = _small(num_classes=2)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 7, 8), torch.randn(1))
    with pytest.raises(ValueError):
        net(torch.randn(1, 2, 8, 8), torch.randn(1))
    with pytest.raises(ValueError):
        net(torch.randn(2, 1, 8, 8), torch.randn(1))
    with pytest.raises(ValueError, match="null class"):
        net(torch.randn(1, 1, 8, 8), torch.randn(1), torch.tensor([5]))
    with pytest.raises(ValueError, match="num_classes"):
        _small()(torch.randn(1, 1, 8, 8), torch.randn(1), torch.tensor([0]))
