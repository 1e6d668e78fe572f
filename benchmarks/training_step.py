"""Training-step time of the QM9 conformer model by execution layout and edge precision.

Builds the trainer of ``training_state/qm9_egnn/config.yaml`` (fresh weights: the step's cost does not
depend on them) on real QM9 training batches and times full optimiser steps (batch assembly, forward,
backward, clipping, AdamW, EMA) for each layout of the same function:

- ``per-size``: one dense block per molecule size (:mod:`molediff.nn.dense_blocks`; the CPU default),
- ``N blocks``: neighbouring sizes merged into at most N padded blocks,
- ``sparse``: the edge list with gathers and scatters (the default on GPUs).

Prints one row per precision and layout: mean milliseconds per step over ``--steps`` timed steps after two
warm-up steps, and molecules per second. ::

    python benchmarks/training_step.py --device cuda --batch 1024 --steps 8 \\
        --packed-train /tmp/qm9_train.safetensors --packed-val /tmp/qm9_valid1k.safetensors
    python benchmarks/training_step.py --device cpu --batch 64 --steps 2 --precisions fp32   # QM9 cache
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from molediff.nn.egnn import EGNN
from molediff.training.config import load_config
from molediff.training.trainer import Trainer

LAYOUTS = (("per-size", True, None), ("4 blocks", True, 4), ("2 blocks", True, 2), ("1 block", True, 1),
           ("sparse", False, None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training_state/qm9_egnn/config.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per row")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--packed-train", default=None, help="PackedGraphs file (scripts/pack_qm9.py); default: QM9 cache")
    parser.add_argument("--packed-val", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# device {name}, torch {torch.__version__}, batch {args.batch}, {args.steps} timed steps, seed {args.seed}")
    data = [f"data.packed_train={args.packed_train}"] if args.packed_train else []
    data += [f"data.packed_val={args.packed_val}"] if args.packed_val else []
    print(f"{'precision':<10}{'layout':<10}{'ms/step':>10}{'mol/s':>10}")
    for precision in args.precisions.split(","):
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(args.config, [
                f"output_dir={out}", "training.progress=false", f"training.device={args.device}",
                f"training.precision={precision}", f"training.batch_size={args.batch}", f"training.seed={args.seed}",
                "training.eval_every=0", "training.ckpt_every=0", "training.steps=1000000", *data])
            trainer = Trainer(cfg, resume=False)
            net = next(m for m in trainer.model.modules() if isinstance(m, EGNN))
            for layout, dense, limit in LAYOUTS:
                net.dense_execution, net.max_dense_blocks = dense, limit
                for _ in range(2):
                    trainer.train_step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                step = (time.perf_counter() - t0) / args.steps
                print(f"{trainer.precision:<10}{layout:<10}{1e3 * step:>10.1f}{args.batch / step:>10.0f}", flush=True)
            del trainer
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
