"""Choose the prior share of ``--start mixed``: the model's own samples and ETKDG-refined ones, mixed.

The model sampling from noise and the model refining ETKDG conformers (``--start etkdg``) miss in
different places: the first on flexible molecules, whose DFT rotamer it does not draw, the second where
ETKDG places a torsion or ring wrongly. ``EtkdgRefinedSampler(prior_share=s)`` draws ``prior_count(K, s)``
of a molecule's K conformers from noise and refines the rest. This script draws K of each kind for the
same seeded QM9 molecules (validation by default: defaults are chosen there, never on test), scores every
conformer against the DFT geometry, and forms each share's set from the first conformers of each kind, so
every share is measured on the same draws (a share's set has the distribution the sampler draws; its
seeds differ). ETKDGv3 runs on the same molecules with the same K as the baseline.

Cells: median / mean min-RMSD (heavy atoms, symmetry-aware, Å), coverage at 0.5 / 0.25 / 0.1 Å (molecules
without a conformer count as misses), then the median by rotatable bonds.

Usage: ``python benchmarks/mixed_starts.py --num-mols 500 -k 10 --seed 0 --threads 2``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

import numpy as np
import torch
from rdkit.Chem import rdMolDescriptors

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import run_etkdg, run_model, score_coordinates, select_molecules
from molediff.chem.metrics import conformer_metrics
from molediff.chem.refine import EtkdgRefinedSampler, prior_count
from molediff.data.qm9 import load_qm9

ROTOR_BUCKETS = ("0", "1", "2", "3", ">=4")


def mixed_min_rmsd(prior_rmsds: Sequence[Sequence[float]], refined_rmsds: Sequence[Sequence[float]],
                   num_prior: int, num_confs: int) -> np.ndarray:
    """Per molecule, the minimum RMSD over its first ``num_prior`` prior samples and first
    ``num_confs - num_prior`` refined ones (``inf`` where that set is empty); ``[num_molecules]``."""
    if not 0 <= num_prior <= num_confs:
        raise ValueError(f"num_prior must be in [0, {num_confs}], got {num_prior}")
    out = []
    for prior, refined in zip(prior_rmsds, refined_rmsds, strict=True):
        chosen = list(prior[:num_prior]) + list(refined[:num_confs - num_prior])
        out.append(min(chosen) if chosen else math.inf)
    return np.asarray(out, dtype=np.float64)


def summarise(min_rmsd: np.ndarray) -> dict[str, float]:
    """Median / mean over finite entries and coverage at 0.5 / 0.25 / 0.1 Å over all of ``[M]``
    (:func:`~molediff.chem.metrics.conformer_metrics`: an ``inf`` is a molecule without a conformer)."""
    stats = conformer_metrics([np.asarray([m]) if np.isfinite(m) else np.zeros(0) for m in min_rmsd],
                              thresholds=(0.5, 0.25, 0.1))
    return {"median": stats["median_min_rmsd"], "mean": stats["mean_min_rmsd"],
            **{f"cov@{t:g}": stats[f"coverage@{t:g}"] for t in (0.5, 0.25, 0.1)}}


def rotor_buckets(num_rotors: Sequence[int]) -> np.ndarray:
    """Index into :data:`ROTOR_BUCKETS` per molecule (four or more rotatable bonds share the last)."""
    return np.minimum(np.asarray(num_rotors, dtype=int), len(ROTOR_BUCKETS) - 1)


def _row(name: str, min_rmsd: np.ndarray, buckets: np.ndarray) -> str:
    s = summarise(min_rmsd)
    medians = []
    for b in range(len(ROTOR_BUCKETS)):
        part = min_rmsd[(buckets == b) & np.isfinite(min_rmsd)]
        medians.append(f"{np.median(part):.3f}" if part.size else "-")
    return (f"| {name} | {s['median']:.3f} / {s['mean']:.3f} | {s['cov@0.5']:.3f} / {s['cov@0.25']:.3f} / "
            f"{s['cov@0.1']:.3f} | " + " | ".join(medians) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: shipped)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--num-mols", type=int, default=500)
    parser.add_argument("-k", "--num-confs", type=int, default=10)
    parser.add_argument("--shares", default="0,0.3,0.5,0.7,1", help="prior shares to compare (0: all refined)")
    parser.add_argument("--seed", type=int, default=0, help="picks the molecules and seeds every sampler")
    parser.add_argument("--threads", type=int, default=2, help="torch and RDKit threads")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    shares = [float(s) for s in args.shares.split(",") if s]

    loaded = load_model_for_evaluation(args.model)
    model = loaded.model.eval()
    mols = select_molecules(load_qm9(args.split), args.num_mols, seed=args.seed)
    k = args.num_confs
    print(f"# mixed_starts, model={loaded.source} (step {loaded.step}), QM9 {args.split}, {len(mols)} molecules, "
          f"K={k}, seed {args.seed}, precision {model.resolved_precision()}")
    print("# machine: " + ", ".join(f"{key}={v}" for key, v in machine_info(args.threads).items()))

    t0 = time.perf_counter()
    prior, prior_s = run_model(model, mols, k, seed=args.seed)
    refined, refined_s = run_model(EtkdgRefinedSampler(model), mols, k, seed=args.seed)
    etkdg, etkdg_s = run_etkdg(mols, k, seed=args.seed, threads=args.threads)
    print(f"# sampled in {prior_s:.0f} s (prior), {refined_s:.0f} s (refined), {etkdg_s:.0f} s (ETKDGv3)")
    prior_rmsds = [s.rmsds for s in score_coordinates(mols, prior)]
    refined_rmsds = [s.rmsds for s in score_coordinates(mols, refined)]
    etkdg_min = np.asarray([s.min_rmsd for s in score_coordinates(mols, etkdg)])
    buckets = rotor_buckets([rdMolDescriptors.CalcNumRotatableBonds(m.mol) for m in mols])

    counts = " | ".join(f"{b} rot. ({int((buckets == i).sum())})" for i, b in enumerate(ROTOR_BUCKETS))
    print(f"\n| prior share (prior + refined of K={k}) | median / mean | cov@0.5 / 0.25 / 0.1 | {counts} |")
    print("|---" * (3 + len(ROTOR_BUCKETS)) + "|")
    for share in shares:
        n = prior_count(k, share)
        name = f"{share:g} ({n} + {k - n})"
        print(_row(name, mixed_min_rmsd(prior_rmsds, refined_rmsds, n, k), buckets))
    print(_row("ETKDGv3", etkdg_min, buckets))
    print(f"\n# total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
