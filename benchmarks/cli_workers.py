"""Time ``molediff conformers`` end to end, one process against ``--workers N``, with ETKDG alongside.

Each configuration runs the command line as a user would (a fresh process: start-up, model load,
featurisation, sampling, stereo checks and re-sampling, SDF writing) on the same SMILES file of
seeded QM9 test molecules; configurations alternate ``--repeats`` times, and the table gives the
median wall time and conformers written per second. ``--methods`` picks the pairs to time: ``model`` (the
default command), ``etkdg`` (``--model etkdg``), ``polish`` (``--polish``, the most accurate path) and
``etkdg+mmff`` (``--model etkdg --relax mmff``, its baseline)::

    python benchmarks/cli_workers.py --num-mols 300 -k 10 --workers 2 --repeats 2 --seed 0
    python benchmarks/cli_workers.py --num-mols 200 -k 10 --workers 2 --repeats 2 --seed 0 --methods polish,etkdg+mmff
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rdkit import Chem

from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import select_molecules
from molediff.data.qm9 import load_qm9


#: ``--methods`` entry -> (label, options of ``molediff conformers``, whether --workers is RDKit's threads)
METHODS: dict[str, tuple[str, list[str], bool]] = {
    "model": ("model", [], False),
    "etkdg": ("ETKDG", ["--model", "etkdg"], True),
    "polish": ("model --polish", ["--polish"], False),
    "etkdg+mmff": ("ETKDG --relax mmff", ["--model", "etkdg", "--relax", "mmff"], True),
}


def configurations(workers: int, methods: str = "model,etkdg") -> list[tuple[str, list[str]]]:
    """``(label, extra CLI options)`` of each timed configuration of ``methods`` (comma-separated keys of
    :data:`METHODS`), each in one process and with ``--workers``; unknown names raise ``ValueError``."""
    names = [m for m in methods.split(",") if m]
    if not names or not set(names) <= set(METHODS):
        raise ValueError(f"--methods {methods!r}: choose from {', '.join(METHODS)}")
    configs = []
    for name in names:
        label, options, rdkit_threads = METHODS[name]
        single, parallel = ("1 thread", f"--workers {workers} (RDKit threads)") if rdkit_threads else \
            (f"1 process ({workers} torch thread{'s' if workers != 1 else ''})", f"--workers {workers}")
        configs += [(f"{label}, {single}", options), (f"{label}, {parallel}", [*options, "--workers", str(workers)])]
    return configs


def command_env(workers: int) -> dict[str, str]:
    """The environment of every timed command: torch's thread pool pinned to ``workers`` threads (``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``), so that the model's single process gets the thread budget of ``--workers N`` (N processes
    of one thread each, set by ``molediff.chem.local_ranks``) and of ETKDG's N RDKit threads, not every core of the
    machine."""
    threads = str(max(1, int(workers)))
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def count_conformers(sdf: Path) -> int:
    """SDF records (one per conformer) in ``sdf``."""
    return sum(1 for mol in Chem.SDMolSupplier(str(sdf), removeHs=False, sanitize=False) if mol is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-mols", type=int, default=300)
    parser.add_argument("-k", "--num-confs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="model,etkdg",
                        help=f"comma-separated, from {', '.join(METHODS)} (default model,etkdg)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)

    try:
        configs = configurations(args.workers, args.methods)
    except ValueError as err:
        parser.error(str(err))
    mols = select_molecules(load_qm9("test"), args.num_mols, seed=args.seed)
    print(f"# cli_workers: QM9 test, {len(mols)} molecules, K={args.num_confs}, seed {args.seed}, "
          f"{args.repeats} alternating repeats, wall time of the whole command, torch threads pinned to "
          f"{args.workers} (OMP_NUM_THREADS)")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.workers).items()))
    times: dict[str, list[float]] = {label: [] for label, _ in configs}
    written: dict[str, int] = {}
    env = command_env(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        smi = Path(tmp) / "in.smi"
        smi.write_text("".join(f"{Chem.MolToSmiles(Chem.RemoveHs(m.template))} qm9_{m.index}\n" for m in mols))
        for repeat in range(args.repeats):
            for number, (label, extra) in enumerate(configs):
                out = Path(tmp) / f"out_{number}_{repeat}.sdf"
                cmd = [sys.executable, "-m", "molediff", "conformers", "-i", str(smi), "-o", str(out),
                       "-n", str(args.num_confs), "--seed", str(args.seed), "-q", "--keep-going", *extra]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env)
                times[label].append(time.perf_counter() - t0)
                written[label] = count_conformers(out)
                print(f"# {label}, repeat {repeat + 1}: {times[label][-1]:.1f} s", file=sys.stderr, flush=True)
    base = statistics.median(times[configs[0][0]])
    print(f"| configuration | wall s (median) | runs | conformers written | conformers/s | vs {configs[0][0]} |")
    print("|---|---|---|---|---|---|")
    for label, _ in configs:
        wall = statistics.median(times[label])
        runs = " / ".join(f"{t:.1f}" for t in times[label])
        print(f"| {label} | {wall:.1f} | {runs} | {written[label]} | {written[label] / wall:.1f} | {base / wall:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
