"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling 2021) as a score network.

Messages ``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, e_ij)`` update invariant node features, and coordinates move
along relative positions: ``x_i <- x_i + mean_j (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij)``. The output is
the total displacement ``x_L - x_0`` (accumulated directly, without the cancellation of subtracting two
positions), which is rotation- and reflection-equivariant and translation-invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molediff.nn.dense_blocks import DenseBlock, dense_blocks
from molediff.nn.embeddings import MLP, NodeEmbedding, cosine_cutoff
from molediff.nn.graph import EdgeSet, build_edges

__all__ = ["EGNN", "EGNNLayer"]


class EGNNLayer(nn.Module):
    """One EGNN layer with mean aggregation and distance-normalised coordinate updates.

    Parameters
    ----------
    hidden : int
        Width of the node features ``h``.
    edge_dim : int
        Width of the edge features ``e_ij``.
    update_features : bool
        Update ``h`` (False for the last layer, whose features would be unused).

    Shapes
    ------
    ``h: [N, hidden]``, ``x: [N, 3]``, ``edge_index: [2, E]``, ``edge_attr: [E, edge_dim]``, ``weight: [E, 1]``,
    ``inv_deg: [N, 1]`` -> ``(h: [N, hidden], dx: [N, 3])``.
    """

    def __init__(self, hidden: int, edge_dim: int, update_features: bool = True) -> None:
        super().__init__()
        self.phi_e = MLP([2 * hidden + 1 + edge_dim, hidden, hidden], last_activation=True)
        self.phi_x = MLP([hidden, hidden, 1])
        self.phi_h = MLP([2 * hidden, hidden, hidden]) if update_features else None
        self.norm = nn.LayerNorm(hidden) if update_features else None

    def messages(self, h: Tensor, src: Tensor, dst: Tensor, pair: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``phi_e(cat[h_dst, h_src, pair])`` with the first linear layer split by input block.

        ``W [h_i; h_j; p_ij] = (W_1 h)_i + (W_2 h)_j + W_3 p_ij``: the node blocks are multiplied once
        per node and gathered, instead of once per edge on a ``[E, 2 hidden + ...]`` concatenation.
        Same function and parameters as the concatenated form, about half the edge FLOPs.

        ``dtype`` is the precision of the per-edge work (default ``h.dtype``); node projections are
        computed in ``h.dtype`` and cast once per node.

        Shapes
        ------
        ``h: [N, hidden]``, ``src, dst: [E]``, ``pair: [E, 1 + edge_dim]`` -> ``[E, hidden]`` in ``dtype``.
        """
        dtype = dtype or h.dtype
        first = self.phi_e[0]
        hidden = h.shape[-1]
        w = first.weight
        node = (h @ torch.cat([w[:, :hidden], w[:, hidden : 2 * hidden]], dim=0).T).to(dtype)  # [N, 2 out]
        to_dst, to_src = node.split(first.out_features, dim=-1)
        pre = torch.addmm(first.bias.to(dtype), pair.to(dtype), w[:, 2 * hidden :].T.to(dtype))
        pre = pre + to_dst[dst] + to_src[src]
        return run_mlp(list(self.phi_e)[1:], pre)

    def forward(
        self, h: Tensor, x: Tensor, edge_index: Tensor, edge_attr: Tensor, weight: Tensor, inv_deg: Tensor,
        edge_dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One message-passing step; ``edge_dtype`` (default ``h.dtype``) is the precision of the
        per-edge MLPs, while positions, distances, the coordinate update and the aggregation sums
        stay in ``x.dtype`` / ``h.dtype``."""
        src, dst = edge_index
        rel = x[dst] - x[src]
        sq = (rel * rel).sum(-1, keepdim=True)
        m = self.messages(h, src, dst, torch.cat([sq, edge_attr], dim=-1), edge_dtype) * weight.to(edge_dtype or h.dtype)
        step = rel / (torch.sqrt(sq + 1e-12) + 1.0) * run_mlp(self.phi_x, m).to(x.dtype) * weight
        dx = torch.zeros_like(x).index_add_(0, dst, step) * inv_deg
        if self.phi_h is None:
            return h, dx
        agg = torch.zeros_like(h).index_add_(0, dst, m.to(h.dtype)) * inv_deg
        h = h + self.phi_h(torch.cat([self.norm(h), agg], dim=-1))
        return h, dx

    def dense_forward(
        self, h: Tensor, x: Tensor, pair_attr: Tensor, inv_deg: float | Tensor, edge_dtype: torch.dtype | None = None,
        pair_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` on ``B`` fully connected graphs of ``n`` nodes (a :class:`~molediff.nn.dense_blocks.DenseBlock`).

        Pair ``[b, i, j]`` is the edge ``j -> i``. The diagonal ``i == j`` is computed and then dropped (its
        coordinate step is exactly zero because ``x_i - x_i = 0``; its message is subtracted from the sum), so
        the result equals the sparse forward on the same graphs with all edge weights 1 and
        ``inv_deg = 1 / (n - 1)``. On a padded block, ``pair_mask`` (1 where ``j`` is a real node other
        than ``i``) drops the padding from both sums and ``inv_deg`` is per graph.

        Shapes
        ------
        ``h: [B, n, hidden]``, ``x: [B, n, 3]``, ``pair_attr: [B, n, n, edge_dim]``, ``inv_deg: float or [B, 1, 1]``,
        ``pair_mask: [B, n, n, 1]`` (``x.dtype``) -> ``([B, n, hidden], [B, n, 3])``.
        """
        dtype = edge_dtype or h.dtype
        rel = x[:, :, None, :] - x[:, None, :, :]
        sq = (rel * rel).sum(-1, keepdim=True)
        first = self.phi_e[0]
        hidden = h.shape[-1]
        w = first.weight
        node = (h @ torch.cat([w[:, :hidden], w[:, hidden : 2 * hidden]], dim=0).T).to(dtype)
        to_dst, to_src = node.split(first.out_features, dim=-1)
        pair = torch.cat([sq, pair_attr], dim=-1).to(dtype)
        pre = nn.functional.linear(pair, w[:, 2 * hidden :].to(dtype), first.bias.to(dtype))
        pre = pre.add_(to_dst[:, :, None, :]).add_(to_src[:, None, :, :])  # in place: linear's backward keeps no output
        m = run_mlp(list(self.phi_e)[1:], pre)
        step = rel / (torch.sqrt(sq + 1e-12) + 1.0) * run_mlp(self.phi_x, m).to(x.dtype)  # zero on the diagonal
        if pair_mask is not None:
            step = step * pair_mask
        dx = step.sum(2) * inv_deg
        if self.phi_h is None:
            return h, dx
        if pair_mask is None:
            self_messages = m.diagonal(dim1=1, dim2=2).transpose(1, 2).to(h.dtype)  # [B, n, hidden]
            agg = (m.sum(2, dtype=h.dtype) - self_messages) * inv_deg
        else:
            agg = (m * pair_mask.to(m.dtype)).sum(2, dtype=h.dtype) * inv_deg
        h = h + self.phi_h(torch.cat([self.norm(h), agg], dim=-1))
        return h, dx


def run_mlp(modules: "nn.Sequential | list[nn.Module]", x: Tensor) -> Tensor:
    """Apply linear / activation modules in ``x.dtype`` (weights cast on the fly, so a float32 model
    can run its per-edge MLPs in bfloat16 without a second copy of the parameters)."""
    for module in modules:
        if isinstance(module, nn.Linear):
            x = nn.functional.linear(x, module.weight.to(x.dtype), None if module.bias is None else module.bias.to(x.dtype))
        elif isinstance(module, nn.SiLU) and not torch.is_grad_enabled():
            x = nn.functional.silu(x, inplace=True)  # x is a fresh linear output; nothing else holds it
        else:
            x = module(x)
    return x


class EGNN(nn.Module):
    """EGNN score network with the molediff signature (see CONTRIBUTING.md).

    Parameters
    ----------
    node_dim : int
        Width of ``node_attr`` (0 for featureless point clouds).
    edge_dim : int
        Width of the caller's ``edge_attr`` (0 if none).
    hidden : int
        Width of the invariant node features.
    num_layers : int
        Number of EGNN layers.
    radius, knn, fully_connected
        At most one rule for geometric edges built from ``x`` and added to the caller's edges (see
        :func:`molediff.nn.graph.build_edges`). Radius-only edges are faded out smoothly towards ``radius``.

    Attributes
    ----------
    edge_dtype : torch.dtype or None
        Precision of the per-edge MLPs (most of the FLOPs and memory traffic); ``None`` runs them in the
        input's dtype. ``torch.bfloat16`` is several times faster on CPUs with native bf16 and on GPUs;
        positions, distances, coordinate updates and sums stay in the input's dtype either way.
    dense_execution : bool or "auto"
        With ``fully_connected=True``, run graphs as dense ``[B, n, n, ·]`` blocks
        (:mod:`molediff.nn.dense_blocks`: broadcasts and axis sums instead of gathers and scatters); the
        same function as the sparse edge list. ``"auto"`` (default): dense on CPU, where it is faster;
        the sparse edge list on other devices, where the dense blocks' many small kernels bound the step
        (one H200, QM9 training step at batch 1024: sparse 31.8 ms, one block per size 302.6 ms with bf16
        edges; ``benchmarks/training_step.py``). False forces the sparse path.
    max_dense_blocks : int or None
        Dense blocks per batch: ``None`` (default) one per graph size, the least arithmetic; an int merges
        neighbouring sizes into at most that many padded blocks (fewer kernel launches).
    dense_chunk_pairs : int or None
        Without gradients, run each dense block in runs of graphs of at most this many pairs
        (``graphs * n**2``, at least one graph) through the whole layer stack, so that the per-pair tensors
        stay in cache (default 8192: ``[8192, hidden]`` float32 is 4 MiB); ``None`` runs whole blocks.
        Training (gradients on) always runs whole blocks.

    Shapes
    ------
    ``x: [N, 3]``, ``c_noise: [N]``, ``node_attr: [N, node_dim]``, ``batch: [N]``, ``edge_index: [2, E]``,
    ``edge_attr: [E, edge_dim]`` -> ``[N, 3]``.
    """

    def __init__(
        self,
        node_dim: int = 0,
        edge_dim: int = 0,
        hidden: int = 128,
        num_layers: int = 6,
        *,
        radius: float | None = None,
        knn: int | None = None,
        fully_connected: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"EGNN: num_layers must be >= 1, got {num_layers}")
        self.node_dim, self.edge_dim, self.hidden = node_dim, edge_dim, hidden
        self.radius, self.knn, self.fully_connected = radius, knn, fully_connected
        self.embed = NodeEmbedding(node_dim, hidden)
        self.edge_dtype: torch.dtype | None = None
        self.dense_execution: bool | str = "auto"
        self.max_dense_blocks: int | None = None
        self.dense_chunk_pairs: int | None = 8192
        self._topology_cache: tuple | None = None  # see _topology
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_dim + 2, update_features=k < num_layers - 1) for k in range(num_layers))

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        node_attr: Tensor | None = None,
        batch: Tensor | None = None,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        h = self.embed(x, c_noise, node_attr)
        edges, blocks = self._topology(x, batch, edge_index, edge_attr)
        if blocks is not None:
            return self._dense_forward(h, x, blocks)
        src, dst = edges.edge_index
        weight = torch.ones(src.shape[0], 1, dtype=x.dtype, device=x.device)
        if self.radius is not None:
            d = (x[dst] - x[src]).norm(dim=-1)
            env = cosine_cutoff(d, self.radius)
            weight = torch.where(edges.geometric_only, env, torch.ones_like(env)).unsqueeze(-1)
        deg = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device).index_add_(0, dst, weight)  # fading edges count as they fade
        inv_deg = 1.0 / deg.clamp_min(1.0)
        disp = torch.zeros_like(x)
        for layer in self.layers:
            h, dx = layer(h, x + disp, edges.edge_index, edges.edge_attr, weight, inv_deg, self.edge_dtype)
            disp = disp + dx
        return disp

    def _topology(
        self, x: Tensor, batch: Tensor | None, edge_index: Tensor | None, edge_attr: Tensor | None
    ) -> tuple[EdgeSet, list[DenseBlock] | None]:
        """The edge set, and its dense blocks when the dense path applies.

        A fully connected graph does not depend on ``x``, so without gradients (sampling: every step
        calls the network on the same batch) the result is kept for the next call on the *same* graph
        tensors (identity and in-place version checked, references held so identity cannot be reused).
        """
        graph = (batch, edge_index, edge_attr)
        key = None
        if self.fully_connected and not torch.is_grad_enabled() and not any(
            t is not None and t.is_inference() for t in graph
        ):
            key = (tuple(None if t is None else t._version for t in graph), x.shape[0], x.dtype, x.device,
                   self.dense_execution, self.max_dense_blocks)
            cached = self._topology_cache
            if cached is not None and cached[1] == key and all(a is b for a, b in zip(cached[0], graph)):
                return cached[2]
        edges = build_edges(
            x, batch, edge_index, edge_attr, edge_dim=self.edge_dim,
            radius=self.radius, knn=self.knn, fully_connected=self.fully_connected,
        )  # fmt: skip
        blocks = None
        dense = self.dense_execution if self.dense_execution != "auto" else x.device.type == "cpu"
        if self.fully_connected and dense:
            blocks = dense_blocks(batch if batch is not None else x.new_zeros(x.shape[0], dtype=torch.long), edges,
                                  max_blocks=self.max_dense_blocks)
        if key is not None:
            self._topology_cache = (graph, key, (edges, blocks))
        return edges, blocks

    def _dense_forward(self, h: Tensor, x: Tensor, blocks: list[DenseBlock]) -> Tensor:
        """The layer stack on each dense block (graphs do not interact, so blocks run one after another).

        Without gradients (sampling) a block is further cut into runs of graphs of at most
        :attr:`dense_chunk_pairs` pairs, each taken through all layers before the next: the per-pair
        tensors of a run then stay in cache instead of streaming through memory (on 2 fp32 CPU cores, one
        layer on 1,000 graphs of 18 atoms 1.3-1.8x faster, QM9 sampling about 1.2x: benchmarks/RESULTS.md). Same arithmetic,
        graph by graph.
        """
        disp = torch.zeros_like(x)
        for block in blocks:
            idx = block.nodes
            per_run = block.nodes.shape[0]
            if self.dense_chunk_pairs is not None and not torch.is_grad_enabled():
                per_run = max(1, self.dense_chunk_pairs // block.size**2)
            for first in range(0, block.nodes.shape[0], per_run):
                run = slice(first, first + per_run)
                d_b = self._dense_stack(h, x, block, run)
                if block.mask is None:
                    disp = disp.index_put((idx[run].reshape(-1),), d_b.reshape(-1, 3))
                else:
                    disp = disp.index_put((idx[run][block.mask[run]],), d_b[block.mask[run]])
        return disp

    def _dense_stack(self, h: Tensor, x: Tensor, block: DenseBlock, run: slice) -> Tensor:
        """All layers on graphs ``run`` of ``block``; returns their displacements ``[b, n, 3]``."""
        idx = block.nodes[run]
        h_b, x_b, d_b = h[idx], x[idx], torch.zeros_like(x[idx])
        inv_deg: float | Tensor = 1.0 / max(block.size - 1, 1)
        pair_mask = None
        if block.mask is not None:
            inv_deg = 1.0 / (block.counts[run].to(x.dtype) - 1).clamp_min(1.0)[:, None, None]
            off_diagonal = ~torch.eye(block.size, dtype=torch.bool, device=x.device)
            pair_mask = (block.mask[run][:, None, :] & off_diagonal).unsqueeze(-1).to(x.dtype)
        pair_attr = block.pair_attr[run]
        for layer in self.layers:
            h_b, dx = layer.dense_forward(h_b, x_b + d_b, pair_attr, inv_deg, self.edge_dtype, pair_mask)
            d_b = d_b + dx
        return d_b
