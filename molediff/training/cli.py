"""``molediff train CONFIG``: train a model from a YAML config (single process or ``torchrun``).

Examples
--------
::

    molediff train configs/toy.yaml --out runs/toy
    molediff train configs/toy.yaml --out runs/toy --resume --max-minutes 14   # bursts
    molediff train configs/toy.yaml --set training.steps=200 --set optimiser.lr=3e-4
    torchrun --nproc-per-node 2 -m molediff.training.cli configs/toy.yaml --out runs/toy
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``train`` options on ``parser``."""
    parser.add_argument("config", help="YAML config file (see configs/README.md)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: the config's output_dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in the run folder (fresh start if none)")
    parser.add_argument("--device", help="'auto', 'cpu', 'cuda' or 'cuda:N' (overrides training.device)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop with a checkpoint at global step N; the LR schedule still spans training.steps")
    parser.add_argument("--max-minutes", type=float, metavar="M",
                        help="wall-time budget of this run; save and stop cleanly when spent")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. --set training.batch_size=64 (repeatable; YAML values)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run training; returns 0 on success (finished or cleanly stopped), 2 on a usage error."""
    from molediff.training.checkpoint import CheckpointError
    from molediff.training.config import ConfigError, load_config
    from molediff.core.device import DeviceUnavailableError
    from molediff.training.distributed import shutdown_distributed
    from molediff.training.registry import TaskResolutionError
    from molediff.training.trainer import RunDirError, Trainer

    if args.max_steps is not None and args.max_steps < 1:
        print(f"molediff train: error: --max-steps must be >= 1, got {args.max_steps}", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"training.device={args.device}")
    if args.max_minutes is not None:
        overrides.append(f"training.max_minutes={args.max_minutes}")
    if args.no_progress:
        overrides.append("training.progress=false")
    clean = False
    try:
        cfg = load_config(args.config, overrides)
        if args.out is not None:  # a path, taken literally (not parsed as YAML like --set values)
            cfg.output_dir = args.out
        trainer = Trainer(cfg, resume=args.resume, max_steps=args.max_steps)
        result = trainer.fit()
        trainer.close()
        clean = True
    except (ConfigError, TaskResolutionError, RunDirError, CheckpointError, DeviceUnavailableError) as exc:
        print(f"molediff train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed(sync=clean)
    if trainer.env.is_main:
        print(f"step {result.step} ({result.reason}); weights: {result.export}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m molediff.training.cli`` (handy under ``torchrun``)."""
    parser = argparse.ArgumentParser(prog="molediff train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
