"""Benchmark: class-conditional point-cloud generation, equivariant EGNN vs a PointNet baseline.

For every model and shape class: generate ``--per-class`` clouds of ``--points`` points, compare them
with as many held-out test shapes (``molediff.data.shapes``, split ``test``) by 1-NNA-CD, COV-CD and
MMD-CD (squared Chamfer; definitions in ``molediff.pointcloud.metrics``), per class and pooled
over all classes. Each model is compared with two references: canonically oriented test shapes
(the training distribution) and randomly rotated ones (the rotation-invariant distribution an
E(3)-equivariant model with an isotropic prior actually generates).

Rotation test: for each non-spherical cloud take the principal axis that stands out (the covariance
eigenvector whose eigenvalue is farthest from the other two); under uniformly random orientations
its components ``|v_z|`` and ``|v_x|`` are Uniform(0, 1). Kolmogorov–Smirnov p-values are printed,
with the held-out shapes (canonical and rotated) as controls. Throughput = generated clouds per
second of sampling on ``--device`` (the sampler's wall time, synchronised on CUDA).

Example (CPU, small)::

    python3 benchmarks/pointclouds.py --egnn runs/pointcloud_egnn --pointnet runs/pointcloud_pointnet \\
        --points 512 --per-class 16 --steps 32 --seed 0

Sampling can be done elsewhere (``--save-samples DIR``) and evaluated later (``--samples DIR``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from molediff.data.shapes import SHAPE_CLASSES, make_shapes
from molediff.pointcloud.io import save_npz
from molediff.pointcloud.metrics import point_cloud_metrics
from molediff.pointcloud.render import render_grid
from molediff.pointcloud.sample import generate_point_clouds, load_point_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--egnn", help="EGNN run folder / model.json")
    p.add_argument("--pointnet", help="PointNet run folder / model.json")
    p.add_argument("--samples", help="folder with <model>_samples.npz from an earlier --save-samples run")
    p.add_argument("--save-samples", help="write <model>_samples.npz and <model>_grid.png here")
    p.add_argument("--classes", nargs="+", default=list(SHAPE_CLASSES))
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--per-class", type=int, default=32)
    p.add_argument("--sampler", default="heun")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write all numbers to this JSON file")
    return p.parse_args(argv)


def distinct_axis(clouds: np.ndarray) -> np.ndarray:
    """Per cloud, the covariance eigenvector whose eigenvalue is farthest from the other two.

    Shapes: ``[B, P, 3]`` -> ``[B, 3]`` (unit vectors, sign arbitrary).
    """
    centred = clouds - clouds.mean(axis=1, keepdims=True)
    cov = np.einsum("bpi,bpj->bij", centred, centred) / clouds.shape[1]
    vals, vecs = np.linalg.eigh(cov)  # ascending
    take_min = (vals[:, 1] - vals[:, 0]) > (vals[:, 2] - vals[:, 1])
    return np.where(take_min[:, None], vecs[:, :, 0], vecs[:, :, 2])


def rotation_test(clouds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """KS tests of ``|v_z|`` and ``|v_x|`` of the distinct principal axis against Uniform(0, 1) (spheres excluded)."""
    keep = labels != SHAPE_CLASSES.index("sphere")
    axis = np.abs(distinct_axis(clouds[keep]))
    out: dict[str, float] = {"n": int(keep.sum())}
    for name, col in (("z", 2), ("x", 0)):
        res = stats.kstest(axis[:, col], "uniform")
        out[f"ks_{name}"], out[f"p_{name}"] = float(res.statistic), float(res.pvalue)
    return out


def generate(path: str, classes: list[str], args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, float]:
    """Generate ``per_class`` clouds of every class; returns points, labels and clouds per second."""
    model, info = load_point_model(path, device=args.device)
    sched = info["config"].get("schedule", {})
    clouds, labels, seconds = [], [], 0.0
    for k, name in enumerate(classes):
        lab = torch.full((args.per_class,), SHAPE_CLASSES.index(name), dtype=torch.long)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        x = generate_point_clouds(
            model, lab, args.points, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
            sigma_min=float(sched.get("sigma_min", 0.002)), sigma_max=float(sched.get("sigma_max", 80.0)),
            seed=args.seed + 1000 * k, device=args.device,
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        clouds.append(x.float().cpu().numpy())
        labels.append(lab.numpy())
    total = len(classes) * args.per_class
    return np.concatenate(clouds), np.concatenate(labels), total / seconds


def metrics_table(gen: np.ndarray, gl: np.ndarray, ref: np.ndarray, rl: np.ndarray, classes: list[str],
                  device: str) -> dict[str, dict[str, float]]:
    """Per-class and pooled MMD-CD / COV-CD / 1-NNA-CD."""
    dev = torch.device(device)
    out: dict[str, dict[str, float]] = {}
    for name in classes:
        c = SHAPE_CLASSES.index(name)
        g, r = torch.from_numpy(gen[gl == c]).to(dev), torch.from_numpy(ref[rl == c]).to(dev)
        out[name] = point_cloud_metrics(g, r)
    out["all"] = point_cloud_metrics(torch.from_numpy(gen).to(dev), torch.from_numpy(ref).to(dev))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    models = {k: v for k, v in (("egnn", args.egnn), ("pointnet", args.pointnet)) if v or args.samples}
    refs = {}
    for orient, rotate in (("canonical", False), ("rotated", True)):
        pts, lab = make_shapes(args.per_class, args.points, classes=args.classes, split="test",
                               seed=args.seed, rotate=rotate)
        refs[orient] = (pts.numpy(), lab.numpy())
    report: dict = {"args": vars(args), "controls": {}, "models": {}}
    for orient, (pts, lab) in refs.items():
        report["controls"][orient] = rotation_test(pts, lab)
    for name, path in models.items():
        if args.samples:
            with np.load(Path(args.samples) / f"{name}_samples.npz") as data:
                gen, gl = data["points"], data["labels"]
                rate = float(data["clouds_per_s"]) if "clouds_per_s" in data.files else float("nan")
        else:
            gen, gl, rate = generate(path, args.classes, args)
        if args.save_samples:
            out = Path(args.save_samples)
            save_npz(out / f"{name}_samples.npz", gen, labels=gl, clouds_per_s=np.array(rate))
            show = np.concatenate([gen[gl == SHAPE_CLASSES.index(c)][:2] for c in args.classes])
            titles = [c for c in args.classes for _ in range(min(2, args.per_class))]
            render_grid(show, out / f"{name}_grid.png", titles=titles, columns=8, point_size=1.0, dpi=70)
        entry = {"clouds_per_s": rate, "rotation": rotation_test(gen, gl)}
        for orient, (pts, lab) in refs.items():
            entry[orient] = metrics_table(gen, gl, pts, lab, args.classes, args.device)
        report["models"][name] = entry
    print_report(report, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(f"# point clouds: {args.points} points, {args.per_class} clouds/class, sampler {args.sampler} "
          f"{args.steps} steps, guidance {args.guidance}, seed {args.seed}, device {args.device}")
    print("\n1-NNA-CD % (lower is better, 50 ideal) | COV-CD % | MMD-CD x1e3, vs held-out test shapes")
    cols = [*args.classes, "all"]
    print("| model | reference | metric | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 3) + "|")
    for name, entry in report["models"].items():
        for orient in ("canonical", "rotated"):
            table = entry[orient]
            for key, scale, fmt in (("1-NNA-CD", 100, "{:.1f}"), ("COV-CD", 100, "{:.1f}"), ("MMD-CD", 1e3, "{:.2f}")):
                vals = " | ".join(fmt.format(scale * table[c][key]) for c in cols)
                print(f"| {name} | {orient} | {key} | {vals} |")
    print("\nrotation test: KS of |axis . z| and |axis . x| vs Uniform(0,1) (spheres excluded); p < 0.01 = not uniform")
    print("| set | n | KS z | p z | KS x | p x | clouds/s |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"test shapes, {k}", v, float("nan")) for k, v in report["controls"].items()]
    rows += [(f"{k} samples", v["rotation"], v["clouds_per_s"]) for k, v in report["models"].items()]
    for label, r, rate in rows:
        print(f"| {label} | {r['n']} | {r['ks_z']:.3f} | {r['p_z']:.2g} | {r['ks_x']:.3f} | {r['p_x']:.2g} | {rate:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
