"""An e3nn tensor-product score network (NequIP/SEGNN-like), SE(3)- but not reflection-equivariant.

Each layer convolves node features with the spherical harmonics of the edge vectors,
``m_ij = TP(h_j, Y(x_i - x_j); W(r_ij, e_ij))``, where the per-edge, per-path weights ``W`` come from a
:class:`e3nn.nn.FullyConnectedNet` on a Gaussian radial basis of the distance and the edge features. Messages
are averaged onto the target, mixed by an :class:`e3nn.o3.Linear` (plus a self-interaction), and passed through
a :class:`e3nn.nn.Gate`.

Hidden features contain both parities (e.g. ``0e + 0o + 1o + 1e``), so the network can build pseudoscalars and
pseudovectors (triple and cross products of bond vectors). The output is the sum of a ``1o`` (vector) and a
``1e`` (pseudovector) read-out. Under rotations both transform like vectors, so the output is
rotation-equivariant; under a reflection the pseudovector part does not flip, so the network can tell mirror
images (enantiomers) apart: it is SE(3)- and deliberately *not* E(3)-equivariant, as a conformer model must be.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor, nn

from molediff.nn.embeddings import GaussianRBF, NodeEmbedding, cosine_cutoff
from molediff.nn.graph import build_edges

__all__ = ["TensorFieldLayer", "TensorFieldNetwork"]


def _gate_for(irreps_hidden: o3.Irreps) -> Gate:
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] if gated.num_irreps else [], gated)


def _reachable_irreps(irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, num_layers: int) -> set[o3.Irrep]:
    """Hidden irreps that can be nonzero after ``num_layers`` layers fed with ``0e`` scalars.

    A layer's output irrep is nonzero only if it is a tensor-product path ``ir_in x ir_sh`` of a nonzero
    input irrep, or an input irrep itself (self-interaction and residual).
    """
    hidden = {ir for _, ir in irreps_hidden}
    sh = [ir for _, ir in irreps_sh]
    live = {o3.Irrep("0e")}
    for _ in range(num_layers):
        paths = {ir for ir_in in live for ir_sh in sh for ir in ir_in * ir_sh}
        live = (paths | live) & hidden
    return live


class TensorFieldLayer(nn.Module):
    """Equivariant convolution -> linear mixing + self-interaction -> gate, with a residual when shapes allow.

    Parameters
    ----------
    irreps_in : o3.Irreps
        Input node irreps.
    irreps_sh : o3.Irreps
        Irreps of the edge spherical harmonics.
    irreps_out : o3.Irreps
        Output node irreps (after the gate).
    edge_scalar_dim : int
        Width of the invariant per-edge input of the radial network.
    radial_hidden : int
        Hidden width of the radial network.

    Shapes
    ------
    ``h: [N, irreps_in.dim]``, ``sh: [E, irreps_sh.dim]``, ``edge_scalars: [E, edge_scalar_dim]``,
    ``edge_index: [2, E]``, ``weight: [E, 1]``, ``inv_deg: [N, 1]`` -> ``[N, irreps_out.dim]``.
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, edge_scalar_dim: int, radial_hidden: int
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.gate = _gate_for(self.irreps_out)
        wanted = {ir for _, ir in self.gate.irreps_in}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(o3.Irreps(irreps_sh)):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        irreps_mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
        self.tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = FullyConnectedNet([edge_scalar_dim, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.mix = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self, h: Tensor, sh: Tensor, edge_scalars: Tensor, edge_index: Tensor, weight: Tensor, inv_deg: Tensor
    ) -> Tensor:
        src, dst = edge_index
        msg = self.tp(h[src], sh, self.radial(edge_scalars)) * weight
        agg = h.new_zeros(h.shape[0], msg.shape[1]).index_add_(0, dst, msg) * inv_deg
        out = self.gate(self.mix(agg) + self.self_interaction(h))
        return h + out if self.residual else out


class TensorFieldNetwork(nn.Module):
    """e3nn tensor-product score network with the molediff signature (see CONTRIBUTING.md).

    Parameters
    ----------
    node_dim : int
        Width of ``node_attr`` (0 for featureless point clouds).
    edge_dim : int
        Width of the caller's ``edge_attr`` (0 if none).
    hidden : int
        Multiplicity of the even scalars ``0e``; the other hidden irreps get ``hidden // 4`` copies each
        (``hidden x 0e + hidden/4 x 0o + hidden/4 x 1o + hidden/4 x 1e`` [+ ``2e + 2o`` when ``lmax >= 2``]).
        Overridden by ``irreps_hidden``.
    num_layers : int
        Number of convolution layers (at least 2 are needed to build pseudovectors from bond vectors).
    lmax : int
        Maximum degree of the edge spherical harmonics.
    num_rbf : int
        Number of Gaussian radial basis functions.
    r_max : float
        Range of the radial basis (defaults to ``radius`` if set, else 5.0).
    radial_hidden : int
        Hidden width of the radial networks.
    irreps_hidden : str, optional
        Explicit hidden irreps (must contain ``0e`` scalars, and ``1o`` or ``1e`` features that the layers can
        reach from them with spherical harmonics up to ``lmax``; ``lmax >= 1``).
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
        num_layers: int = 4,
        *,
        lmax: int = 2,
        num_rbf: int = 16,
        r_max: float | None = None,
        radial_hidden: int = 64,
        irreps_hidden: str | None = None,
        radius: float | None = None,
        knn: int | None = None,
        fully_connected: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"TensorFieldNetwork: num_layers must be >= 2 to tell mirror images apart, got {num_layers}")
        if irreps_hidden is None:
            v = max(hidden // 4, 1)
            irreps_hidden = f"{hidden}x0e + {v}x0o + {v}x1o + {v}x1e" + (f" + {v // 2 or 1}x2e + {v // 2 or 1}x2o" if lmax >= 2 else "")
        self.irreps_hidden = o3.Irreps(irreps_hidden).simplify()
        n_scalars = sum(mul for mul, ir in self.irreps_hidden if ir == o3.Irrep("0e"))
        if n_scalars == 0:
            raise ValueError(f"TensorFieldNetwork: irreps_hidden needs 0e scalars, got {self.irreps_hidden}")
        self.node_dim, self.edge_dim, self.hidden, self.lmax = node_dim, edge_dim, hidden, lmax
        self.radius, self.knn, self.fully_connected = radius, knn, fully_connected
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        if not _reachable_irreps(self.irreps_hidden, self.irreps_sh, num_layers) & {o3.Irrep("1o"), o3.Irrep("1e")}:
            raise ValueError(
                f"TensorFieldNetwork: no 1o or 1e feature can be nonzero with irreps_hidden={self.irreps_hidden}, "
                f"lmax={lmax} and {num_layers} layers, so the 1o + 1e read-out would be identically zero"
            )
        self.embed = NodeEmbedding(node_dim, n_scalars)
        self.rbf = GaussianRBF(num_rbf, r_max if r_max is not None else (radius if radius is not None else 5.0))
        edge_scalar_dim = num_rbf + edge_dim + 2
        irreps = o3.Irreps(f"{n_scalars}x0e")
        layers = []
        for _ in range(num_layers):
            layers.append(TensorFieldLayer(irreps, self.irreps_sh, self.irreps_hidden, edge_scalar_dim, radial_hidden))
            irreps = self.irreps_hidden
        self.layers = nn.ModuleList(layers)
        self.head = o3.Linear(self.irreps_hidden, o3.Irreps("1x1o + 1x1e"))

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
        sh = o3.spherical_harmonics(self.irreps_sh, rel, normalize=True, normalization="component")
        weight = torch.ones_like(d)
        if self.radius is not None:
            weight = torch.where(edges.geometric_only, cosine_cutoff(d, self.radius), weight)
        weight = weight.unsqueeze(-1)
        deg = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device).index_add_(0, dst, weight)  # fading edges count as they fade
        inv_deg = 1.0 / deg.clamp_min(1.0)
        edge_scalars = torch.cat([self.rbf(d), edges.edge_attr], dim=-1)
        for layer in self.layers:
            h = layer(h, sh, edge_scalars, edges.edge_index, weight, inv_deg)
        out = self.head(h)
        return out[:, :3] + out[:, 3:]
