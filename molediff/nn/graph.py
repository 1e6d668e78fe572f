"""Pure-torch batched graph construction: radius, k-nearest-neighbour and fully connected graphs.

PyG's ``radius_graph``/``knn_graph`` need the compiled ``torch-cluster`` or ``pyg-lib`` packages, which are
not installable everywhere; these functions follow the same conventions without them:

* ``edge_index[0]`` is the source ``j`` and ``edge_index[1]`` the target ``i`` (flow ``source_to_target``), so a
  message ``m_ij`` is aggregated onto ``edge_index[1]``;
* edges are sorted by target, then by source;
* graphs never connect to each other: ``batch`` (sorted, PyG convention) makes the computation block-diagonal.
  Distances are only evaluated between nodes of the same graph (rows padded to the largest graph, processed
  in chunks of at most ``chunk_size`` distance evaluations), never as one ``N x N`` matrix.

Each function also accepts a PyG ``Data``/``Batch`` object in place of ``pos`` (its ``.pos`` and ``.batch``
are read by :func:`graph_inputs`).

:func:`build_edges` merges such geometric edges with a caller's fixed topology, as the score networks need it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "EdgeSet",
    "NeighborLimitError",
    "build_edges",
    "fully_connected_graph",
    "graph_inputs",
    "knn_graph",
    "radius_graph",
]

_DEFAULT_CHUNK = 1 << 22


class NeighborLimitError(ValueError):
    """A node has more neighbours within the radius than ``max_num_neighbors`` allows."""


class EdgeSet(NamedTuple):
    """Edges handed to a score network's message passing.

    Attributes
    ----------
    edge_index : Tensor ``[2, E]``
        ``(source j, target i)`` pairs.
    edge_attr : Tensor ``[E, F_e + 2]``
        The caller's edge features (zeros on geometric-only edges) followed by two one-hot edge-type channels:
        ``given`` (the edge was in the caller's ``edge_index``) and ``geometric`` (added by radius/kNN/full graph
        only).
    geometric_only : Tensor ``[E]`` (bool)
        True where the edge exists only because of the geometric rule.
    """

    edge_index: Tensor
    edge_attr: Tensor
    geometric_only: Tensor


def graph_inputs(pos: Any, batch: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Return ``(pos, batch)`` from a tensor or from a PyG ``Data``/``Batch`` object (its ``.pos``/``.batch``).

    An explicit ``batch`` argument takes precedence over ``data.batch``.
    """
    if isinstance(pos, Tensor):
        return pos, batch
    data_pos = getattr(pos, "pos", None)
    if not isinstance(data_pos, Tensor):
        raise TypeError(f"expected a [N, D] tensor or an object with a .pos tensor, got {type(pos).__name__}")
    if batch is None:
        batch = getattr(pos, "batch", None)
    return data_pos, batch


def _check(pos: Tensor, batch: Tensor | None, name: str) -> tuple[Tensor, Tensor]:
    if pos.ndim != 2:
        raise ValueError(f"{name}: pos must have shape [N, D], got {tuple(pos.shape)}")
    n = pos.shape[0]
    if batch is None:
        return pos, torch.zeros(n, dtype=torch.long, device=pos.device)
    if batch.shape != (n,):
        raise ValueError(f"{name}: batch must have shape [{n}] like pos, got {tuple(batch.shape)}")
    batch = batch.to(torch.long)
    if n > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{name}: batch must be sorted (PyG convention: nodes of a graph are contiguous)")
    if n > 0 and int(batch[0]) < 0:
        raise ValueError(f"{name}: batch indices must be non-negative")
    return pos, batch


