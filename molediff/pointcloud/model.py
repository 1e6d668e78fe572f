"""Class-conditional point-cloud denoisers: an equivariant EGNN on kNN graphs and a PointNet baseline.

Both networks follow the molediff network contract ``net(x: [N, 3], c_noise: [N], *, batch, label)``
on a flat graph batch (``batch: [N]`` assigns points to clouds, ``label: [B]`` holds one class per
cloud) and return one 3-vector per point. :func:`build_point_denoiser` wraps either one in
:class:`~molediff.core.denoiser.EDMPrecond`; noise and projections come from
:class:`~molediff.core.spaces.CenteredSpace` (zero mean per cloud).

Classifier-free guidance: label ``num_classes`` is the *null* class (no condition). Training drops
labels to it with some probability; sampling mixes conditional and null predictions.

- :class:`PointCloudEGNN`: permutation- and E(3)-equivariant (rotations, reflections,
  translations); kNN edges plus a virtual centroid node per cloud for global context. Its density is rotation-invariant, so generated shapes come in all
  orientations even when trained on canonically oriented data; being blind to reflections,
  it produces both handednesses of chiral shapes (e.g. the Möbius strip) equally often.
- :class:`PointNetDenoiser`: permutation-equivariant only (per-point MLP plus max-pooled
  cloud features); it learns the canonical orientation of its training data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molediff.core.denoiser import EDMPrecond
from molediff.nn.egnn import EGNN
from molediff.nn.embeddings import MLP, NoiseEmbedding

__all__ = [
    "NETWORKS",
    "PointCloudEGNN",
    "PointNetDenoiser",
    "build_point_denoiser",
    "flatten_clouds",
    "unflatten_clouds",
]


def flatten_clouds(points: Tensor) -> tuple[Tensor, Tensor]:
    """Turn equal-size clouds into a flat graph batch.

    Shapes
    ------
    ``points: [B, P, 3]`` -> ``(x: [B * P, 3], batch: [B * P])``.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape [B, P, 3], got {list(points.shape)}")
    b, p, _ = points.shape
    batch = torch.arange(b, device=points.device).repeat_interleave(p)
    return points.reshape(b * p, 3), batch


def unflatten_clouds(x: Tensor, num_clouds: int) -> Tensor:
    """Inverse of :func:`flatten_clouds` for equal-size clouds: ``[B * P, 3]`` -> ``[B, P, 3]``."""
    if x.shape[0] % max(num_clouds, 1):
        raise ValueError(f"{x.shape[0]} points cannot be split into {num_clouds} equal clouds")
    return x.reshape(num_clouds, -1, 3)


def _check_label(label: Tensor, batch: Tensor, num_classes: int) -> Tensor:
    label = torch.as_tensor(label, device=batch.device).long()
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    if label.ndim != 1 or label.shape[0] < num_graphs:
        raise ValueError(f"label must have shape [num_clouds]=[{num_graphs}], got {list(label.shape)}")
    if label.numel() and (int(label.min()) < 0 or int(label.max()) > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}] ({num_classes} is the null class)")
    return label


