"""scripts/train_for_minutes.py: probe, size the cosine schedule to the budget, finish; also past the config's schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from molediff.training.checkpoint import CheckpointManager
from tests.scripts.script_loader import load_script
from tests.training.conftest import toy_raw


def _driver():
    return load_script("scripts/train_for_minutes.py", "molediff_train_for_minutes")


def _run(driver, config: Path, out: Path, capsys, *extra: str) -> dict:
    assert driver.main([str(config), "--out", str(out), "--minutes", "0.05", "--probe-steps", "5", *extra]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return {k: v for line in lines for k, v in line.items()}


def test_resumes_and_trains_even_past_the_configs_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_raw(out, steps=8, ckpt_every=4)))
    driver = _driver()
    first = _run(driver, config, out, capsys)
    assert first["resumed_at"] == 0 and first["probe_steps"] == 5 and first["final_step"] >= 5
    # the run now stands at or past training.steps = 8: the probe must still train, not stop at once
    again = _run(driver, config, out, capsys)
    assert again["resumed_at"] == first["final_step"] and again["probe_steps"] == 5
    assert again["final_step"] >= again["resumed_at"] + 5
    assert max(CheckpointManager(out / "checkpoints").steps()) == again["final_step"]


def test_restart_lr_warms_up_again_from_the_resumed_step(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_raw(out, steps=8, ckpt_every=4, log_every=1)))
    driver = _driver()
    first = _run(driver, config, out, capsys)
    again = _run(driver, config, out, capsys, "--restart-lr")
    assert again["lr_restart"] and again["resumed_at"] == first["final_step"]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    lrs = {row["step"]: row["lr"] for row in logged if "lr" in row}
    resumed = again["resumed_at"]
    # toy config: lr 3e-3, warm-up 4 steps; the step after the resume is the first warm-up step again
    assert lrs[resumed + 1] == pytest.approx(3e-3 / 4)
    assert lrs[resumed + 4] == pytest.approx(3e-3)
    assert lrs[resumed] < 3e-3 / 2  # the first run had decayed to near its floor (cosine to 0 at step 8)


def test_steady_rate_reads_only_the_newest_trainers_rows(tmp_path):
    driver = _driver()
    log = tmp_path / "log.jsonl"
    old = [{"kind": "train", "step": 10, "time_s": 1.0}, {"kind": "train", "step": 20, "time_s": 50.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in old))
    offset = log.stat().st_size
    assert driver.steady_rate(log, offset) is None  # nothing new yet
    new = [{"kind": "train", "step": 10, "time_s": 6.0}, {"kind": "val", "step": 10},
           {"kind": "train", "step": 20, "time_s": 8.0}, {"kind": "train", "step": 30, "time_s": 10.0}]
    with open(log, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in new))
    rate, seconds = driver.steady_rate(log, offset)
    assert rate == pytest.approx(20 / 4.0) and seconds == 10.0  # start-up before the first row left out
    assert driver.steady_rate(tmp_path / "missing.jsonl", 0) is None


def test_probe_reports_the_steady_rate_and_fixed_cost(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_raw(out, steps=8, ckpt_every=4, log_every=1)))
    row = _run(_driver(), config, out, capsys)
    assert row["probe_steps_per_s"] >= row["probe_wall_steps_per_s"] > 0
    assert row["fixed_cost_s"] >= 0
