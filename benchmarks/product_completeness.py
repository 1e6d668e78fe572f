"""How many molecules the product path leaves short of K valid conformers, per seed and re-sampling policy.

``molediff conformers`` (``generate_conformers_batch``) re-samples conformers that fail the stereo and geometry
checks, in up to ``max_resample_rounds`` extra rounds. This script runs it on a seeded set of QM9 test molecules
for several seeds, once for each value of ``molediff.chem.sampling_rounds.MAX_OVERSAMPLING`` given (1: each
round draws only the missing conformers, the behaviour before oversampling; 8: the default), and prints, per
run, the molecules without any conformer, those with fewer than K, the conformers missing in all, and the wall
time::

    python benchmarks/product_completeness.py --num-mols 1000 -k 10 --seeds 0 1 2 --oversampling 1 8 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from rdkit import rdBase

from molediff.chem import sampling_rounds
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import select_molecules
from molediff.chem.generate import generate_conformers_batch
from molediff.chem.model import load_conformer_model
from molediff.data.qm9 import load_qm9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-mols", type=int, default=1000)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--selection-seed", type=int, default=0, help="seed of the molecule subset (README: 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    parser.add_argument("--oversampling", type=int, nargs="+", default=[1, sampling_rounds.MAX_OVERSAMPLING])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    model = load_conformer_model()
    mols = select_molecules(load_qm9(args.split), args.num_mols, seed=args.selection_seed)
    print(f"# product_completeness: model {model.name} (step {model.card.get('step')}), QM9 {args.split}, "
          f"{len(mols)} molecules (selection seed {args.selection_seed}), K={args.k}, default sampler and rounds")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.threads).items()))
    print("| oversampling | seed | no conformer | fewer than K (got) | conformers missing | seconds |")
    print("|---|---|---|---|---|---|")
    default = sampling_rounds.MAX_OVERSAMPLING
    try:
        for factor in args.oversampling:
            sampling_rounds.MAX_OVERSAMPLING = factor
            for seed in args.seeds:
                t0 = time.perf_counter()
                with rdBase.BlockLogs():
                    results = list(generate_conformers_batch([m.template for m in mols], args.k, seed, model=model))
                seconds = time.perf_counter() - t0
                got = [r.mol.GetNumConformers() if r.ok else 0 for r in results]
                none = [m.index for m, n in zip(mols, got) if n == 0]
                short = [f"{m.index} ({n})" for m, n in zip(mols, got) if 0 < n < args.k]
                missing = sum(args.k - n for n in got)
                print(f"| {factor} | {seed} | {len(none)} {none if none else ''} | {len(short)}: "
                      f"{', '.join(short) or '-'} | {missing} | {seconds:.0f} |")
    finally:
        sampling_rounds.MAX_OVERSAMPLING = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