class PointCloudEGNN(nn.Module):
    """EGNN score network on kNN graphs with one virtual centroid node per cloud.

    Local kNN messages alone cannot tell a point where it sits in its cloud, which denoising at
    high noise needs; so every cloud gets a virtual node at its centroid, linked both ways to all
    of its points (a global, still E(3)-equivariant channel: distances to the centroid and the mean
    of all messages). Node features are the one-hot class label (with a null class) and a
    "virtual" flag; the virtual nodes' outputs are dropped.

    Parameters
    ----------
    num_classes
        Number of shape classes ``C``; label ``C`` means "unconditional".
    hidden, num_layers
        Width and depth of the EGNN.
    knn
        Neighbours per point in the kNN graph rebuilt from the noisy input at every call.

    Shapes
    ------
    ``x: [N, 3]``, ``c_noise: [N]``, ``batch: [N]``, ``label: [B]`` -> ``[N, 3]``.
    """

    def __init__(self, num_classes: int, hidden: int = 64, num_layers: int = 4, knn: int = 16) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.egnn = EGNN(node_dim=self.num_classes + 2, hidden=hidden, num_layers=num_layers, knn=knn)

    def forward(self, x: Tensor, c_noise: Tensor, *, batch: Tensor, label: Tensor) -> Tensor:
        label = _check_label(label, batch, self.num_classes)
        n, b = x.shape[0], label.shape[0]
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device).expand(n)
        counts = torch.bincount(batch, minlength=b).clamp_min(1).to(x.dtype)
        centroid = torch.zeros(b, 3, dtype=x.dtype, device=x.device).index_add_(0, batch, x) / counts[:, None]
        graphs = torch.arange(b, device=x.device)
        # augmented node order: each cloud's points followed by its virtual node (batch stays sorted)
        order = torch.argsort(torch.cat([batch, graphs]), stable=True)
        where = torch.empty_like(order)
        where[order] = torch.arange(n + b, device=x.device)
        pos = torch.cat([x, centroid])[order]
        attr = torch.cat([F.one_hot(label[batch], self.num_classes + 2), F.one_hot(label, self.num_classes + 2)])
        attr[n:, -1] = 1  # virtual flag
        # c_noise of a virtual node: that of its cloud's first point (c_noise is per cloud in practice)
        first = torch.full((b,), n, dtype=torch.long, device=x.device).scatter_reduce(
            0, batch, torch.arange(n, device=x.device), reduce="amin")
        noise = torch.cat([c_noise, c_noise[first.clamp_max(max(n - 1, 0))]])[order]
        real, virtual = where[:n], where[n:]
        edges = torch.cat([torch.stack([real, virtual[batch]]), torch.stack([virtual[batch], real])], dim=1)
        out = self.egnn(pos, noise, node_attr=attr[order].to(x.dtype), batch=torch.cat([batch, graphs])[order],
                        edge_index=edges)
        return out[real]


def _segment_max(h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    out = h.new_full((num_graphs, h.shape[1]), float("-inf"))
    index = batch.unsqueeze(1).expand_as(h)
    return out.scatter_reduce(0, index, h, reduce="amax", include_self=True)


class PointNetDenoiser(nn.Module):
    """Non-equivariant baseline: per-point MLPs interleaved with max-pooled cloud features.

    Every block updates ``h_i <- h_i + MLP([h_i, max_{j in cloud} h_j])``; the noise level and a
    learned class embedding (with a null class) are added to the input features.

    Parameters
    ----------
    num_classes
        Number of shape classes ``C``; label ``C`` means "unconditional".
    hidden, num_blocks
        Width and number of pooling blocks.

    Shapes
    ------
    ``x: [N, 3]``, ``c_noise: [N]``, ``batch: [N]``, ``label: [B]`` -> ``[N, 3]``.
    """

    def __init__(self, num_classes: int, hidden: int = 128, num_blocks: int = 3) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.inp = MLP([3, hidden, hidden])
        self.noise = NoiseEmbedding(hidden)
        self.cls = nn.Embedding(self.num_classes + 1, hidden)
        self.blocks = nn.ModuleList(MLP([2 * hidden, hidden, hidden], last_zero_init=True) for _ in range(num_blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_blocks))
        self.out = MLP([hidden, hidden, 3])

    def forward(self, x: Tensor, c_noise: Tensor, *, batch: Tensor, label: Tensor) -> Tensor:
        label = _check_label(label, batch, self.num_classes)
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device).expand(x.shape[0])
        num_graphs = label.shape[0]
        h = self.inp(x) + self.noise(c_noise) + self.cls(label)[batch]
        for block, norm in zip(self.blocks, self.norms):
            g = _segment_max(norm(h), batch, num_graphs)
            h = h + block(torch.cat([norm(h), g[batch]], dim=-1))
        return self.out(h)


#: Network name (config ``model.network``) -> class.
NETWORKS: dict[str, type[nn.Module]] = {"egnn": PointCloudEGNN, "pointnet": PointNetDenoiser}


def build_point_denoiser(network: str, num_classes: int, sigma_data: float, **kwargs: Any) -> EDMPrecond:
    """``EDMPrecond(NETWORKS[network](num_classes, **kwargs), sigma_data)``.

    The result is a denoiser ``D(x: [N, 3], sigma: [N], *, batch, label) -> [N, 3]``.
    """
    try:
        cls = NETWORKS[network]
    except KeyError:
        raise ValueError(f"unknown point-cloud network {network!r}; choose from {sorted(NETWORKS)}") from None
    return EDMPrecond(cls(num_classes, **kwargs), sigma_data=sigma_data)
