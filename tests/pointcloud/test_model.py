"""Equivariance and contract tests for molediff.pointcloud.model."""

from __future__ import annotations

import pytest
import torch

from molediff.data.shapes import make_shapes
from molediff.pointcloud.model import (
    PointCloudEGNN,
    PointNetDenoiser,
    build_point_denoiser,
    flatten_clouds,
    unflatten_clouds,
)


def _inputs(dtype=torch.float64):
    points, labels = make_shapes(1, 32, classes=("torus", "cone", "helix"), seed=3, dtype=dtype)
    x, batch = flatten_clouds(points)
    c_noise = torch.linspace(-1.0, 0.5, 3, dtype=dtype)[batch]  # per-cloud noise levels
    return x, batch, labels, c_noise


def _random_orthogonal(det: float) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_egnn_is_e3_and_permutation_equivariant(det):
    torch.manual_seed(0)
    net = PointCloudEGNN(8, hidden=16, num_layers=2, knn=6).double()
    x, batch, labels, c = _inputs()
    out = net(x, c, batch=batch, label=labels)
    q = _random_orthogonal(det)
    shift = torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(net(x @ q.T + shift, c, batch=batch, label=labels), out @ q.T)
    perm = torch.cat([32 * g + torch.randperm(32) for g in range(3)])
    torch.testing.assert_close(net(x[perm], c[perm], batch=batch, label=labels), out[perm])


def test_egnn_clouds_are_independent_but_global_within_a_cloud():
    torch.manual_seed(0)
    net = PointCloudEGNN(8, hidden=16, num_layers=2, knn=4).double()
    x, batch, labels, c = _inputs()
    out = net(x, c, batch=batch, label=labels)
    moved = x.clone()
    moved[32:] += 0.5 * torch.randn(64, 3, dtype=torch.float64)
    torch.testing.assert_close(net(moved, c, batch=batch, label=labels)[:32], out[:32])
    # moving one point changes the output of the farthest point of its cloud (via the centroid node)
    i = int(x[:32].norm(dim=1).argmax())
    far = int((x[:32] - x[i]).norm(dim=1).argmax())
    bent = x.clone()
    bent[i] *= 2.0
    assert (net(bent, c, batch=batch, label=labels)[far] - out[far]).abs().max() > 1e-8


def test_pointnet_is_permutation_equivariant_and_label_sensitive():
    torch.manual_seed(0)
    net = PointNetDenoiser(8, hidden=16, num_blocks=2).double()
    for p in net.parameters():  # leave the near-zero init of the residual blocks
        p.data.add_(0.1 * torch.randn_like(p))
    x, batch, labels, c = _inputs()
    out = net(x, c, batch=batch, label=labels)
    perm = torch.cat([32 * g + torch.randperm(32) for g in range(3)])
    torch.testing.assert_close(net(x[perm], c[perm], batch=batch, label=labels), out[perm])
    null = torch.full_like(labels, 8)
    assert not torch.allclose(net(x, c, batch=batch, label=null), out)


def test_denoiser_contract_and_errors():
    x, batch, labels, _ = _inputs(torch.float32)
    for name in ("egnn", "pointnet"):
        kwargs = {"hidden": 8, "num_layers": 1} if name == "egnn" else {"hidden": 8, "num_blocks": 1}
        d = build_point_denoiser(name, 8, 0.5, **kwargs)
        out = d(x, torch.full((x.shape[0],), 0.7), batch=batch, label=labels)
        assert out.shape == x.shape and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="labels must lie"):
            d(x, torch.full((x.shape[0],), 0.7), batch=batch, label=torch.full_like(labels, 9))
    with pytest.raises(ValueError, match="unknown point-cloud network"):
        build_point_denoiser("transformer", 8, 0.5)


def test_flatten_round_trip():
    pts = torch.randn(3, 5, 3)
    x, batch = flatten_clouds(pts)
    assert batch.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    torch.testing.assert_close(unflatten_clouds(x, 3), pts)
    with pytest.raises(ValueError):
        flatten_clouds(torch.randn(5, 3))
