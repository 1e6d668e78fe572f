"""Atomic writes leave files with the caller's umask, not mkstemp's owner-only 0600."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from molediff.temp_files import reserve_temp_path, set_default_mode


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_reserved_paths_are_unique_empty_hidden_siblings(tmp_path, umask_022):
    target = tmp_path / "model.json"
    a, b = reserve_temp_path(target), reserve_temp_path(target, suffix=".png")
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name.startswith(".model.json.") and a.suffix == ".tmp" and b.suffix == ".png"
    assert a.stat().st_size == 0 and _mode(a) == 0o644
    os.umask(0o077)
    assert _mode(reserve_temp_path(target)) == 0o600  # the umask decides, as for open()
    os.chmod(a, 0o600)
    os.umask(0o002)
    set_default_mode(a)
    assert _mode(a) == 0o664


def test_exported_models_checkpoints_caches_and_point_clouds_are_readable_by_others(tmp_path, umask_022):
    from molediff.data.cache import save_arrays
    from molediff.data.packed import PackedGraphs
    from molediff.pointcloud.io import save_npz
    from molediff.training.checkpoint import atomic_write_bytes
    from molediff.training.export import export_model

    export_model(tmp_path / "run", {"w": torch.ones(2)}, {"task": "toy"}, step=1)
    atomic_write_bytes(tmp_path / "note.json", b"{}")
    save_arrays(tmp_path / "cache" / "part", {"x": np.zeros(3)}, {"version": 1})
    save_npz(tmp_path / "clouds.npz", np.zeros((4, 3)))
    graph = (torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), torch.tensor([[0], [1]]),
             torch.zeros(1, 3, dtype=torch.long))
    PackedGraphs.from_graphs([graph], index=[0]).save(tmp_path / "packed.safetensors")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 7
    assert {p.name: _mode(p) for p in written} == {p.name: 0o644 for p in written}
    assert not [p for p in written if p.name.startswith(".")]  # no temporary file left behind
