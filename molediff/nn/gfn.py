"""Graph field network (GeoDiff, Xu et al. 2022): invariant edge scores turned into equivariant node vectors.

An invariant message-passing network on the (extended) graph produces one scalar ``s_ij`` per edge from
``(h_i, h_j, e_ij, d_ij)``, where the noise level is part of ``h``. The distance chain rule maps these edge
scalars to a vector per atom,

    ``out_i = sum_j s_ij (x_i - x_j) / d_ij``,

i.e. ``s_ij`` plays the role of ``d(score)/d(d_ij)``. The result is E(3)-equivariant (rotations *and*
reflections) and translation-invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molediff.nn.embeddings import MLP, GaussianRBF, NodeEmbedding, cosine_cutoff
from molediff.nn.graph import build_edges

__all__ = ["GFNLayer", "GraphFieldNetwork"]


class GFNLayer(nn.Module):
    """Invariant message passing with edge features (a GIN/CFConv-like residual block).

    Shapes
    ------
    ``h: [N, hidden]``, ``e: [E, hidden]``, ``edge_index: [2, E]``, ``weight: [E, 1]``, ``inv_deg: [N, 1]``
    -> ``(h: [N, hidden], e: [E, hidden])``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.message = MLP([3 * hidden, hidden, hidden], last_activation=True)
        self.update = MLP([2 * hidden, hidden, hidden])
        self.edge_update = MLP([2 * hidden, hidden, hidden])

    def forward(
        self, h: Tensor, e: Tensor, edge_index: Tensor, weight: Tensor, inv_deg: Tensor
    ) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        hn = self.norm(h)
        m = self.message(torch.cat([hn[dst], hn[src], e], dim=-1)) * weight
        agg = torch.zeros_like(h).index_add_(0, dst, m) * inv_deg
        e = e + self.edge_update(torch.cat([e, m], dim=-1))
        return h + self.update(torch.cat([hn, agg], dim=-1)), e


class GraphFieldNetwork(nn.Module):
    """GeoDiff-style graph field network with the molediff signature (see CONTRIBUTING.md).

    Parameters
    ----------
    node_dim : int
        Width of ``node_attr`` (0 for featureless point clouds).
    edge_dim : int
        Width of the caller's ``edge_attr`` (0 if none).
    hidden : int
        Width of node and edge features.
    num_layers : int
        Number of message-passing layers.
    num_rbf : int
        Number of Gaussian radial basis functions for ``d_ij``.
    r_max : float
        Range of the radial basis (defaults to ``radius`` if set, else 5.0).
    radius, knn, fully_connected
        At most one rule for geometric edges built from ``x`` and added to the caller's edges.

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
        num_rbf: int = 32,
        r_max: float | None = None,
        radius: float | None = None,
        knn: int | None = None,
        fully_connected: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"GraphFieldNetwork: num_layers must be >= 1, got {num_layers}")
        self.node_dim, self.edge_dim, self.hidden = node_dim, edge_dim, hidden
        self.radius, self.knn, self.fully_connected = radius, knn, fully_connected
        self.embed = NodeEmbedding(node_dim, hidden)
        self.rbf = GaussianRBF(num_rbf, r_max if r_max is not None else (radius if radius is not None else 5.0))
        self.edge_embed = MLP([num_rbf + edge_dim + 2, hidden, hidden])
        self.layers = nn.ModuleList(GFNLayer(hidden) for _ in range(num_layers))
        self.head = MLP([3 * hidden + 1, hidden, hidden // 2, 1])

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
        edges = build_edges(
            x, batch, edge_index, edge_attr, edge_dim=self.edge_dim,
            radius=self.radius, knn=self.knn, fully_connected=self.fully_connected,
        )  # fmt: skip
        src, dst = edges.edge_index
        rel = x[dst] - x[src]
        d = torch.sqrt((rel * rel).sum(-1) + 1e-12)
        weight = torch.ones_like(d)
        if self.radius is not None:
            weight = torch.where(edges.geometric_only, cosine_cutoff(d, self.radius), weight)
        weight = weight.unsqueeze(-1)
        deg = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device).index_add_(0, dst, weight)  # fading edges count as they fade
        inv_deg = 1.0 / deg.clamp_min(1.0)
        e = self.edge_embed(torch.cat([self.rbf(d), edges.edge_attr], dim=-1))
        for layer in self.layers:
            h, e = layer(h, e, edges.edge_index, weight, inv_deg)
        # symmetric in (i, j) up to e_ij, so s_ij = s_ji on symmetric graphs: a pairwise "force" field
        pair = torch.cat([h[dst] + h[src], h[dst] * h[src], e, d.unsqueeze(-1)], dim=-1)
        s = self.head(pair) * weight
        return torch.zeros_like(x).index_add_(0, dst, s * rel / d.unsqueeze(-1))
