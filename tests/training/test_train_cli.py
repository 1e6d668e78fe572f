import os
import subprocess
import sys
from pathlib import Path

import yaml

from molediff.cli import main
from molediff.training.checkpoint import CheckpointManager, load_checkpoint
from molediff.training.logging import read_log

from tests.training.conftest import toy_raw

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, **training):
    path = tmp_path / "toy.yaml"
    raw = toy_raw(tmp_path / "unused", **training)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_resume_and_overrides(tmp_path, capsys):
    cfg = _write(tmp_path, steps=12, ckpt_every=5)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--max-steps", "6", "--set", "training.log_every=2"]) == 0
    assert CheckpointManager(out / "checkpoints").steps() == [5, 6]
    assert main(["train", str(cfg), "--out", str(out)]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(out), "--resume", "--set", "training.log_every=2"]) == 0
    meta = load_checkpoint(CheckpointManager(out / "checkpoints").latest()).meta
    assert meta["step"] == 12 and meta["config"]["training"]["log_every"] == 2
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [2, 4, 6, 8, 10, 12]
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["output_dir"] == str(out)


def test_config_errors_exit_2(tmp_path, capsys):
    cfg = _write(tmp_path)
    assert main(["train", str(cfg), "--set", "training.stepz=3"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert main(["train", str(cfg), "--set", "task=not.a.module:Task"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_console_entry_point_subprocess(tmp_path):
    cfg = _write(tmp_path, steps=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "molediff", "train", str(cfg), "--out", str(tmp_path / "r"),
                           "--device", "cpu", "--max-minutes", "5"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "step 3 (completed)" in proc.stdout


def test_out_is_taken_literally(tmp_path, monkeypatch):
    """``--out`` went through the YAML override parser: ``--out 0755`` trained into a folder named ``493``."""
    cfg = _write(tmp_path, steps=2)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(cfg), "--out", "0755"]) == 0
    assert (tmp_path / "0755" / "model.safetensors").is_file() and not (tmp_path / "493").exists()


def test_usage_errors_exit_2_without_traceback(tmp_path, capsys, monkeypatch):
    """An unavailable device, a null output_dir and a negative --max-steps raised tracebacks (or, for the
    latter, wrote a step-0 checkpoint and exported untrained weights)."""
    cfg = _write(tmp_path, steps=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["train", str(cfg), "--out", "r1", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert main(["train", str(cfg), "--set", "output_dir=null"]) == 2
    assert "output_dir" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", "r2", "--max-steps", "-1"]) == 2
    assert "max-steps" in capsys.readouterr().err and not (tmp_path / "r2").exists()
