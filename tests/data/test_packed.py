import torch

from molediff.data.packed import PackedGraphs, segment_arange


def _random_graphs(m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(m):
        n = int(torch.randint(1, 7, (1,), generator=g))
        e = int(torch.randint(0, 10, (1,), generator=g))
        graphs.append(
            (
                torch.randn(n, 3, generator=g),
                torch.randint(0, 2, (n, 4), generator=g),
                torch.randint(0, n, (2, e), generator=g),
                torch.randint(0, 2, (e, 3), generator=g),
            )
        )
    return graphs


def test_segment_arange_matches_loop():
    counts = torch.tensor([3, 0, 2, 1])
    expected = torch.cat([torch.arange(int(c)) for c in counts])
    assert torch.equal(segment_arange(counts), expected)


def test_batch_matches_naive_concatenation(tmp_path):
    graphs = _random_graphs(12)
    packed = PackedGraphs.from_graphs(graphs, index=range(100, 112), metadata={"k": 1})
    packed.save(tmp_path / "g.safetensors")
    packed = PackedGraphs.load(tmp_path / "g.safetensors")
    assert packed.metadata == {"k": 1} and len(packed) == 12
    which = torch.tensor([5, 0, 7, 7])
    b = packed.batch(which)
    offset, pos, ei = 0, [], []
    for k in which.tolist():
        p, _, e, _ = graphs[k]
        pos.append(p)
        ei.append(e + offset)
        offset += p.shape[0]
    assert torch.allclose(b.pos, torch.cat(pos))
    assert torch.equal(b.edge_index, torch.cat(ei, dim=1))
    assert torch.equal(b.index, which + 100)
    assert torch.equal(torch.bincount(b.batch, minlength=4), torch.tensor([g[0].shape[0] for g in (graphs[k] for k in which.tolist())]))


def test_subset_round_trip():
    graphs = _random_graphs(8, seed=1)
    packed = PackedGraphs.from_graphs(graphs, index=range(8))
    sub = packed.subset(torch.tensor([6, 2]))
    b1, b2 = sub.batch(torch.arange(2)), packed.batch(torch.tensor([6, 2]))
    assert torch.equal(b1.edge_index, b2.edge_index) and torch.allclose(b1.pos, b2.pos)
