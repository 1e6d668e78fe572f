"""Which K of M model draws to keep: ranking rules for ``--draws``, against the first K draws and ETKDG.

With per-conformer noise, a molecule's first m draws are the same whether the model is asked for m or for M >= m
of them, so one call of M draws per molecule gives every pool size m <= M. Every draw is scored once against the
DFT geometry (heavy-atom, symmetry-aware RMSD) and checked for validity; each rule then keeps K of the first m:

* ``first K``: the draws as the model returns them (``molediff conformers`` without ``--draws``; m = K);
* ``strain``: lowest MMFF94 energy at the drawn geometry, all terms (``molediff.chem.strain_ranking``, ``--draws``);
* ``strain, local``: bond, angle, stretch-bend and out-of-plane terms only;
* ``strain, non-local``: torsion, van der Waals and electrostatic terms only;
* ``relaxed energy``: lowest MMFF94 energy after minimising each draw (the draw itself is kept);
* ``best of m``: every draw's RMSD to the DFT geometry known, the m draws' minimum: a bound no rule can pass,
  not a method.

ETKDGv3 with K conformers on the same molecules is the baseline. Cost is the network evaluations per kept
conformer relative to the model's default (m / K x steps / default steps). Use the validation split to choose
settings (the default); never the test split.

Usage: ``python benchmarks/strain_ranking.py --num-mols 300 -k 10 --pool 30 --steps 15 10 --seed 5 --threads 2``
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.convert import with_conformers
from molediff.chem.evaluation import run_etkdg, run_model, score_coordinates, score_molecule, select_molecules
from molediff.chem.relax import mmff_relaxed_coordinates
from molediff.chem.strain_ranking import MMFF_TERMS, energy_order, strain_energies
from molediff.data.qm9 import load_qm9

TERMS = {
    "local": ("Bond", "Angle", "StretchBend", "Oop"),
    "non-local": ("Torsion", "VdW", "Ele"),
}
ALL_TERMS = MMFF_TERMS


def term_energies(mol: Chem.Mol, coords: np.ndarray, terms: tuple[str, ...]) -> np.ndarray:
    """MMFF94 energy of each geometry ``[M, N, 3]`` with only ``terms`` switched on (NaN where non-finite)."""
    return strain_energies(mol, coords, terms)


def relaxed_energies(mol: Chem.Mol, coords: np.ndarray) -> np.ndarray:
    """Full MMFF94 energy of each geometry after minimising it (NaN where non-finite)."""
    finite = np.isfinite(coords).all(axis=(1, 2))
    try:
        relaxed = mmff_relaxed_coordinates(mol, coords, num_threads=torch.get_num_threads())
    except Exception:  # no MMFF94 parameters: nothing to rank by
        return np.full(len(coords), np.nan)
    energy = strain_energies(mol, relaxed)
    energy[~finite] = np.nan
    return energy


def summarise(min_rmsd: np.ndarray, valid: list[bool]) -> dict[str, float]:
    finite = min_rmsd[np.isfinite(min_rmsd)]
    return {"median": float(np.median(finite)), "mean": float(np.mean(finite)),
            **{f"cov@{t:g}": float(np.mean(min_rmsd < t)) for t in (0.5, 0.25, 0.1)},
            "valid": float(np.mean(valid)) if valid else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: shipped)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--num-mols", type=int, default=300)
    parser.add_argument("-k", "--num-confs", type=int, default=10)
    parser.add_argument("--pool", type=int, default=30, help="draws per molecule (the largest m)")
    parser.add_argument("--pools", type=int, nargs="+", default=[15, 20, 30], help="pool sizes m to rank")
    parser.add_argument("--steps", type=int, nargs="+", default=[15, 10], help="sampler steps to compare")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    if any(m < args.num_confs or m > args.pool for m in args.pools):
        parser.error(f"--pools must lie in [{args.num_confs}, {args.pool}]")

    torch.set_num_threads(args.threads)
    loaded = load_model_for_evaluation(args.model)
    model = loaded.model
    default_steps = model.config.default_steps
    mols = select_molecules(load_qm9(args.split), args.num_mols, seed=args.seed)
    k = args.num_confs
    print(f"# strain_ranking benchmark: {args.split}, {len(mols)} molecules (seed {args.seed}), K={k}, pool "
          f"{args.pool}, model {loaded.source} (step {loaded.step}), precision {model.resolved_precision()}")
    print("# machine: " + ", ".join(f"{key}={v}" for key, v in machine_info(args.threads).items()))

    t0 = time.perf_counter()
    etkdg, _ = run_etkdg(mols, k, seed=args.seed, threads=args.threads)
    scores = score_coordinates(mols, etkdg)
    rows = [("ETKDGv3", "-", k, "-", summarise(np.array([s.min_rmsd for s in scores]),
                                             [v for s in scores for v in s.valid]))]
    print(f"# ETKDGv3: {time.perf_counter() - t0:.0f} s")

    for steps in args.steps:
        t0 = time.perf_counter()
        pool, seconds = run_model(model, mols, args.pool, steps=steps, seed=args.seed)
        rmsd, valid = [], []
        for m, xyz in zip(mols, pool):  # every draw scored once, NaN / invalid for non-finite ones
            finite = np.isfinite(xyz).all(axis=(1, 2))
            score = score_molecule(m, with_conformers(m.template, xyz[finite]))
            r = np.full(len(xyz), np.inf)
            ok = np.zeros(len(xyz), bool)
            r[finite], ok[finite] = score.rmsds, score.valid
            rmsd.append(r)
            valid.append(ok)
        energies: dict[str, list[np.ndarray]] = {
            "strain": [strain_energies(m.template, xyz) for m, xyz in zip(mols, pool)],
            **{f"strain, {name}": [term_energies(m.template, xyz, terms) for m, xyz in zip(mols, pool)]
               for name, terms in TERMS.items()},
            "relaxed energy": [relaxed_energies(m.template, xyz) for m, xyz in zip(mols, pool)],
        }
        print(f"# steps {steps}: {args.pool} draws of {len(mols)} molecules in {seconds:.0f} s; scoring and "
              f"energies {time.perf_counter() - t0 - seconds:.0f} s")

        def keep(rule: Callable[[int, int], np.ndarray], m: int) -> dict[str, float]:
            chosen = [rule(i, m) for i in range(len(mols))]
            return summarise(np.array([rmsd[i][c].min() for i, c in enumerate(chosen)]),
                             [bool(v) for i, c in enumerate(chosen) for v in valid[i][c]])

        def cost(m: int) -> str:
            return f"{m / k * steps / default_steps:.2f}"

        rows.append(("first K", steps, k, cost(k), keep(lambda i, m: np.arange(k), k)))
        for m in args.pools:
            if m == k:
                continue
            for name, values in energies.items():
                rows.append((name, steps, m, cost(m), keep(lambda i, m, v=values: energy_order(v[i][:m])[:k], m)))
            rows.append(("best of m (bound)", steps, m, cost(m), keep(lambda i, m: np.arange(m), m)))

    header = ("rule", "steps", "m", "cost", "median", "mean", "cov@0.5", "cov@0.25", "cov@0.1", "valid")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for rule, steps, m, cost, s in rows:
        print(f"| {rule} | {steps} | {m} | {cost} | {s['median']:.3f} | {s['mean']:.3f} | {s['cov@0.5']:.3f} | "
              f"{s['cov@0.25']:.3f} | {s['cov@0.1']:.3f} | {s['valid']:.3f} |")
    print("\n# min-RMSD: heavy atoms, symmetry-aware, after alignment, vs the DFT geometry (Å); coverage counts "
          "molecules without a conformer as misses; valid: the kept conformers passing the validity checks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
