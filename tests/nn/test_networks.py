"""Symmetry properties of the three score networks (hypothesis: batched graphs of 2-40 nodes, float32/64)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molediff.nn.egnn import EGNN
from molediff.nn.gfn import GraphFieldNetwork
from molediff.nn.tensor_field import TensorFieldNetwork
from molediff.nn.testing import (
    assert_e3nn_equivariant,
    assert_equivariant_vector_field,
    assert_permutation_equivariant,
    assert_reflection_equivariant,
    assert_translation_invariant,
)

NODE_DIM, EDGE_DIM = 5, 3
SMALL = {
    "egnn": lambda **kw: EGNN(NODE_DIM, EDGE_DIM, hidden=32, num_layers=3, **kw),
    "gfn": lambda **kw: GraphFieldNetwork(NODE_DIM, EDGE_DIM, hidden=32, num_layers=3, **kw),
    "tfn": lambda **kw: TensorFieldNetwork(NODE_DIM, EDGE_DIM, hidden=8, num_layers=3, lmax=2, radial_hidden=8, **kw),
}
GEOMETRY = {"radius": {"radius": 1.8}, "full": {"fully_connected": True}}


@functools.cache
def make_net(name: str, geometry: str, dtype: torch.dtype) -> torch.nn.Module:
    """Build under the target default dtype: e3nn stores its coupling coefficients in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        return SMALL[name](**GEOMETRY[geometry]).eval()
    finally:
        torch.set_default_dtype(old)


