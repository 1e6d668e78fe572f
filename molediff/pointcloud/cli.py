"""``molediff sample-points``: sample class-conditional point clouds from a trained model.

Writes ``<out>/points.npz`` (``points [B, P, 3]``, ``labels [B]``, ``class_names``), one PLY per cloud
(``<out>/cloud_<i>_<class>.ply``) and a PNG grid of renders (``<out>/grid.png``).

Example::

    molediff sample-points --checkpoint runs/pointcloud_egnn --class torus --count 8 --points 512 \\
        --sampler heun --steps 32 --guidance 1.5 --seed 0 --out outputs/torus
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``sample-points`` options on ``parser``."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="run folder, exported model.json / .safetensors, or checkpoints/step_N.json")
    parser.add_argument("--class", dest="label", default="all",
                        help="shape class name or index, 'all' (cycle through classes) or 'none' (unconditional)")
    parser.add_argument("--count", type=int, default=8, help="number of clouds (default 8)")
    parser.add_argument("--points", type=int, default=512, help="points per cloud (default 512)")
    parser.add_argument("--sampler", default="heun", help="core sampler name (heun, euler, dpmpp_2m, ddim, pc, ...)")
    parser.add_argument("--steps", type=int, default=32, help="number of noise levels (default 32)")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance weight: 1 conditional, 0 unconditional, >1 guided")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda[:N]'")
    parser.add_argument("--out", default="outputs/points", help="output folder (default outputs/points)")
    parser.add_argument("--no-ply", action="store_true", help="skip the per-cloud PLY files")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG grid")


def run(args: argparse.Namespace) -> int:
    """Sample and write the outputs; returns 0 on success, 2 on bad arguments or an unusable model, 1 when
    sampling produced non-finite coordinates (nothing is written then)."""
    from molediff.data.shapes import SHAPE_CLASSES
    from molediff.pointcloud.io import save_npz, save_ply
    from molediff.pointcloud.sample import ModelLoadError, generate_point_clouds, load_point_model, parse_labels

    if args.count < 1 or args.points < 2 or args.steps < 1:
        print("molediff sample-points: error: need --count >= 1, --points >= 2, --steps >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        print(f"molediff sample-points: error: --out {out}: {blocker} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        labels = parse_labels(args.label, args.count)
        model, info = load_point_model(args.checkpoint, device=args.device)
    except (ValueError, ModelLoadError, FileNotFoundError) as exc:
        print(f"molediff sample-points: error: {exc}", file=sys.stderr)
        return 2
    sched = info["config"].get("schedule", {})
    start = time.perf_counter()
    try:
        clouds = generate_point_clouds(
            model, labels, args.points, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
            sigma_min=float(sched.get("sigma_min", 0.002)), sigma_max=float(sched.get("sigma_max", 80.0)),
            seed=args.seed, device=args.device,
        )
    except ValueError as exc:
        print(f"molediff sample-points: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # the sampler diverged; nothing is written
        print(f"molediff sample-points: error: {exc} (sampler {args.sampler}, {args.steps} steps, "
              f"guidance {args.guidance}, {args.points} points); try more --steps, a guidance weight nearer 1, "
              "or a point count nearer the model's training size", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    names = [SHAPE_CLASSES[i] if i < len(SHAPE_CLASSES) else "unconditional" for i in labels.tolist()]
    save_npz(out / "points.npz", clouds, labels=labels, class_names=list(SHAPE_CLASSES))
    if not args.no_ply:
        for i, (cloud, name) in enumerate(zip(clouds, names)):
            save_ply(out / f"cloud_{i:03d}_{name}.ply", cloud)
    if not args.no_png:
        from molediff.pointcloud.render import render_grid

        render_grid(clouds, out / "grid.png", titles=names)
    print(f"sampled {args.count} clouds x {args.points} points in {elapsed:.2f} s "
          f"({args.count / elapsed:.2f} clouds/s, model step {info['step']}); wrote {out}")
    return 0
