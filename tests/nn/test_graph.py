"""molediff.nn.graph against numpy brute force on random batched inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molediff.nn.graph import (
    NeighborLimitError,
    build_edges,
    fully_connected_graph,
    graph_inputs,
    knn_graph,
    radius_graph,
)


def _batch(sizes: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))


def _brute_radius(pos: np.ndarray, batch: np.ndarray, r: float, loop: bool) -> set:
    edges = set()
    for i in range(len(pos)):
        for j in range(len(pos)):
            if batch[i] != batch[j] or (i == j and not loop):
                continue
            if ((pos[i] - pos[j]) ** 2).sum() <= r * r:
                edges.add((j, i))
    return edges


def _brute_knn(pos: np.ndarray, batch: np.ndarray, k: int, loop: bool) -> set:
    edges = set()
    for i in range(len(pos)):
        cand = [j for j in range(len(pos)) if batch[j] == batch[i] and (loop or j != i)]
        d = np.array([((pos[i] - pos[j]) ** 2).sum() if j != i else -1.0 for j in cand])  # self first
        for idx in np.argsort(d, kind="stable")[:k]:
            edges.add((cand[idx], i))
    return edges


def _as_set(edge_index: torch.Tensor) -> set:
    return {(int(a), int(b)) for a, b in edge_index.t()}


def _assert_sorted(edge_index: torch.Tensor) -> None:
    key = edge_index[1] * 10_000 + edge_index[0]
    assert bool((key[1:] > key[:-1]).all()), "edges must be sorted by target, then source, without duplicates"


sizes_st = st.lists(st.integers(0, 12), min_size=1, max_size=4)


@settings(max_examples=15, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 2**31 - 1), r=st.floats(0.0, 2.5), loop=st.booleans(),
       chunk=st.sampled_from([1, 7, 1 << 20]))  # fmt: skip
def test_radius_graph_matches_brute_force(sizes, seed, r, loop, chunk):
    g = torch.Generator().manual_seed(seed)
    batch = _batch(sizes)
    pos = torch.randn(len(batch), 3, generator=g, dtype=torch.float64)
    ei = radius_graph(pos, r, batch, loop=loop, chunk_size=chunk)
    assert ei.dtype == torch.long and ei.shape[0] == 2
    _assert_sorted(ei)
    assert _as_set(ei) == _brute_radius(pos.numpy(), batch.numpy(), r, loop)


@settings(max_examples=15, deadline=None)
@given(sizes=sizes_st, seed=st.integers(0, 2**31 - 1), k=st.integers(1, 15), loop=st.booleans(),
       chunk=st.sampled_from([1, 5, 1 << 20]))  # fmt: skip
def test_knn_graph_matches_brute_force(sizes, seed, k, loop, chunk):
    g = torch.Generator().manual_seed(seed)
    batch = _batch(sizes)
    pos = torch.randn(len(batch), 3, generator=g, dtype=torch.float64)
    ei = knn_graph(pos, k, batch, loop=loop, chunk_size=chunk)
    _assert_sorted(ei)
    assert _as_set(ei) == _brute_knn(pos.numpy(), batch.numpy(), k, loop)
    # k larger than a graph: every node gets all candidates of its graph, no more
    deg = torch.bincount(ei[1], minlength=len(batch))
    n_g = torch.tensor(sizes)[batch] if len(batch) else torch.zeros(0, dtype=torch.long)
    expected = torch.clamp(n_g - (0 if loop else 1), max=k)
    assert torch.equal(deg, expected)


@settings(max_examples=10, deadline=None)
@given(sizes=sizes_st, loop=st.booleans())
def test_fully_connected_graph(sizes, loop):
    batch = _batch(sizes)
    ei = fully_connected_graph(batch, loop=loop)
    _assert_sorted(ei)
    b = batch.numpy()
    expected = {(j, i) for i in range(len(b)) for j in range(len(b)) if b[i] == b[j] and (loop or i != j)}
    assert _as_set(ei) == expected


def test_empty_and_single_node():
    empty = torch.zeros(0, 3)
    assert radius_graph(empty, 1.0).shape == (2, 0)
    assert knn_graph(empty, 3).shape == (2, 0)
    assert fully_connected_graph(torch.zeros(0, dtype=torch.long)).shape == (2, 0)
    one = torch.zeros(1, 3)
    assert radius_graph(one, 1.0).shape == (2, 0)
    assert knn_graph(one, 3).shape == (2, 0)
    assert radius_graph(one, 1.0, loop=True).tolist() == [[0], [0]]
    # an empty graph in the middle of a batch (graph 1 has no nodes)
    batch = torch.tensor([0, 0, 2, 2])
    pos = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0.0, 0, 0], [0.5, 0, 0]])
    assert radius_graph(pos, 1.0, batch).tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]


def test_no_edges_across_graphs():
    pos = torch.zeros(4, 3)  # all nodes at the same point
    batch = torch.tensor([0, 0, 1, 1])
    assert _as_set(radius_graph(pos, 1.0, batch)) == {(1, 0), (0, 1), (3, 2), (2, 3)}


def test_max_num_neighbors_raises_instead_of_truncating():
    pos = torch.zeros(5, 3)
    assert radius_graph(pos, 1.0, max_num_neighbors=4).shape == (2, 20)
    with pytest.raises(NeighborLimitError, match="node 0 has 4 neighbours"):
        radius_graph(pos, 1.0, max_num_neighbors=3)


def test_input_validation():
    with pytest.raises(ValueError, match="sorted"):
        radius_graph(torch.zeros(3, 3), 1.0, torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        knn_graph(torch.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be positive"):
        knn_graph(torch.zeros(3, 3), 0)


def test_accepts_pyg_batch():
    from torch_geometric.data import Batch, Data

    g = torch.Generator().manual_seed(0)
    data = Batch.from_data_list([Data(pos=torch.randn(n, 3, generator=g)) for n in (3, 5)])
    pos, batch = graph_inputs(data)
    assert torch.equal(radius_graph(data, 1.2), radius_graph(pos, 1.2, batch))
    assert torch.equal(knn_graph(data, 2), knn_graph(pos, 2, batch))
    assert torch.equal(fully_connected_graph(data), fully_connected_graph(batch))


def test_a_single_pyg_graph_without_batch_builds_on_its_own_device():
    """A lone ``Data`` (no ``.batch``) had its graph index made on the CPU whatever its device: on a GPU the
    edges came back on the CPU. The meta device stands in for a GPU here: the index must be made there, so
    the build reaches a meta tensor's ``.item()`` instead of quietly returning CPU edges."""
    from torch_geometric.data import Data

    assert fully_connected_graph(Data(pos=torch.zeros(3, 3))).device.type == "cpu"
    with pytest.raises(RuntimeError, match="meta"):
        fully_connected_graph(Data(pos=torch.zeros(3, 3, device="meta")))
    with pytest.raises(RuntimeError, match="meta"):
        fully_connected_graph(Data(x=torch.zeros(3, 4, device="meta"), num_nodes=3))