def make_inputs(sizes: list[int], seed: int, dtype: torch.dtype) -> dict:
    """Random molecules-like batch: positions, per-node noise, node features, chain 'bonds' with features."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    n = len(batch)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.2
    ptr = torch.cumsum(torch.tensor([0, *sizes]), 0)
    src = torch.cat([torch.arange(ptr[k], ptr[k + 1] - 1) for k in range(len(sizes))])
    bonds = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], dim=1)
    sigma = torch.exp(torch.randn(len(sizes), generator=g, dtype=torch.float64))[batch]
    return {
        "x": x.to(dtype),
        "c_noise": (sigma.log() / 4).to(dtype),
        "node_attr": torch.randn(n, NODE_DIM, generator=g, dtype=torch.float64).to(dtype),
        "batch": batch,
        "edge_index": bonds,
        "edge_attr": torch.randn(bonds.shape[1], EDGE_DIM, generator=g, dtype=torch.float64).to(dtype),
    }


def field(net, inp):
    cond = {k: v for k, v in inp.items() if k not in ("x", "c_noise")}
    return lambda x: net(x, inp["c_noise"], **cond)


graphs = st.lists(st.integers(2, 40), min_size=1, max_size=3)
dtypes = st.sampled_from([torch.float32, torch.float64])
PROPS = settings(max_examples=10, deadline=None, derandomize=True)  # the same examples in every CI run


@pytest.mark.parametrize("name", ["egnn", "gfn", "tfn"])
@PROPS
@given(sizes=graphs, seed=st.integers(0, 2**31 - 1), dtype=dtypes, geometry=st.sampled_from(["radius", "full"]))
def test_rotation_translation_permutation(name, sizes, seed, dtype, geometry):
    net = make_net(name, geometry, dtype)
    inp = make_inputs(sizes, seed, dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f = field(net, inp)
        out = f(inp["x"])
        assert out.shape == inp["x"].shape and out.dtype == dtype and bool(torch.isfinite(out).all())
        assert_equivariant_vector_field(f, inp["x"], rotations=2, generator=gen)
        assert_translation_invariant(f, inp["x"], batch=inp["batch"], trials=2, generator=gen)
        assert_permutation_equivariant(net, **inp, generator=gen)


@pytest.mark.parametrize("name", ["egnn", "gfn"])
@PROPS
@given(sizes=graphs, seed=st.integers(0, 2**31 - 1), dtype=dtypes)
def test_e3_networks_are_reflection_equivariant(name, sizes, seed, dtype):
    inp = make_inputs(sizes, seed, dtype)
    with torch.no_grad():
        f = field(make_net(name, "radius", dtype), inp)
        assert_reflection_equivariant(f, inp["x"], expect=True, rotations=2, generator=torch.Generator().manual_seed(seed))


@PROPS
@given(sizes=st.lists(st.integers(4, 40), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1), dtype=dtypes)
def test_tensor_field_tells_mirror_images_apart(sizes, seed, dtype):
    inp = make_inputs(sizes, seed, dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f = field(make_net("tfn", "radius", dtype), inp)
        # asserted both ways: rotations agree to round-off, reflections differ by a clear margin
        assert_equivariant_vector_field(f, inp["x"], rotations=1, generator=gen)
        assert_reflection_equivariant(f, inp["x"], expect=False, rotations=2, generator=gen, margin=1e-3)
        with pytest.raises(AssertionError):
            assert_reflection_equivariant(f, inp["x"], expect=True, rotations=1, generator=gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_field_with_e3nn_assert_equivariant(dtype):
    inp = make_inputs([7, 12], 3, dtype)
    f = field(make_net("tfn", "radius", dtype), inp)
    with torch.no_grad():
        assert_e3nn_equivariant(f, inp["x"], parity=False)
        with pytest.raises(AssertionError):
            assert_e3nn_equivariant(f, inp["x"], parity=True)


@pytest.mark.parametrize("cls", [EGNN, GraphFieldNetwork, TensorFieldNetwork])
def test_default_sizes_and_gradients(cls):
    net = cls(node_dim=NODE_DIM, edge_dim=EDGE_DIM, radius=2.0)
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.4e6 <= n_params <= 1.6e6, n_params
    inp = make_inputs([18, 18], 0, torch.float32)
    out = net(inp["x"], inp["c_noise"], **{k: v for k, v in inp.items() if k not in ("x", "c_noise")})
    out.square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name


@pytest.mark.parametrize("name", ["egnn", "gfn", "tfn"])
def test_signature_errors(name):
    net = make_net(name, "radius", torch.float32)
    inp = make_inputs([5], 0, torch.float32)
    cond = {k: v for k, v in inp.items() if k not in ("x", "c_noise")}
    with pytest.raises(ValueError, match="c_noise"):
        net(inp["x"], inp["c_noise"][:3], **cond)
    with pytest.raises(ValueError, match="node_attr"):
        net(inp["x"], inp["c_noise"], **{**cond, "node_attr": None})
    with pytest.raises(ValueError, match="edge_attr"):
        net(inp["x"], inp["c_noise"], **{**cond, "edge_attr": inp["edge_attr"][:, :1]})
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        net(inp["x"][:, :2], inp["c_noise"], **cond)


def test_geometric_edges_only_and_noise_dependence():
    """Without caller edges the radius graph alone is used; the output depends on c_noise."""
    torch.manual_seed(0)
    net = EGNN(0, 0, hidden=16, num_layers=2, knn=4)
    x = torch.randn(9, 3)
    a, b = net(x, torch.zeros(9)), net(x, torch.ones(9))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["egnn", "gfn", "tfn"])
def test_radius_edges_enter_the_graph_continuously(name):
    """An edge entering the radius has envelope weight 0, so it must not change the output by a jump.

    Regression: the mean aggregation divided by the *number* of edges, so a node's normaliser jumped from
    1/k to 1/(k + 1) the moment a neighbour crossed the radius, although that neighbour's message was 0.
    """
    net = make_net(name, "radius", torch.float64)  # radius 1.8
    inp = make_inputs([4], 0, torch.float64)
    cond = {k: v for k, v in inp.items() if k not in ("x", "c_noise")}  # chain bonds 0-1-2-3
    outs = []
    with torch.no_grad():
        for r in (1.8 - 1e-9, 1.8 + 1e-9):  # node 3 just inside / just outside the radius of node 0
            x = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.4, 0.0], [0.3, 1.1, 0.2], [r, 0.0, 0.0]], dtype=torch.float64)
            outs.append(net(x, inp["c_noise"], **cond))
    assert (outs[0] - outs[1]).abs().max() <= 1e-6 * outs[0].abs().max()


@pytest.mark.parametrize("kwargs", [{"lmax": 0}, {"irreps_hidden": "8x0e + 4x0o"}, {"irreps_hidden": "8x0e + 2x2e"}])
def test_tensor_field_refuses_hidden_irreps_that_cannot_produce_a_vector(kwargs):
    """Without ``1o``/``1e`` hidden features (or with ``lmax = 0`` spherical harmonics, which never create them
    from the ``0e`` input) the ``1o + 1e`` read-out is identically zero: refuse the configuration."""
    with pytest.raises(ValueError, match="1o"):
        TensorFieldNetwork(hidden=8, num_layers=2, fully_connected=True, **kwargs)
