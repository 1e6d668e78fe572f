"""Tests for molediff.pointcloud.io: round trips through every format and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molediff.pointcloud.io import (
    EmptyPointCloudError,
    NonFinitePointCloudError,
    PointCloudFormatError,
    PointCloudIOError,
    PointCloudShapeError,
    load_point_cloud,
    save_npz,
    save_ply,
)


@pytest.fixture
def cloud() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(50, 3)).astype(np.float32)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, cloud, binary):
    path = tmp_path / "c.ply"
    save_ply(path, torch.from_numpy(cloud), binary=binary)
    back = load_point_cloud(path)
    assert back.shape == (50, 3) and back.dtype == np.float64
    np.testing.assert_allclose(back, cloud, rtol=1e-6, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


def test_npz_and_npy_round_trip(tmp_path, cloud):
    batch = np.stack([cloud, -cloud])
    save_npz(tmp_path / "b.npz", batch, labels=[1, 2], steps=np.array(10))
    np.testing.assert_allclose(load_point_cloud(tmp_path / "b.npz"), batch)
    with np.load(tmp_path / "b.npz") as data:
        assert data["labels"].tolist() == [1, 2] and int(data["steps"]) == 10
    np.save(tmp_path / "a.npy", cloud)
    np.testing.assert_allclose(load_point_cloud(tmp_path / "a.npy"), cloud)
    np.savez(tmp_path / "two.npz", a=cloud, b=cloud)
    with pytest.raises(PointCloudFormatError, match="key="):
        load_point_cloud(tmp_path / "two.npz")
    np.testing.assert_allclose(load_point_cloud(tmp_path / "two.npz", key="b"), cloud)


def test_xyz_text(tmp_path, cloud):
    path = tmp_path / "c.xyz"
    body = "# x y z r g b\n" + "\n".join(f"{x} {y}\t{z} 255 0 0" for x, y, z in cloud) + "\n\n"
    path.write_text(body)
    np.testing.assert_allclose(load_point_cloud(path), cloud, rtol=1e-6)
    atomic = tmp_path / "mol.xyz"
    atomic.write_text("2\ncomment\nH 0 0 0\nH 0 0 0.74\n")
    with pytest.raises(PointCloudFormatError, match="ASE"):
        load_point_cloud(atomic)


def test_binary_ply_with_extra_properties_and_faces(tmp_path):
    verts = np.zeros(3, dtype=[("x", "<f8"), ("nx", "<f4"), ("y", "<f8"), ("z", "<f8"), ("red", "u1")])
    verts["x"], verts["y"], verts["z"] = [0, 1, 2], [3, 4, 5], [6, 7, 8]
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty double x\nproperty float nx\n"
        "property double y\nproperty double z\nproperty uchar red\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    path = tmp_path / "m.ply"
    path.write_bytes(header.encode() + verts.tobytes() + bytes([3]) + np.arange(3, dtype="<i4").tobytes())
    np.testing.assert_allclose(load_point_cloud(path), [[0, 3, 6], [1, 4, 7], [2, 5, 8]])


def test_typed_errors(tmp_path, cloud):
    empty = tmp_path / "e.xyz"
    empty.write_text("")
    with pytest.raises(EmptyPointCloudError):
        load_point_cloud(empty)
    comments = tmp_path / "c.xyz"
    comments.write_text("# nothing\n")
    with pytest.raises(EmptyPointCloudError):
        load_point_cloud(comments)
    nan = cloud.copy()
    nan[4, 1] = np.nan
    np.save(tmp_path / "n.npy", nan)
    with pytest.raises(NonFinitePointCloudError, match="index 4"):
        load_point_cloud(tmp_path / "n.npy")
    np.save(tmp_path / "s.npy", np.zeros((5, 2)))
    with pytest.raises(PointCloudShapeError, match=r"\[5, 2\]"):
        load_point_cloud(tmp_path / "s.npy")
    with pytest.raises(PointCloudFormatError, match="unsupported extension"):
        (tmp_path / "x.obj").write_text("v 0 0 0\n")
        load_point_cloud(tmp_path / "x.obj")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\n"
                    b"property float y\nproperty float z\nend_header\n" + b"\0" * 20)
    with pytest.raises(PointCloudFormatError, match="truncated"):
        load_point_cloud(bad)
    with pytest.raises(FileNotFoundError):
        load_point_cloud(tmp_path / "missing.ply")
    assert issubclass(EmptyPointCloudError, PointCloudIOError) and issubclass(PointCloudIOError, ValueError)


def test_writers_refuse_bad_points(tmp_path, cloud):
    nan = cloud.copy()
    nan[0, 0] = np.inf
    with pytest.raises(NonFinitePointCloudError):
        save_ply(tmp_path / "n.ply", nan)
    with pytest.raises(NonFinitePointCloudError):
        save_npz(tmp_path / "n.npz", nan)
    with pytest.raises(PointCloudShapeError):
        save_ply(tmp_path / "b.ply", np.stack([cloud, cloud]))  # PLY holds one cloud
    with pytest.raises(EmptyPointCloudError):
        save_npz(tmp_path / "e.npz", np.zeros((0, 3)))
    assert not list(tmp_path.iterdir())


def test_ascii_ply_keeps_every_float32_bit(tmp_path):
    # '%.7g' text lost up to 5e-7 per coordinate: an ASCII PLY did not read back as the float32 values a
    # binary PLY of the same cloud holds (float32 needs 9 significant digits to round-trip)
    cloud = np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32)
    cloud[0] = [1e-30, -3.4e38, 123456.789]
    save_ply(tmp_path / "a.ply", cloud, binary=False)
    save_ply(tmp_path / "b.ply", cloud, binary=True)
    text, binary = load_point_cloud(tmp_path / "a.ply"), load_point_cloud(tmp_path / "b.ply")
    np.testing.assert_array_equal(text, binary)
    np.testing.assert_array_equal(text.astype(np.float32), cloud)


def test_writers_refuse_coordinates_that_overflow_float32(tmp_path):
    # a finite float64 coordinate beyond float32's range was cast to inf and written: the PLY / NPZ then
    # held a non-finite value that load_point_cloud itself refuses
    big = np.array([[1e39, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(NonFinitePointCloudError, match="float32"):
        save_ply(tmp_path / "b.ply", big)
    with pytest.raises(NonFinitePointCloudError, match="float32"):
        save_ply(tmp_path / "a.ply", big, binary=False)
    with pytest.raises(NonFinitePointCloudError, match="float32"):
        save_npz(tmp_path / "b.npz", big[None])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("count", ["-1", "3.5", "many"])
def test_bad_ply_vertex_count_is_a_format_error(tmp_path, count):
    # a negative or non-integer count raised a bare ValueError (e.g. "read length must be non-negative")
    # that did not name the file
    path = tmp_path / "bad.ply"
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    path.write_bytes(header.encode("ascii") + np.arange(12, dtype="<f4").tobytes())
    with pytest.raises(PointCloudFormatError, match="bad.ply"):
        load_point_cloud(path)
