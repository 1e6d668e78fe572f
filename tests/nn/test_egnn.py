"""EGNN internals: the split first layer of the message MLP equals the concatenated form."""

import torch

from molediff.nn.egnn import EGNNLayer


def _concatenated(layer: EGNNLayer, h, src, dst, pair):
    return layer.phi_e(torch.cat([h[dst], h[src], pair], dim=-1))


def test_split_messages_equal_the_concatenated_mlp():
    torch.manual_seed(0)
    layer = EGNNLayer(hidden=16, edge_dim=5).double()
    h = torch.randn(9, 16, dtype=torch.float64)
    src, dst = torch.randint(0, 9, (40,)), torch.randint(0, 9, (40,))
    pair = torch.randn(40, 6, dtype=torch.float64)
    torch.testing.assert_close(layer.messages(h, src, dst, pair), _concatenated(layer, h, src, dst, pair),
                               rtol=0, atol=1e-12)


def test_split_messages_give_the_same_gradients():
    torch.manual_seed(1)
    layer = EGNNLayer(hidden=8, edge_dim=3).double()
    h = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    src, dst = torch.randint(0, 5, (12,)), torch.randint(0, 5, (12,))
    pair = torch.randn(12, 4, dtype=torch.float64)
    grads = []
    for fn in (layer.messages, lambda *a: _concatenated(layer, *a)):
        layer.zero_grad()
        h.grad = None
        fn(h, src, dst, pair).square().sum().backward()
        grads.append((h.grad.clone(), layer.phi_e[0].weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_swapping_source_and_destination_changes_the_message():
    """Guards against a split that mixes up the two node blocks (messages are directed)."""
    torch.manual_seed(2)
    layer = EGNNLayer(hidden=8, edge_dim=0).double()
    h = torch.randn(4, 8, dtype=torch.float64)
    src, dst, pair = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.randn(2, 1, dtype=torch.float64)
    assert not torch.allclose(layer.messages(h, src, dst, pair), layer.messages(h, dst, src, pair))
    torch.testing.assert_close(layer.messages(h, dst, src, pair), _concatenated(layer, h, dst, src, pair))
