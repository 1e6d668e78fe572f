"""The shipping format: EMA weights as ``model.safetensors`` + ``model.json``, checked on load."""

import json
from pathlib import Path

import pytest
import torch

import molediff
from molediff.training.checkpoint import CheckpointError
from molediff.training.export import ExportError, export_model, load_exported

WEIGHTS = Path(molediff.__file__).resolve().parent / "weights"


def _export(tmp_path: Path) -> Path:
    state = {"net.weight": torch.randn(8, 3), "net.bias": torch.zeros(8)}
    return export_model(tmp_path, state, {"task": "toy", "model": {"hidden": 8}}, step=5, card={"name": "t"})


def test_round_trip_records_and_checks_the_weights(tmp_path):
    weights = _export(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["weights_bytes"] == weights.stat().st_size and len(meta["weights_sha256"]) == 64
    for where in (tmp_path, tmp_path / "model.json", weights, tmp_path / "model"):
        state, meta = load_exported(where)
        assert set(state) == {"net.weight", "net.bias"} and meta["step"] == 5


@pytest.mark.parametrize("damage, message", [
    (lambda w: w.write_bytes(w.read_bytes()[: w.stat().st_size // 2]), "truncated"),
    (lambda w: w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0"), "SHA-256"),
    (lambda w: w.unlink(), "missing"),
])
def test_damaged_weights_are_a_typed_error_naming_the_file(tmp_path, damage, message):
    """A truncated weights file was a bare SafetensorError without the file's name; one with changed bytes
    loaded silently; a missing one was a FileNotFoundError."""
    weights = _export(tmp_path)
    damage(weights)
    with pytest.raises(ExportError, match=message) as info:
        load_exported(tmp_path)
    assert str(weights) in str(info.value) and isinstance(info.value, CheckpointError)


def test_weights_unreadable_without_a_recorded_checksum(tmp_path):
    weights = _export(tmp_path)
    weights.write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match="cannot read the weights"):
        load_exported(tmp_path, verify=False)


def test_unreadable_or_foreign_description(tmp_path):
    _export(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ExportError, match="cannot read the model description .*model.json"):
        load_exported(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"step": 3, "tensors_sha256": "0" * 64}))  # a checkpoint sidecar
    with pytest.raises(ExportError, match="not an exported molediff model"):
        load_exported(tmp_path)
    with pytest.raises(ExportError, match="cannot read"):
        load_exported(tmp_path / "elsewhere")


@pytest.mark.parametrize("name", ["qm9_egnn", "pointcloud_egnn", "pointcloud_pointnet"])
def test_shipped_weights_load_checked_against_their_recorded_checksum(name):
    state, meta = load_exported(WEIGHTS / f"{name}.json")
    assert len(meta["weights_sha256"]) == 64 and meta["weights_bytes"] > 0
    assert state and all(torch.is_tensor(v) for v in state.values())


def test_an_export_without_a_recorded_checksum_loads_with_a_warning(tmp_path):
    """Exports written before the checksum existed still load, but no longer silently unverified."""
    _export(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["weights_sha256"], meta["weights_bytes"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="records no SHA-256.*not verified"):
        state, _ = load_exported(tmp_path)
    assert set(state) == {"net.weight", "net.bias"}
