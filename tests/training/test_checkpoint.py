import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

import molediff.training.checkpoint as ck
from molediff.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)
from molediff.training.rng import capture_rng_state, restore_rng_state


@pytest.fixture
def no_pickle(monkeypatch):
    """Make any pickle-based load fail loudly."""

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle / torch.load used while loading a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


def _tensors():
    return {"model.w": torch.arange(6.0).reshape(2, 3), "model.i": torch.tensor([1, 2], dtype=torch.int64),
            "scalar": torch.tensor(3.5), "bf": torch.ones(2, dtype=torch.bfloat16)}


def test_round_trip_without_pickle(tmp_path, no_pickle):
    save_checkpoint(tmp_path / "c", _tensors(), {"step": 7, "config": {"a": [1, 2]}})
    for path in (tmp_path / "c.json", tmp_path / "c.safetensors", tmp_path / "c"):
        loaded = load_checkpoint(path)
        assert loaded.meta["step"] == 7 and loaded.meta["config"] == {"a": [1, 2]}
        for k, v in _tensors().items():
            assert torch.equal(loaded.tensors[k], v) and loaded.tensors[k].dtype == v.dtype
        assert set(loaded.section("model")) == {"w", "i"}


def test_optimizer_state_flatten_round_trip():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    assert all(k.startswith("optim.state.") for k in tensors)
    meta = json.loads(json.dumps(meta))  # must survive JSON
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    opt2.load_state_dict(unflatten_optimizer_state(tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx in a["state"]:
        for name, value in a["state"][idx].items():
            assert torch.equal(value, b["state"][idx][name])


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(5)
    np.random.normal()
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng_state({"data": gen})
    assert all(v.dtype == torch.uint8 for v in state.values())
    first = (torch.rand(3), np.random.normal(size=3), random.gauss(0, 1), torch.rand(2, generator=gen))
    torch.manual_seed(1), np.random.seed(1), random.seed(1), gen.manual_seed(1)
    restore_rng_state(state, {"data": gen})
    second = (torch.rand(3), np.random.normal(size=3), random.gauss(0, 1), torch.rand(2, generator=gen))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2] and torch.equal(first[3], second[3])


def test_keep_last_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        mgr.save(step, {"x": torch.full((2,), float(step))}, {"step": step}, best=(step == 20))
    assert mgr.steps() == [20, 30]
    assert not (tmp_path / "step_00000010.safetensors").exists()
    assert load_checkpoint(mgr.latest()).meta["step"] == 30
    assert load_checkpoint(mgr.best()).meta["step"] == 20


def test_crash_while_writing_tensors_keeps_previous(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(1, {"x": torch.zeros(3)}, {"step": 1})

    def crashing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 5)  # a torn partial file
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        mgr.save(2, {"x": torch.ones(3)}, {"step": 2})
    assert mgr.steps() == [1]
    assert load_checkpoint(mgr.latest()).meta["step"] == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_crash_before_sidecar_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(1, {"x": torch.zeros(3)}, {"step": 1})
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # killed between the tensor file and the sidecar
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(2, {"x": torch.ones(3)}, {"step": 2})
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert (tmp_path / "step_00000002.safetensors").exists()  # orphan tensors, no sidecar
    assert mgr.steps() == [1] and load_checkpoint(mgr.latest()).meta["step"] == 1


def test_overwritten_tensors_fail_checksum_and_latest_falls_back(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(1, {"x": torch.zeros(3)}, {"step": 1})
    mgr.save(2, {"x": torch.ones(3)}, {"step": 2})
    save_checkpoint(tmp_path / "other", {"x": torch.full((3,), 9.0)}, {})
    os.replace(tmp_path / "other.safetensors", tmp_path / "step_00000002.safetensors")
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "step_00000002.json")
    assert load_checkpoint(mgr.latest()).meta["step"] == 1


def test_missing_files_raise_typed_errors(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nope.json")
    save_checkpoint(tmp_path / "c", {"x": torch.zeros(1)}, {})
    (tmp_path / "c.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "c.json")


@pytest.mark.parametrize("sidecar", ['[1, 2]', '{"tensors_file": 3}', '{"tensors_file": ""}',
                                     '{"tensors_file": "../step_00000001.safetensors"}'])
def test_a_malformed_sidecar_is_a_checkpoint_error_and_latest_falls_back(tmp_path, sidecar):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(1, {"x": torch.zeros(3)}, {"step": 1})
    mgr.save(2, {"x": torch.ones(3)}, {"step": 2})
    (tmp_path / "step_00000002.json").write_text(sidecar)
    with pytest.raises(CheckpointError, match="step_00000002.json"):
        load_checkpoint(tmp_path / "step_00000002.json")
    assert load_checkpoint(mgr.latest()).meta["step"] == 1
