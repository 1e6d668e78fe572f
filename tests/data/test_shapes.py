"""Tests for molediff.data.shapes: counts, centring, scale, determinism, splits, distinct classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molediff.data.shapes import SHAPE_CLASSES, ShapeDataset, make_shapes, random_rotation, sample_shape
from molediff.pointcloud.metrics import pairwise_chamfer


def test_counts_labels_and_centring():
    pts, labels = make_shapes(3, 128, seed=1)
    assert len(SHAPE_CLASSES) >= 8
    assert pts.shape == (3 * len(SHAPE_CLASSES), 128, 3) and pts.dtype == torch.float32
    assert labels.tolist() == [c for c in range(len(SHAPE_CLASSES)) for _ in range(3)]
    assert pts.mean(dim=1).abs().max() < 1e-5
    rms = pts.pow(2).sum(-1).mean(-1).sqrt()
    assert ((rms > 0.85 - 1e-4) & (rms < 1.15 + 1e-4)).all()
    assert torch.isfinite(pts).all()


def test_subset_and_dataset():
    ds = ShapeDataset(2, 64, classes=("helix", "cone"), split="validation", seed=4)
    assert len(ds) == 4
    x, y = ds[3]
    assert x.shape == (64, 3) and int(y) == SHAPE_CLASSES.index("cone")
    # a cloud does not depend on which other classes or how many clouds are requested
    alone, _ = make_shapes(1, 64, classes=("cone",), split="validation", seed=4)
    torch.testing.assert_close(ds.points[2], alone[0])


def test_determinism_and_disjoint_splits():
    a, _ = make_shapes(2, 64, seed=5)
    b, _ = make_shapes(2, 64, seed=5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c, _ = make_shapes(2, 64, seed=6)
    assert not torch.equal(a, c)
    splits = {s: make_shapes(4, 64, seed=5, split=s)[0] for s in ("train", "validation", "test")}
    for s, t in (("train", "validation"), ("train", "test"), ("validation", "test")):
        diff = (splits[s][:, None] - splits[t][None]).abs().amax(dim=(2, 3))
        assert diff.min() > 1e-3, f"{s} and {t} share a cloud"
    with pytest.raises(ValueError, match="unknown split"):
        make_shapes(1, 64, split="val")


def test_classes_are_distinct():
    # in canonical orientation, 1-nearest-neighbour by Chamfer distance recovers the class of
    # held-out clouds: the families differ by more than their random size / aspect parameters
    train, ytr = make_shapes(6, 256, seed=0)
    test, yte = make_shapes(3, 256, seed=0, split="test")
    pred = ytr[pairwise_chamfer(test, train).argmin(dim=1)]
    assert (pred == yte).float().mean() > 0.95


def test_geometry_of_simple_classes():
    rng = np.random.default_rng(0)
    sphere = sample_shape("sphere", 500, rng)
    # all points on one sphere: |p|^2 = 2 p.c + k holds exactly for centre c and k = r^2 - |c|^2
    design = np.column_stack([2 * sphere, np.ones(len(sphere))])
    _, residual, *_ = np.linalg.lstsq(design, (sphere**2).sum(1), rcond=None)
    assert residual[0] < 1e-12
    cube = sample_shape("cube", 500, rng)
    # every point of an axis-aligned box surface lies on a face: one coordinate at its extreme
    on_face = np.isclose(cube, cube.max(axis=0), atol=1e-9) | np.isclose(cube, cube.min(axis=0), atol=1e-9)
    assert on_face.any(axis=1).all()
    # area-uniform sphere: the z coordinate is uniform on [-r, r] (Archimedes); mean |z| = r/2
    big = sample_shape("sphere", 20000, rng)
    z = big[:, 2] / np.linalg.norm(big, axis=1).mean()
    assert abs(np.abs(z).mean() - 0.5) < 0.02


def test_rotation_option():
    rng = np.random.default_rng(1)
    rot = random_rotation(rng)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    canon, _ = make_shapes(1, 256, classes=("cylinder",), seed=2)
    turned, _ = make_shapes(1, 256, classes=("cylinder",), seed=2, rotate=True)
    assert not torch.allclose(canon, turned)
    assert torch.allclose(canon.norm(dim=-1).sort().values, turned.norm(dim=-1).sort().values, atol=1e-5)


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown shape class"):
        sample_shape("teapot", 64, rng)
    with pytest.raises(ValueError, match="num_points"):
        sample_shape("sphere", 2, rng)
    with pytest.raises(ValueError, match="scale_range"):
        sample_shape("sphere", 64, rng, scale_range=(0.0, 1.0))


def test_torus_is_area_uniform():
    # on a torus (R = 1, tube r) the outer half (cos v > 0) carries 1/2 + r / (pi R) of the area
    from molediff.data.shapes import _torus

    pts = _torus(np.random.default_rng(3), 40000)
    tube = np.abs(pts[:, 2]).max()
    outer = (np.hypot(pts[:, 0], pts[:, 1]) > 1.0).mean()
    assert abs(outer - (0.5 + tube / np.pi)) < 0.01
