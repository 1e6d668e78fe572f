"""Fully connected graphs as dense blocks: graphs stacked into ``[B, n, n, F]`` pair tensors.

On a fully connected graph every ordered pair of nodes is an edge, so message passing needs no
gather or scatter at all: pair terms are broadcasts of node terms (``a_i + b_j``) and aggregation is
a sum over one axis. Grouping the graphs of a batch by size makes each group a dense, unpadded
block. This is an execution layout, not a different model: a network computes the same function on
it as on the sparse edge list (tests compare the two).

One block per size is the least arithmetic, but each block costs a few dozen kernel launches per
layer. Where launches, not arithmetic, bound the step (a GPU on small molecules: a QM9 batch of
1,024 holds about 19 sizes), ``max_blocks`` merges neighbouring sizes into fewer blocks padded to their largest
size, chosen to add the fewest padded pairs; a padded block carries a node mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from molediff.nn.graph import EdgeSet

__all__ = ["DenseBlock", "dense_blocks", "merge_sizes"]


@dataclass
class DenseBlock:
    """``B`` graphs, each padded to ``n`` nodes where ``mask`` is given.

    Attributes
    ----------
    nodes : Tensor ``[B, n]``
        Global node indices, graph by graph, in node order (padding slots repeat the graph's first node).
    pair_attr : Tensor ``[B, n, n, F]``
        Features of edge ``(source j -> target i)`` at ``[b, i, j]`` (zeros on the diagonal and padding).
    mask : Tensor ``[B, n]`` (bool) or None
        Which slots hold a real node; ``None``: all of them (every graph has ``n`` nodes).
    counts : Tensor ``[B]`` or None
        Nodes per graph; ``None`` when ``mask`` is.
    """

    nodes: Tensor
    pair_attr: Tensor
    mask: Tensor | None = None
    counts: Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.nodes.shape[1])


def merge_sizes(sizes: list[int], graphs_per_size: list[int], max_blocks: int) -> list[list[int]]:
    """Split the sorted distinct ``sizes`` into at most ``max_blocks`` runs of neighbouring sizes.

    Each run becomes one block padded to its largest size; the split minimises the pairs computed,
    ``sum over runs of (graphs in run) * (largest size)**2`` (dynamic programming over the cut points).

    Returns
    -------
    list of list of int
        The runs, in increasing size.
    """
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
    u = len(sizes)
    if u <= max_blocks:
        return [[s] for s in sizes]
    prefix = [0]
    for c in graphs_per_size:
        prefix.append(prefix[-1] + c)

    def cost(a: int, b: int) -> int:  # sizes[a:b] padded to sizes[b - 1]
        return (prefix[b] - prefix[a]) * sizes[b - 1] ** 2

    inf = float("inf")
    best = [[inf] * (u + 1) for _ in range(max_blocks + 1)]  # best[k][b]: first b sizes in k runs
    cut = [[0] * (u + 1) for _ in range(max_blocks + 1)]
    best[0][0] = 0
    for k in range(1, max_blocks + 1):
        for b in range(1, u + 1):
            for a in range(k - 1, b):
                c = best[k - 1][a] + cost(a, b)
                if c < best[k][b]:
                    best[k][b], cut[k][b] = c, a
    k = min(range(1, max_blocks + 1), key=lambda j: best[j][u])
    runs, b = [], u
    while k > 0:
        a = cut[k][b]
        runs.append(sizes[a:b])
        b, k = a, k - 1
    return runs[::-1]


def dense_blocks(batch: Tensor, edges: EdgeSet, max_blocks: int | None = None) -> list[DenseBlock] | None:
    """Dense blocks of a fully connected edge set, or ``None`` if it is not exactly that.

    ``edges`` must hold every ordered pair ``j != i`` of nodes of the same graph exactly once (what
    :func:`molediff.nn.graph.build_edges` returns with ``fully_connected=True`` when the caller's edges
    are distinct, in-graph and loop-free); otherwise ``None`` tells the caller to stay sparse.

    Parameters
    ----------
    max_blocks
        ``None``: one unpadded block per graph size. Otherwise at most this many blocks, sizes merged
        by :func:`merge_sizes` and padded (blocks that hold one size stay unpadded).

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
    sizes, per_size = torch.unique(counts, return_counts=True)
    sizes, per_size = sizes.tolist(), per_size.tolist()
    if sizes and sizes[0] == 0:
        sizes, per_size = sizes[1:], per_size[1:]
    runs = [[s] for s in sizes] if max_blocks is None else merge_sizes(sizes, per_size, max_blocks)
    blocks = []
    for run in runs:
        size = run[-1]
        in_run = (counts >= run[0]) & (counts <= size)
        graphs = in_run.nonzero().squeeze(1)
        arange = torch.arange(size, device=batch.device)
        nodes = start[graphs, None] + arange
        mask = block_counts = None
        if len(run) > 1:
            block_counts = counts[graphs]
            mask = arange[None, :] < block_counts[:, None]
            nodes = torch.where(mask, nodes, start[graphs, None])
        slot = torch.full((num_graphs,), -1, dtype=torch.long, device=batch.device)
        slot[graphs] = torch.arange(graphs.numel(), device=batch.device)
        mine = slot[graph_of_edge] >= 0
        pair = edges.edge_attr.new_zeros(graphs.numel(), size, size, feat)
        pair[slot[graph_of_edge[mine]], local_dst[mine], local_src[mine]] = edges.edge_attr[mine]
        blocks.append(DenseBlock(nodes, pair, mask, block_counts))
    return blocks
