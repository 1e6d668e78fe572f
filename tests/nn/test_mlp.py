"""Contract tests for molediff.nn.mlp.ResidualMLP."""

import pytest
import torch

from molediff.nn.mlp import FourierEmbedding, ResidualMLP


def _perturb_out(net: ResidualMLP) -> ResidualMLP:
    # zero-initialised residual branches make a fresh net ignore its conditioning; randomise them
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtype(dtype):
    net = ResidualMLP(dim=3, hidden=32, num_blocks=2, emb_dim=16).to(dtype)
    x = torch.randn(7, 3, dtype=dtype)
    out = net(x, torch.randn(7, dtype=dtype))
    assert out.shape == (7, 3) and out.dtype == dtype
    assert torch.isfinite(out).all()


def test_noise_level_changes_output():
    net = _perturb_out(ResidualMLP(dim=2, hidden=32, num_blocks=2, emb_dim=16))
    x = torch.randn(4, 2).repeat(2, 1)
    c = torch.cat([torch.full((4,), -1.0), torch.full((4,), 1.0)])
    out = net(x, c)
    assert not torch.allclose(out[:4], out[4:], atol=1e-4)


def test_rows_are_independent():
    net = _perturb_out(ResidualMLP(dim=2, hidden=32, num_blocks=2, emb_dim=16)).eval()
    x, c = torch.randn(6, 2), torch.randn(6)
    full = net(x, c)
    single = torch.cat([net(x[i : i + 1], c[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(full, single, rtol=1e-5, atol=1e-5)


def test_class_conditioning_and_null_class():
    net = _perturb_out(ResidualMLP(dim=2, hidden=32, num_blocks=2, emb_dim=16, num_classes=3))
    assert net.null_class == 3
    x, c = torch.randn(5, 2), torch.randn(5)
    out_none = net(x, c)
    out_null = net(x, c, class_labels=torch.full((5,), net.null_class))
    torch.testing.assert_close(out_none, out_null)
    out_0 = net(x, c, class_labels=torch.zeros(5, dtype=torch.long))
    out_1 = net(x, c, class_labels=torch.ones(5, dtype=torch.long))
    assert not torch.allclose(out_0, out_1, atol=1e-4)
    assert not torch.allclose(out_0, out_none, atol=1e-4)


def test_gradients_reach_every_parameter():
    net = ResidualMLP(dim=2, hidden=16, num_blocks=2, emb_dim=8, num_classes=2)
    labels = torch.tensor([0, 1, 2, 0])
    net(torch.randn(4, 2), torch.randn(4), labels).square().sum().backward()
    # a zero-initialised layer blocks gradient to layers before it on the first step only through
    # the residual branch; the trunk (inp, out) and the output layer must get gradient at once
    assert net.out.weight.grad is not None and net.out.weight.grad.abs().sum() > 0
    assert net.inp.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(x=torch.randn(4, 3), c=torch.randn(4)), ValueError),  # wrong d
        (dict(x=torch.randn(4, 2), c=torch.randn(4, 1)), ValueError),  # c_noise not [B]
        (dict(x=torch.randn(4, 2), c=torch.randn(3)), ValueError),
    ],
)
def test_bad_inputs_raise(kwargs, exc):
    net = ResidualMLP(dim=2, hidden=8, num_blocks=1, emb_dim=8)
    with pytest.raises(exc):
        net(kwargs["x"], kwargs["c"])


def test_bad_labels_raise():
    cond = ResidualMLP(dim=2, hidden=8, num_blocks=1, emb_dim=8, num_classes=3)
    with pytest.raises(ValueError, match="null class"):
        cond(torch.randn(2, 2), torch.randn(2), torch.tensor([0, 4]))
    with pytest.raises(TypeError):
        cond(torch.randn(2, 2), torch.randn(2), torch.tensor([0.0, 1.0]))
    uncond = ResidualMLP(dim=2, hidden=8, num_blocks=1, emb_dim=8)
    with pytest.raises(ValueError, match="num_classes"):
        uncond(torch.randn(2, 2), torch.randn(2), torch.tensor([0, 1]))
    with pytest.raises(AttributeError):
        _ = uncond.null_class


def test_fourier_embedding():
    emb = FourierEmbedding(8)
    out = emb(torch.tensor([0.0, 0.5]))
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[0], torch.cat([torch.zeros(4), torch.ones(4)]))
    with pytest.raises(ValueError):
        FourierEmbedding(7)
