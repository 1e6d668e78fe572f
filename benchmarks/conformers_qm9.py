"""Benchmark the QM9 conformer model against RDKit ETKDG, and its samplers per NFE budget.

1. Main table (``--split test`` by default): the rows of ``molediff evaluate`` - raw model samples,
   model + MMFF94, ETKDG, ETKDG + MMFF94 - on the same seeded subset with the same K.
2. Sampler x NFE table, on the **validation** split only (defaults are chosen there, never on
   test): median / mean min-RMSD, coverage@0.5 Å, validity and conformers per second for each
   sampler at each NFE budget. Heun spends 2 evaluations per step but one on the last
   (NFE = 2 * steps - 1); the others spend one per step.

Usage::

    python benchmarks/conformers_qm9.py --model runs/conformer_egnn --num-mols 200 -k 10 \\
        --sweep-mols 100 --sweep-k 5 --samplers heun,euler,dpmpp_2m,euler_maruyama,ddim --nfe 10,20,40

``--model`` also takes a trainer checkpoint (``runs/conformer_egnn/checkpoints/step_<N>.json``) or
a run folder that is still training (its newest checkpoint, EMA weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import format_rows, machine_info
from molediff.chem.evaluation import (DEFAULT_METHODS, PAIRED_COLUMNS, aggregate, evaluate, paired_comparison,
                                      run_model, score_coordinates, select_molecules)
from molediff.chem.strain_ranking import DEFAULT_DRAWS
from molediff.core.samplers import SAMPLERS
from molediff.data.qm9 import load_qm9


def steps_for_nfe(sampler: str, nfe: int) -> tuple[int, int]:
    """``(steps, actual NFE)`` of the largest grid whose cost fits ``nfe`` network evaluations."""
    if sampler == "heun":
        steps = max(1, (nfe + 1) // 2)
        return steps, 2 * steps - 1
    if sampler == "pc":  # Euler-Maruyama predictor + one corrector per step, none on the last
        steps = max(1, (nfe + 1) // 2)
        return steps, 2 * steps - 1
    return nfe, nfe


@dataclass
class SweepRow:
    """One sampler at one NFE budget (validation split)."""

    sampler: str
    nfe: int
    steps: int
    median_min_rmsd: float
    mean_min_rmsd: float
    coverage_05: float
    valid_fraction: float
    conformers_per_s: float


SWEEP_COLUMNS = (
    ("sampler", "sampler", "{}"), ("NFE", "nfe", "{}"), ("steps", "steps", "{}"),
    ("median minRMSD", "median_min_rmsd", "{:.3f}"), ("mean minRMSD", "mean_min_rmsd", "{:.3f}"),
    ("cov@0.5", "coverage_05", "{:.3f}"), ("valid", "valid_fraction", "{:.3f}"),
    ("conf/s", "conformers_per_s", "{:.1f}"),
)


def sweep(model, mols, k: int, samplers: list[str], budgets: list[int], seed: int) -> list[SweepRow]:
    """Sample and score every (sampler, NFE) pair on the same molecules and seed."""
    rows = []
    for name in samplers:
        for nfe in budgets:
            steps, actual = steps_for_nfe(name, nfe)
            coords, seconds = run_model(model, mols, k, sampler=name, steps=steps, seed=seed)
            row = aggregate(name, score_coordinates(mols, coords), k, seconds)
            rows.append(SweepRow(name, actual, steps, row.median_min_rmsd, row.mean_min_rmsd, row.coverage_05,
                                 row.valid_fraction, row.conformers_per_s))
            print(f"[sweep] {name} NFE={actual}: median {row.median_min_rmsd:.3f} Å, {seconds:.1f} s",
                  file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: the shipped qm9_egnn)")
    parser.add_argument("--split", choices=("test", "valid"), default="test", help="split of the main table")
    parser.add_argument("--num-mols", type=int, default=200)
    parser.add_argument("-k", "--num-confs", type=int, default=10)
    parser.add_argument("--sampler", default=None, help="sampler of the main table (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the main table (default: the model's)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--draws", type=float, default=DEFAULT_DRAWS,
                        help=f"draws per kept conformer of the ranked rows (default {DEFAULT_DRAWS:g})")
    parser.add_argument("--sweep-mols", type=int, default=100, help="validation molecules of the sweep (0: skip)")
    parser.add_argument("--sweep-k", type=int, default=5)
    parser.add_argument("--samplers", default="heun,euler,dpmpp_2m,euler_maruyama,ddim")
    parser.add_argument("--nfe", default="10,20,40")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch and RDKit threads")
    parser.add_argument("--workers", type=int, default=1,
                        help="sample the main table's model rows in this many processes of threads/workers torch "
                             "threads each (molediff.chem.parallel_sampler; started before timing); ETKDG keeps "
                             "numThreads=threads (default 1: one process)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="network precision for sampling (default auto: bf16 where native)")
    parser.add_argument("--skip-main", action="store_true")
    parser.add_argument("--json", default=None, help="also write both tables to this JSON file")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # tables survive an interrupted run

    samplers = [s for s in args.samplers.split(",") if s]
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        parser.error(f"unknown sampler(s) {unknown}; choose from {sorted(SAMPLERS)}")
    if args.workers > args.threads:  # workers of one thread each would take more cores than ETKDG's numThreads
        parser.error(f"--workers {args.workers} exceeds --threads {args.threads}: the model rows would use "
                     f"{args.workers} threads against ETKDG's {args.threads}")
    torch.set_num_threads(args.threads)
    loaded = load_model_for_evaluation(args.model)
    model = loaded.model
    model.precision = args.precision
    print(f"# conformers_qm9 benchmark, seed={args.seed}, model={loaded.source} ({loaded.kind}, step {loaded.step}), "
          f"precision {model.resolved_precision()}")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.threads).items()))
    result: dict = {"model": str(loaded.source), "step": loaded.step, "seed": args.seed,
                    "precision": model.resolved_precision(),
                    "machine": machine_info(args.threads)}

    if not args.skip_main:
        mols = select_molecules(load_qm9(args.split), args.num_mols, seed=args.seed)
        sampler = args.sampler or model.config.default_sampler
        steps = args.steps or model.config.default_steps
        print(f"\n## Model vs ETKDG: QM9 {args.split}, {len(mols)} molecules, K={args.num_confs}, "
              f"model sampler {sampler} with {steps} steps, RDKit numThreads={args.threads}"
              + (f", ranked rows keep K of {args.draws:g}K draws" if "ranked" in args.methods else ""))
        sampling_model = model
        if args.workers > 1:
            from molediff.chem.parallel_sampler import ParallelConformerSampler

            threads_each = max(1, args.threads // args.workers)
            sampling_model = ParallelConformerSampler(model, args.workers, threads_each).start()
            print(f"# model rows: {args.workers} worker processes x {threads_each} torch thread(s), "
                  f"started before timing")
        t0 = time.perf_counter()
        try:
            rows, per_molecule = evaluate(mols, args.methods.split(","), model=sampling_model, k=args.num_confs,
                                          seed=args.seed, sampler=sampler, steps=steps, threads=args.threads,
                                          draws=args.draws,
                                          log=lambda m: print(f"[main] {m}", file=sys.stderr, flush=True))
        finally:
            if sampling_model is not model:
                sampling_model.close()
        print(format_rows(rows))
        for r in rows:
            if r.no_conformer:
                print(f"# {r.method}: {r.no_conformer} molecule(s) without conformer "
                      f"(misses in coverage, excluded from mean/median)")
        print(f"# wall time {time.perf_counter() - t0:.0f} s (scoring included)")
        result["main"] = {"split": args.split, "molecules": len(mols), "k": args.num_confs, "sampler": sampler,
                          "steps": steps, "workers": args.workers, "draws": args.draws,
                          "rows": [r.as_dict() for r in rows]}
        baseline = "etkdg" if "etkdg" in per_molecule else None
        if baseline and len(per_molecule) > 1:
            paired = paired_comparison(per_molecule, baseline)
            print(f"\n## The same, on the {paired[0].molecules} molecules every method embedded "
                  f"(head-to-head against {baseline})")
            print(format_rows(paired, PAIRED_COLUMNS))
            result["main"]["paired"] = {"baseline": baseline, "rows": [vars(r) for r in paired]}
        flexibility = by_rotatable_bonds(mols, per_molecule)
        print("\n## By rotatable bonds (RDKit's count; median min-RMSD in Å over the molecules with a conformer, "
              "coverage@0.5 with misses counted)")
        print(format_flexibility(flexibility))
        result["main"]["by_rotatable_bonds"] = flexibility
        _write(args.json, result)  # keep the main table even if the sweep is interrupted

    if args.sweep_mols > 0:
        budgets = [int(x) for x in args.nfe.split(",") if x]
        mols = select_molecules(load_qm9("valid"), args.sweep_mols, seed=args.seed)
        print(f"\n## Sampler x NFE: QM9 valid, {len(mols)} molecules, K={args.sweep_k}, seed {args.seed}")
        t0 = time.perf_counter()
        rows = sweep(model, mols, args.sweep_k, samplers, budgets, args.seed)
        print(format_rows(rows, SWEEP_COLUMNS))
        print(f"# wall time {time.perf_counter() - t0:.0f} s (scoring included)")
        result["sweep"] = {"molecules": len(mols), "k": args.sweep_k, "rows": [vars(r) for r in rows]}

    _write(args.json, result)
    return 0


ROTOR_BUCKETS = ("0", "1", "2", "3", ">=4")


def by_rotatable_bonds(mols, per_molecule) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {bucket: {"molecules", "median", "cov@0.5"}}}``, molecules grouped by rotatable bonds."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    # on the hydrogen-free graph: with explicit H atoms RDKit also counts C-OH / C-NH2 bonds, whose
    # rotation moves only a hydrogen and cannot change a heavy-atom RMSD
    rotors = [min(rdMolDescriptors.CalcNumRotatableBonds(Chem.RemoveHs(m.mol)), 4) for m in mols]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method, scores in per_molecule.items():
        by_index = {s.index: s.min_rmsd for s in scores}
        table[method] = {}
        for bucket, name in enumerate(ROTOR_BUCKETS):
            values = np.array([by_index.get(m.index, np.inf) for m, r in zip(mols, rotors) if r == bucket])
            finite = values[np.isfinite(values)]
            table[method][name] = {"molecules": int(values.size),
                                   "median": float(np.median(finite)) if finite.size else float("nan"),
                                   "cov@0.5": float(np.mean(values < 0.5)) if values.size else float("nan")}
    return table


def format_flexibility(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per method, ``median / cov@0.5`` per rotatable-bond bucket."""
    first = next(iter(table.values()))
    head = " | ".join(f"{b} rot. ({int(first[b]['molecules'])} mols)" for b in ROTOR_BUCKETS)
    lines = [f"| method | {head} |", "|---" * (len(ROTOR_BUCKETS) + 1) + "|"]
    for method, buckets in table.items():
        cells = " | ".join(f"{buckets[b]['median']:.3f} / {buckets[b]['cov@0.5']:.3f}" for b in ROTOR_BUCKETS)
        lines.append(f"| {method} | {cells} |")
    return "\n".join(lines)


def _write(path: str | None, result: dict) -> None:
    if path:
        from molediff.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    raise SystemExit(main())
