"""Fully connected graphs as dense blocks: graphs of equal size stacked into ``[B, n, n, F]`` pair tensors.

On a fully connected graph every ordered pair of nodes is an edge, so message passing needs no
gather or scatter at all: pair terms are broadcasts of node terms (``a_i + b_j``) and aggregation is
a sum over one axis. Grouping the graphs of a batch by size makes each group a dense, unpadded
block. This is an execution layout, not a different model: a network computes the same function on
it as on the sparse edge list (tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from molediff.nn.graph import EdgeSet

__all__ = ["DenseBlock", "dense_blocks"]


@dataclass
class DenseBlock:
    """``B`` graphs of ``n`` nodes each.

    Attributes
    ----------
    nodes : Tensor ``[B, n]``
        Global node indices, graph by graph, in node order.
    pair_attr : Tensor ``[B, n, n, F]``
        Features of edge ``(source j -> target i)`` at ``[b, i, j]`` (zeros on the diagonal).
    """

    nodes: Tensor
    pair_attr: Tensor

    @property
    def size(self) -> int:
        return int(self.nodes.shape[1])


def dense_blocks(batch: Tensor, edges: EdgeSet) -> list[DenseBlock] | None:
    """Dense per-size blocks of a fully connected edge set, or ``None`` if it is not exactly that.

    ``edges`` must hold every ordered pair ``j != i`` of nodes of the same graph exactly once (what
    :func:`molediff.nn.graph.build_edges` returns with ``fully_connected=True`` when the caller's edges
    are distinct, in-graph and loop-free); otherwise ``None`` tells the caller to stay sparse.

    Shapes
    ------
    ``batch: [N]`` (sorted), ``edges.edge_index: [2, E]``, ``edges.edge_attr: [E, F]``.
    """
    src, dst = edges.edge_index
    n_nodes = batch.shape[0]
    if n_nodes == 0:
        return []
    num_graphs = int(batch[-1]) + 1
    counts = torch.bincount(batch, minlength=num_graphs)
    if int(edges.edge_index.shape[1]) != int((counts * (counts - 1)).sum()):
        return None
    if bool((batch[src] != batch[dst]).any()) or bool((src == dst).any()):
        return None
    if int(torch.unique(dst * n_nodes + src).numel()) != int(src.numel()):  # a duplicate hides a missing pair
        return None
    start = torch.cumsum(counts, 0) - counts
    graph_of_edge = batch[dst]
    local_dst = dst - start[graph_of_edge]
    local_src = src - start[graph_of_edge]
    feat = edges.edge_attr.shape[1]
    blocks = []
    for size in torch.unique(counts).tolist():
        if size == 0:
            continue
        graphs = (counts == size).nonzero().squeeze(1)
        nodes = start[graphs, None] + torch.arange(size, device=batch.device)
        slot = torch.full((num_graphs,), -1, dtype=torch.long, device=batch.device)
        slot[graphs] = torch.arange(graphs.numel(), device=batch.device)
        mine = slot[graph_of_edge] >= 0
        pair = edges.edge_attr.new_zeros(graphs.numel(), size, size, feat)
        pair[slot[graph_of_edge[mine]], local_dst[mine], local_src[mine]] = edges.edge_attr[mine]
        blocks.append(DenseBlock(nodes, pair))
    return blocks