def _padded_layout(batch: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per node: first node of its graph and its graph's size; plus the largest graph size."""
    num_graphs = int(batch[-1]) + 1
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.cumsum(counts, 0) - counts
    return ptr[batch], counts[batch], int(counts.max())


def _pairwise_blocks(pos: Tensor, batch: Tensor, loop: bool, chunk_size: int):
    """Yield ``(rows, cols, sqdist)`` chunks: for target rows ``[a, b)``, padded same-graph candidates.

    ``cols`` is ``[b - a, M]`` (node indices, -1 where padded or excluded), ``sqdist`` the squared distances
    (``inf`` where invalid).
    """
    start, size, max_n = _padded_layout(batch)
    offs = torch.arange(max_n, device=pos.device)
    rows_per_chunk = max(1, chunk_size // max(max_n, 1))
    n = pos.shape[0]
    for a in range(0, n, rows_per_chunk):
        b = min(n, a + rows_per_chunk)
        rows = torch.arange(a, b, device=pos.device)
        cols = start[a:b, None] + offs[None, :]
        valid = offs[None, :] < size[a:b, None]
        if not loop:
            valid &= cols != rows[:, None]
        cols = torch.where(valid, cols, torch.full_like(cols, -1))
        diff = pos[a:b, None, :] - pos[cols.clamp_min(0)]
        sq = (diff * diff).sum(-1)
        sq = torch.where(valid, sq, torch.full_like(sq, float("inf")))
        yield rows, cols, sq


def _finish(src: Tensor, dst: Tensor, n: int) -> Tensor:
    key = dst * max(n, 1) + src
    order = torch.argsort(key)
    return torch.stack([src[order], dst[order]])


def radius_graph(
    pos: Tensor | Any,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int | None = None,
    *,
    chunk_size: int = _DEFAULT_CHUNK,
) -> Tensor:
    r"""Edges between all pairs of nodes of the same graph closer than ``r`` (``\|x_i - x_j\| \le r``).

    Parameters
    ----------
    pos : Tensor or torch_geometric.data.Data
        Node positions, or a PyG object with ``.pos`` (and ``.batch``).
    r : float
        Cutoff radius (inclusive).
    batch : Tensor, optional
        Sorted graph index of every node; all nodes form one graph if omitted.
    loop : bool
        Include self-loops ``(i, i)``.
    max_num_neighbors : int, optional
        No silent cap: if given and some node has more neighbours than this, :class:`NeighborLimitError` is
        raised (naming the node). The default ``None`` means unlimited.
    chunk_size : int
        Maximum number of distance evaluations held in memory at once.

    Returns
    -------
    Tensor
        ``edge_index`` ``[2, E]`` (long): ``[0]`` source ``j``, ``[1]`` target ``i``; sorted by target, then source.

    Shapes
    ------
    ``pos: [N, D]``, ``batch: [N]`` -> ``[2, E]``.
    """
    pos, batch = _check(*graph_inputs(pos, batch), "radius_graph")
    if r < 0:
        raise ValueError(f"radius_graph: r must be non-negative, got {r}")
    n = pos.shape[0]
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    srcs, dsts = [], []
    for rows, cols, sq in _pairwise_blocks(pos, batch, loop, chunk_size):
        hit = (sq <= r * r) & (cols >= 0)  # padding is at inf, which r = inf would admit
        if max_num_neighbors is not None:
            deg = hit.sum(1)
            if bool((deg > max_num_neighbors).any()):
                k = int(torch.argmax((deg > max_num_neighbors).to(torch.int8)))
                raise NeighborLimitError(
                    f"radius_graph: node {int(rows[k])} has {int(deg[k])} neighbours within r={r}, more than "
                    f"max_num_neighbors={max_num_neighbors}; raise the limit or pass None (unlimited)"
                )
        ri, ci = hit.nonzero(as_tuple=True)
        dsts.append(rows[ri])
        srcs.append(cols[ri, ci])
    return _finish(torch.cat(srcs), torch.cat(dsts), n)


def knn_graph(
    pos: Tensor | Any,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    *,
    chunk_size: int = _DEFAULT_CHUNK,
) -> Tensor:
    """Edges from each node's ``k`` nearest neighbours (within its graph) to the node.

    If a graph has fewer than ``k`` candidates (``n_g - 1`` without loops, ``n_g`` with), every node of it is
    connected to all of them: no error, no padding. Ties in distance are broken by the smaller node index.

    Parameters
    ----------
    pos : Tensor or torch_geometric.data.Data
        Node positions, or a PyG object with ``.pos`` (and ``.batch``).
    k : int
        Number of neighbours per target node (positive).
    batch : Tensor, optional
        Sorted graph index of every node.
    loop : bool
        Count the node itself as a candidate neighbour; it is always chosen, ahead of coincident points.
    chunk_size : int
        Maximum number of distance evaluations held in memory at once.

    Returns
    -------
    Tensor
        ``edge_index`` ``[2, E]``: ``[0]`` source ``j`` (a neighbour), ``[1]`` target ``i``; sorted by target,
        then source.

    Shapes
    ------
    ``pos: [N, D]``, ``batch: [N]`` -> ``[2, E]`` with ``E = sum_i min(k, candidates_i)``.
    """
    pos, batch = _check(*graph_inputs(pos, batch), "knn_graph")
    if k < 1:
        raise ValueError(f"knn_graph: k must be positive, got {k}")
    n = pos.shape[0]
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    srcs, dsts = [], []
    for rows, cols, sq in _pairwise_blocks(pos, batch, loop, chunk_size):
        if loop:  # the node itself first, even before coincident points of smaller index
            sq = torch.where(cols == rows[:, None], torch.full_like(sq, -1.0), sq)
        sq_sorted, order = torch.sort(sq, dim=1, stable=True)
        kk = min(k, sq.shape[1])
        chosen = torch.gather(cols, 1, order[:, :kk])
        ok = torch.isfinite(sq_sorted[:, :kk])
        ri, ci = ok.nonzero(as_tuple=True)
        dsts.append(rows[ri])
        srcs.append(chosen[ri, ci])
    return _finish(torch.cat(srcs), torch.cat(dsts), n)


def _data_device(data: Any) -> torch.device:
    """The device of a PyG-style object's node tensors (``pos``, then ``x``); the CPU if it has neither."""
    for name in ("pos", "x"):
        value = getattr(data, name, None)
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def fully_connected_graph(batch: Tensor | Any, loop: bool = False) -> Tensor:
    """All ordered pairs of nodes of the same graph.

    Parameters
    ----------
    batch : Tensor or torch_geometric.data.Data
        Sorted graph index of every node (``torch.zeros(N, dtype=torch.long)`` for a single graph), or a PyG
        object (its ``.batch``, or one graph of ``.num_nodes`` nodes if it has none).
    loop : bool
        Include self-loops.

    Returns
    -------
    Tensor
        ``edge_index`` ``[2, E]``, ``E = sum_g n_g (n_g - 1)`` (``n_g^2`` with loops), sorted by target, then source.

    Shapes
    ------
    ``batch: [N]`` -> ``[2, E]``.
    """
    if not isinstance(batch, Tensor):
        data = batch
        batch = getattr(data, "batch", None)
        if batch is None:
            num_nodes = getattr(data, "num_nodes", None)
            if num_nodes is None:
                raise TypeError(f"fully_connected_graph: expected a batch tensor, got {type(data).__name__}")
            batch = torch.zeros(int(num_nodes), dtype=torch.long, device=_data_device(data))
    if batch.ndim != 1:
        raise ValueError(f"fully_connected_graph: batch must have shape [N], got {tuple(batch.shape)}")
    _, batch = _check(torch.empty(batch.shape[0], 0, device=batch.device), batch, "fully_connected_graph")
    n = batch.shape[0]
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=batch.device)
    start, size, _ = _padded_layout(batch)
    reps = size if loop else size - 1
    dst = torch.repeat_interleave(torch.arange(n, device=batch.device), reps)
    # position of each edge within its target's block of sources
    first = torch.cumsum(reps, 0) - reps
    local = torch.arange(dst.shape[0], device=batch.device) - first[dst]
    src = start[dst] + local
    if not loop:
        src = src + (src >= dst).to(src.dtype)  # skip the node itself
    return torch.stack([src, dst])


def build_edges(
    x: Tensor,
    batch: Tensor | None,
    edge_index: Tensor | None,
    edge_attr: Tensor | None,
    *,
    edge_dim: int,
    radius: float | None = None,
    knn: int | None = None,
    fully_connected: bool = False,
) -> EdgeSet:
    """Union of the caller's edges with geometric edges built from ``x``, with edge-type channels.

    Parameters
    ----------
    x : Tensor
        Node positions ``[N, 3]`` (geometric edges are computed from them, without gradient).
    batch : Tensor, optional
        Sorted graph index ``[N]``.
    edge_index, edge_attr : Tensor, optional
        The caller's fixed topology ``[2, E0]`` and its features ``[E0, edge_dim]``.
    edge_dim : int
        Expected number of caller edge features (0: ``edge_attr`` must be ``None``).
    radius, knn, fully_connected
        At most one geometric rule.

    Returns
    -------
    EdgeSet
        Given edges first (in the caller's order, with their features), then geometric-only edges (sorted).

    Shapes
    ------
    ``x: [N, 3]`` -> ``edge_index: [2, E]``, ``edge_attr: [E, edge_dim + 2]``, ``geometric_only: [E]``.
    """
    n = x.shape[0]
    dev = x.device
    if sum([radius is not None, knn is not None, bool(fully_connected)]) > 1:
        raise ValueError("choose at most one of radius, knn and fully_connected")
    if edge_index is None and radius is None and knn is None and not fully_connected:
        raise ValueError("no edges: pass edge_index or configure the network with radius, knn or fully_connected")
    if edge_index is None:
        if edge_attr is not None:
            raise ValueError("edge_attr was given without edge_index")
        edge_index = torch.empty(2, 0, dtype=torch.long, device=dev)
        edge_attr = x.new_zeros(0, edge_dim)
    else:
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        edge_index = edge_index.to(torch.long)
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ValueError(f"edge_index refers to nodes outside [0, {n})")
        if edge_attr is None:
            if edge_dim:
                raise ValueError(f"this network expects edge_attr of width {edge_dim} with edge_index, got None")
            edge_attr = x.new_zeros(edge_index.shape[1], 0)
        if edge_attr.shape != (edge_index.shape[1], edge_dim):
            raise ValueError(
                f"edge_attr must have shape [{edge_index.shape[1]}, {edge_dim}], got {tuple(edge_attr.shape)}"
            )
    edge_attr = edge_attr.to(x.dtype)
    with torch.no_grad():
        if radius is not None:
            geo = radius_graph(x.detach(), radius, batch)
        elif knn is not None:
            geo = knn_graph(x.detach(), knn, batch)
        elif fully_connected:
            geo = fully_connected_graph(batch if batch is not None else torch.zeros(n, dtype=torch.long, device=dev))
        else:
            geo = None
    if geo is not None and edge_index.shape[1]:
        given_key = edge_index[1] * n + edge_index[0]
        geo = geo[:, ~torch.isin(geo[1] * n + geo[0], given_key)]
    if geo is None:
        geo = torch.empty(2, 0, dtype=torch.long, device=dev)
    e0, e1 = edge_index.shape[1], geo.shape[1]
    one, zero = x.new_ones, x.new_zeros
    attr = torch.cat(
        [
            torch.cat([edge_attr, one(e0, 1), zero(e0, 1)], dim=1),
            torch.cat([zero(e1, edge_dim), zero(e1, 1), one(e1, 1)], dim=1),
        ]
    )
    geometric_only = torch.cat([torch.zeros(e0, dtype=torch.bool, device=dev), torch.ones(e1, dtype=torch.bool, device=dev)])
    return EdgeSet(torch.cat([edge_index, geo], dim=1), attr, geometric_only)
