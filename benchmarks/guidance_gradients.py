"""One stereo-guidance step: the penalty's gradient through autograd against its closed form.

The shipped model samples seeded QM9 validation molecules until its first guided call below
``--sigma`` (Å); that call's bound penalty and the network's estimate ``x̂0`` are kept, sampling
stops, and the gradient at ``x̂0`` is timed both ways, alternating ``--repeats`` times, for each
thread count. The table gives the medians (ms per guidance step; the sampler takes 30 per guided
call) and the largest difference between the two gradients::

    python benchmarks/guidance_gradients.py --num-mols 100 -k 10 --seed 3 --threads 2,1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from unittest import mock

import torch

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import select_molecules
from molediff.chem.stereo_guidance import NO_UPPER, GuidancePenalty
from molediff.core.guidance import penalty_gradient
from molediff.data.qm9 import load_qm9


class _Captured(Exception):
    """Raised inside sampling once the guided call is recorded (nothing else needs to run)."""


def capture_guided_call(model, mols, num_confs: int, seed: int,
                        sigma_below: float) -> tuple[GuidancePenalty, torch.Tensor, float]:
    """The bound penalty, ``x̂0`` ``[N, 3]`` and σ of the first guided sampler call with σ below ``sigma_below``."""
    record: list = []
    bind = GuidancePenalty.bind

    def recording_bind(self, x0, sigma=None):
        bound = bind(self, x0, sigma)
        if sigma is not None and sigma < sigma_below:
            record.append((bound, x0.detach().clone(), float(sigma)))
            raise _Captured
        return bound

    with mock.patch.object(GuidancePenalty, "bind", recording_bind):
        try:
            model.sample([m.template for m in mols], num_confs, seed=seed)
        except _Captured:
            pass
    if not record:
        raise RuntimeError(f"no guided call below sigma = {sigma_below}")
    return record[0]


def time_per_step(fn, x: torch.Tensor, steps: int) -> float:
    """Mean seconds of ``fn(x)`` over ``steps`` calls."""
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(x)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-mols", type=int, default=100)
    parser.add_argument("-k", "--num-confs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=1.0, help="time the first guided call below this σ (Å)")
    parser.add_argument("--threads", default="2,1", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="guidance steps per timed repeat")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    threads = [int(t) for t in args.threads.split(",")]

    torch.set_num_threads(threads[0])
    model = load_model_for_evaluation(None).model
    mols = select_molecules(load_qm9("valid"), args.num_mols, seed=args.seed)
    penalty, x0, sigma = capture_guided_call(model, mols, args.num_confs, args.seed, args.sigma)
    constraints = penalty.c
    print(f"# guidance_gradients: QM9 valid, {len(mols)} molecules x {args.num_confs}, seed {args.seed}, "
          f"guided call at sigma {sigma:.3f} A: {x0.shape[0]} atoms, {constraints.pairs.shape[0]} distance pairs, "
          f"{constraints.quads.shape[0]} centres, {constraints.planar.shape[0]} planar dihedrals, "
          f"{constraints.hull.shape[0]} bridgeheads")
    pairs = constraints.pairs
    d = (x0[pairs[:, 0]] - x0[pairs[:, 1]]).norm(dim=-1)
    outside = (d < constraints.lower) | (d > constraints.upper)
    contact = constraints.upper >= NO_UPPER
    share = lambda mask: float(mask.float().mean())  # noqa: E731
    print(f"# distance pairs outside their bounds at x0: {share(outside):.1%} of all; contact pairs (no upper "
          f"bound) are {share(contact):.1%} of the pairs, {share(outside[contact]):.2%} of them outside; "
          f"1-2/1-3 pairs {share(outside[~contact]):.1%} outside")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(threads[0]).items()))
    def through_autograd(y: torch.Tensor) -> torch.Tensor:
        return penalty_gradient(lambda p: penalty(p), y)  # a plain function has no .gradient: autograd

    difference = float((through_autograd(x0) - penalty.gradient(x0)).abs().max())
    scale = float(penalty.gradient(x0).abs().max())
    print("| threads | autograd ms/step | closed form ms/step | speed-up | max abs difference (of max) |")
    print("|---|---|---|---|---|")
    for count in threads:
        torch.set_num_threads(count)
        times: dict[str, list[float]] = {"autograd": [], "closed": []}
        for fn in (through_autograd, penalty.gradient):  # warm-up
            time_per_step(fn, x0, 2)
        for _ in range(args.repeats):
            times["autograd"].append(time_per_step(through_autograd, x0, args.steps))
            times["closed"].append(time_per_step(penalty.gradient, x0, args.steps))
        auto, closed = (1e3 * statistics.median(times[k]) for k in ("autograd", "closed"))
        print(f"| {count} | {auto:.1f} | {closed:.1f} | {auto / closed:.2f}x | {difference:.1e} ({scale:.1e}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
