"""EGNN internals: the split first layer of the message MLP equals the concatenated form."""

import pytest
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


# --- dense execution of fully connected graphs, and bf16 edge precision -----------------------------------

from molediff.nn.egnn import EGNN  # noqa: E402


def _molecule_batch(sizes, edge_dim=3, seed=0, dtype=torch.float64):
    """Graphs of the given sizes with a random 'bond' subset carrying features (like a featurised batch)."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    src, dst, start = [], [], 0
    for n in sizes:
        for i in range(n - 1):  # a chain plus one chord per graph, both directions
            src += [start + i, start + i + 1]
            dst += [start + i + 1, start + i]
        if n > 3:
            src += [start, start + n - 1]
            dst += [start + n - 1, start]
        start += n
    edge_index = torch.tensor([src, dst], dtype=torch.long)
    edge_attr = torch.rand(edge_index.shape[1], edge_dim, generator=g, dtype=dtype)
    node_attr = torch.rand(batch.numel(), 4, generator=g, dtype=dtype)
    x = torch.randn(batch.numel(), 3, generator=g, dtype=dtype) * 1.5
    return x, dict(node_attr=node_attr, batch=batch, edge_index=edge_index, edge_attr=edge_attr)


def _net(seed=0):
    torch.manual_seed(seed)
    return EGNN(node_dim=4, edge_dim=3, hidden=16, num_layers=3, fully_connected=True).double()


def test_dense_execution_equals_the_sparse_edge_list():
    net = _net()
    x, cond = _molecule_batch([5, 3, 5, 1, 7, 3], seed=1)  # mixed sizes, repeated sizes, a single atom
    c_noise = torch.rand(x.shape[0], dtype=torch.float64)
    net.dense_execution = False
    sparse = net(x, c_noise, **cond)
    net.dense_execution = True
    dense = net(x, c_noise, **cond)
    torch.testing.assert_close(dense, sparse, rtol=0, atol=1e-12)


def test_dense_execution_gives_the_same_gradients():
    net = _net(seed=3)
    x, cond = _molecule_batch([4, 6, 4], seed=2)
    c_noise = torch.rand(x.shape[0], dtype=torch.float64)
    grads = []
    for dense in (False, True):
        net.dense_execution = dense
        net.zero_grad()
        xx = x.clone().requires_grad_(True)
        net(xx, c_noise, **cond).square().sum().backward()
        grads.append([xx.grad] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_dense_blocks_refuse_an_edge_set_that_is_not_exactly_fully_connected():
    from molediff.nn.dense_blocks import dense_blocks
    from molediff.nn.graph import EdgeSet, fully_connected_graph

    batch = torch.tensor([0, 0, 0, 1, 1])
    full = fully_connected_graph(batch)
    attr = torch.randn(full.shape[1], 2)
    blocks = dense_blocks(batch, EdgeSet(full, attr, torch.ones(full.shape[1], dtype=torch.bool)))
    assert [b.size for b in blocks] == [2, 3]
    # the feature of edge j -> i sits at [b, i, j]
    k = 1  # edge number 1 of the full graph
    j, i = full[:, k].tolist()
    three = next(b for b in blocks if b.size == 3)
    torch.testing.assert_close(three.pair_attr[0, i, j], attr[k])
    missing = full[:, 1:]
    assert dense_blocks(batch, EdgeSet(missing, attr[1:], torch.ones(missing.shape[1], dtype=torch.bool))) is None
    duplicated = torch.cat([full[:, :1], full[:, 2:], full[:, :1]], dim=1)  # same count, one pair twice
    assert dense_blocks(batch, EdgeSet(duplicated, attr, torch.ones(full.shape[1], dtype=torch.bool))) is None


def test_bf16_edges_stay_close_to_fp32_and_keep_fp32_outputs():
    from molediff.nn.precision import edge_precision

    net = _net(seed=4).float()
    x, cond = _molecule_batch([6, 6, 9], seed=5, dtype=torch.float32)
    c_noise = torch.rand(x.shape[0])
    with torch.no_grad():
        ref = net(x, c_noise, **cond)
        for dense in (False, True):
            net.dense_execution = dense
            with edge_precision(net, "bf16"):
                out = net(x, c_noise, **cond)
            assert out.dtype == torch.float32
            err = (out - ref).norm() / ref.norm()
            assert 0 < err < 0.03, err  # rounded (not silently fp32), yet close
    assert net.edge_dtype is None  # restored on exit


def test_sampling_reuses_the_graph_layout_only_for_the_same_unchanged_graph():
    net = _net(seed=6)
    x, cond = _molecule_batch([5, 3, 5], seed=7)
    c_noise = torch.rand(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        first = net(x, c_noise, **cond)
        layout = net._topology_cache[2]
        again = net(x * 1.1, c_noise, **cond)  # new positions, same graph: layout reused
        assert net._topology_cache[2] is layout
        fresh = _net(seed=6)  # same weights, nothing cached
        torch.testing.assert_close(again, fresh(x * 1.1, c_noise, **cond), rtol=0, atol=1e-12)
        cond["edge_attr"].mul_(0.5)  # an in-place change of the graph invalidates it
        changed = net(x, c_noise, **cond)
        assert net._topology_cache[2] is not layout
        torch.testing.assert_close(changed, _net(seed=6)(x, c_noise, **cond), rtol=0, atol=1e-12)
        assert not torch.allclose(changed, first)
    net(x, c_noise, **cond)  # with gradients (training): no cache involved, same result


def test_merged_padded_blocks_equal_the_sparse_edge_list_values_and_gradients():
    net = _net(seed=7)
    x, cond = _molecule_batch([5, 3, 5, 1, 7, 3, 2, 6], seed=8)  # a single atom and a pair padded too
    c_noise = torch.rand(x.shape[0], dtype=torch.float64)
    outs = []
    for dense, limit in ((False, None), (True, None), (True, 2), (True, 1)):
        net.dense_execution, net.max_dense_blocks = dense, limit
        net.zero_grad()
        xx = x.clone().requires_grad_(True)
        out = net(xx, c_noise, **cond)
        out.square().sum().backward()
        outs.append([out.detach(), xx.grad] + [p.grad.clone() for p in net.parameters()])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


def test_inference_in_runs_of_graphs_equals_whole_blocks():
    net = _net(seed=9)
    x, cond = _molecule_batch([5, 3, 5, 5, 4, 3, 5, 2, 1], seed=10)
    c_noise = torch.rand(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        net.dense_chunk_pairs = None
        whole = net(x, c_noise, **cond)
        sparse_net = _net(seed=9)
        sparse_net.dense_execution = False
        torch.testing.assert_close(whole, sparse_net(x, c_noise, **cond), rtol=0, atol=1e-10)
        for limit, pairs in ((None, 25), (None, 30), (None, 1), (2, 50), (1, 26)):
            net.max_dense_blocks, net.dense_chunk_pairs = limit, pairs  # one graph per run up to several
            torch.testing.assert_close(net(x, c_noise, **cond), whole, rtol=0, atol=1e-10)


def test_merge_sizes_pads_the_fewest_pairs():
    from molediff.nn.dense_blocks import merge_sizes

    assert merge_sizes([3, 4, 20], [1, 1, 1], 5) == [[3], [4], [20]]
    # two blocks: {3, 4} padded to 4 costs 2*16 + 400; {3}, {4, 20} would cost 9 + 2*400
    assert merge_sizes([3, 4, 20], [1, 1, 1], 2) == [[3, 4], [20]]
    # many small graphs: keep them unpadded and pad 19 to 20 instead (100*4 + 2*400 < 101*361 + 400)
    assert merge_sizes([2, 19, 20], [100, 1, 1], 2) == [[2], [19, 20]]
    # many graphs of size 19: padding them to 20 is dear, padding one 2 to 19 is cheap
    assert merge_sizes([2, 19, 20], [1, 100, 1], 2) == [[2, 19], [20]]
    assert merge_sizes([5, 6, 7], [1, 1, 1], 1) == [[5, 6, 7]]
    with pytest.raises(ValueError):
        merge_sizes([5], [1], 0)


def test_dense_blocks_respect_the_block_limit_and_mask_the_padding():
    from molediff.nn.dense_blocks import dense_blocks
    from molediff.nn.graph import EdgeSet, fully_connected_graph

    batch = torch.repeat_interleave(torch.arange(5), torch.tensor([2, 3, 3, 5, 6]))
    full = fully_connected_graph(batch)
    attr = torch.randn(full.shape[1], 2)
    blocks = dense_blocks(batch, EdgeSet(full, attr, torch.ones(full.shape[1], dtype=torch.bool)), max_blocks=2)
    assert len(blocks) == 2 and sum(b.nodes.shape[0] for b in blocks) == 5
    for b in blocks:
        if b.mask is None:
            continue
        assert b.mask.sum(1).tolist() == b.counts.tolist()
        # padded slots carry no edge features
        pad = ~b.mask
        assert b.pair_attr[pad[:, :, None].expand(-1, -1, b.size)].abs().sum() == 0
        assert b.pair_attr[pad[:, None, :].expand(-1, b.size, -1)].abs().sum() == 0


def test_auto_layout_is_dense_on_cpu():
    net = _net(seed=9)
    x, cond = _molecule_batch([4, 6], seed=10)
    assert net.dense_execution == "auto"
    with torch.no_grad():
        _, blocks = net._topology(x, cond["batch"], cond["edge_index"], cond["edge_attr"])
    assert blocks is not None and [b.size for b in blocks] == [4, 6]