def test_build_edges_union_and_types():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    given = torch.tensor([[0, 2], [2, 0]])  # a "bond" 0 <-> 2 far apart
    attr = torch.tensor([[7.0], [8.0]])
    es = build_edges(pos, None, given, attr, edge_dim=1, radius=1.5)
    pairs = [tuple(p) for p in es.edge_index.t().tolist()]
    assert pairs == [(0, 2), (2, 0), (1, 0), (0, 1)]
    assert es.edge_attr.tolist() == [[7, 1, 0], [8, 1, 0], [0, 0, 1], [0, 0, 1]]
    assert es.geometric_only.tolist() == [False, False, True, True]
    # a given edge that is also geometric appears once, as a given edge
    es = build_edges(pos, None, torch.tensor([[1], [0]]), torch.ones(1, 1), edge_dim=1, radius=1.5)
    assert [tuple(p) for p in es.edge_index.t().tolist()] == [(1, 0), (0, 1)]
    assert es.geometric_only.tolist() == [False, True]
    with pytest.raises(ValueError, match="no edges"):
        build_edges(pos, None, None, None, edge_dim=0)
    with pytest.raises(ValueError, match="expects edge_attr"):
        build_edges(pos, None, given, None, edge_dim=1)


def test_infinite_radius_connects_each_graph_fully_without_padding_slots():
    """``r = inf`` (no cutoff) must give the fully connected graph, never the ``-1`` of a padding slot."""
    batch = torch.tensor([0, 0, 0, 1, 1])  # unequal sizes: graph 1 is padded to 3 slots
    pos = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ei = radius_graph(pos, float("inf"), batch)
    assert int(ei.min()) >= 0
    assert torch.equal(ei, fully_connected_graph(batch))
    assert radius_graph(pos, float("inf"), batch, max_num_neighbors=2).shape == (2, 8)


def test_knn_with_loops_always_chooses_the_node_itself():
    """The docstring promises the node itself is always chosen with ``loop=True``, also among coincident points."""
    pos = torch.zeros(3, 3)  # three coincident points: every candidate is at distance 0
    assert _as_set(knn_graph(pos, 1, loop=True)) == {(0, 0), (1, 1), (2, 2)}
    ei = knn_graph(pos, 2, loop=True)
    assert all((i, i) in _as_set(ei) for i in range(3))
    _assert_sorted(ei)
