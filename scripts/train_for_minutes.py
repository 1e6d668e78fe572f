"""Continue a training run for a fixed wall-clock budget, sizing the LR schedule to the hardware.

A GPU window is short and its throughput is not known in advance. ``molediff train --max-minutes``
alone would stop mid-schedule (the cosine decay spans ``training.steps``), so this driver

1. resumes the run and trains ``--probe-steps`` steps under the config's schedule length,
2. measures the steady step rate of that probe from the trainer's log (between its first and last
   logged training rows, so start-up, CUDA warm-up, the final validation and the checkpoint are left
   out; the probe's wall-clock rate where fewer than two rows were logged) and its fixed cost (the
   probe's wall time beyond its logged training time: building the trainer, loading data, resuming,
   validating, checkpointing), which the second phase pays again,
3. sets ``training.steps`` so that the cosine decay ends just inside the remaining budget, and
   resumes again to finish (``training.max_minutes`` stays as a hard stop).

On an H200 the wall-clock rate of a 200-step probe was half the steady one (12.7 against 25.7 steps/s):
sized on it, an 8.2-minute window ended its schedule after 3.9 minutes.

A run resumed late in its schedule would otherwise spend the whole window near its floor learning rate;
``--restart-lr`` restarts the schedule at the resumed step (``optimiser.restart_step``): warm-up back to
``optimiser.lr`` (set it with ``--set optimiser.lr=...``), then the cosine sized to the window.

The checkpoints are ordinary trainer checkpoints: a later run (GPU or CPU) resumes from them with
``molediff train CONFIG --out RUN --resume``. Both phases are logged to ``RUN/log.jsonl``.

Example
-------
::

    python scripts/train_for_minutes.py configs/conformer_egnn.yaml --out training_state/qm9_egnn \\
        --minutes 7.5 --set training.batch_size=256 --set data.packed_train=qm9_train.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from molediff.training.checkpoint import CheckpointManager
from molediff.training.config import load_config
from molediff.training.trainer import Trainer


def _train(config: str, out: str, overrides: list[str], max_steps: int | None) -> tuple[Trainer, float]:
    cfg = load_config(config, [*overrides, f"output_dir={out}", "training.progress=false"])
    t0 = time.monotonic()
    trainer = Trainer(cfg, resume=True, max_steps=max_steps)
    trainer.fit()
    return trainer, time.monotonic() - t0


def _log_size(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.exists() else 0


def steady_rate(log_path: Path, offset: int) -> tuple[float, float] | None:
    """``(steps per second, seconds)`` between the first and last training rows written to ``log_path`` past
    byte ``offset`` (one trainer's rows; their ``time_s`` counts from its start, the seconds returned are the
    last row's); None with fewer than two rows."""
    if not log_path.exists():
        return None
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    rows = [r for r in rows if r.get("kind") == "train" and "time_s" in r]
    if len(rows) < 2 or rows[-1]["time_s"] <= rows[0]["time_s"]:
        return None
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["time_s"] - first["time_s"]), float(last["time_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True, help="run folder (resumed from its newest checkpoint)")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget for both phases")
    parser.add_argument("--probe-steps", type=int, default=300)
    parser.add_argument("--safety", type=float, default=0.92, help="fraction of the estimated steps to schedule")
    parser.add_argument("--restart-lr", action="store_true",
                        help="warm restart: the schedule starts again at the resumed step (optimiser.restart_step), "
                             "warm-up back to optimiser.lr during the probe, then the cosine sized to the window")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    start = time.monotonic()
    budget_s = 60.0 * args.minutes
    provisional = load_config(args.config, args.overrides).training.steps
    saved = CheckpointManager(Path(args.out) / "checkpoints").steps()
    first = max(saved) if saved else 0  # the step the probe resumes from
    if args.restart_lr:
        args.overrides = [*args.overrides, f"optimiser.restart_step={first}"]
    log_path = Path(args.out) / "log.jsonl"
    log_offset = _log_size(log_path)
    t_probe = time.monotonic()
    # a run already past the config's schedule would stop at once: let the probe's schedule reach past it
    probe_total = [f"training.steps={first + args.probe_steps}"] if provisional < first + args.probe_steps else []
    trainer, _ = _train(args.config, args.out, [*args.overrides, *probe_total], first + args.probe_steps)
    done = trainer.step - first
    if done <= 0:
        raise SystemExit(f"the probe trained no step (run at step {first}); nothing to size the schedule on")
    probe_s = time.monotonic() - t_probe
    rate, overhead = done / probe_s, 0.0
    steady = steady_rate(log_path, log_offset)
    if steady is not None:
        rate, logged_s = steady
        overhead = max(0.0, probe_s - logged_s)  # start-up, validation and checkpoint, paid again below
    remaining = budget_s - (time.monotonic() - start)
    total = trainer.step + int(args.safety * rate * max(0.0, remaining - overhead))
    minutes_left = max(0.5, remaining / 60.0)
    print(json.dumps({"resumed_at": first, "lr_restart": bool(args.restart_lr), "probe_steps": done,
                      "probe_wall_steps_per_s": round(done / probe_s, 2), "probe_steps_per_s": round(rate, 2),
                      "fixed_cost_s": round(overhead, 1), "seconds_left": round(remaining, 1),
                      "scheduled_total_steps": total}), flush=True)
    del trainer
    trainer, elapsed = _train(args.config, args.out,
                              [*args.overrides, f"training.steps={total}", f"training.max_minutes={minutes_left}"], None)
    print(json.dumps({"final_step": trainer.step, "phase2_s": round(elapsed, 1),
                      "total_s": round(time.monotonic() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
