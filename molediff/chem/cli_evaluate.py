"""``molediff evaluate``: a conformer model against RDKit ETKDG on QM9 DFT geometries.

Example::

    molediff evaluate --model runs/conformer_egnn --split valid --num-mols 200 -k 10 \\
        --methods model model+mmff etkdg etkdg+mmff --out results.json --out results.csv

``--model`` takes an exported model (run folder with ``model.json``, or the ``.json`` /
``.safetensors`` file), a trainer checkpoint (``checkpoints/step_<N>.json``; EMA weights), a run
folder still training (its newest checkpoint) or a shipped model name. Select samplers and
settings on ``--split valid``; ``test`` is for the final numbers only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["add_arguments", "run", "machine_info", "format_rows", "write_outputs"]

COLUMNS = (  # (header, attribute, format)
    ("method", "method", "{}"), ("mols", "molecules", "{}"), ("K", "k", "{}"),
    ("mean minRMSD", "mean_min_rmsd", "{:.3f}"), ("median", "median_min_rmsd", "{:.3f}"),
    ("cov@0.5", "coverage_05", "{:.3f}"), ("cov@0.25", "coverage_025", "{:.3f}"),
    ("cov@0.1", "coverage_01", "{:.3f}"), ("mean RMSD", "mean_rmsd", "{:.3f}"),
    ("valid", "valid_fraction", "{:.3f}"), ("stereo", "stereo_fraction", "{:.3f}"),
    ("stereo fixed", "stereo_fixed_fraction", "{:.3f}"), ("no conf", "no_conformer", "{}"),
    ("conf/s", "conformers_per_s", "{:.1f}"),
)


def _methods(text: str) -> list[str]:
    from molediff.chem.evaluation import METHODS

    out = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    return out


def _draws(text: str) -> float:
    value = float(text)
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``molediff evaluate``."""
    from molediff.core.samplers import SAMPLERS

    parser.add_argument("--model", default=None,
                        help="run folder, model.json/.safetensors, trainer checkpoint step_<N>.json, or shipped name "
                             "(default: the shipped model)")
    parser.add_argument("--split", choices=("valid", "test"), default="test",
                        help="QM9 split (default test; select settings on valid)")
    parser.add_argument("--num-mols", type=_positive, default=None, help="seeded random subset size (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset, the model and ETKDG (default 0)")
    parser.add_argument("-k", "--num-confs", type=_positive, default=10, help="conformers per molecule (default 10)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                        help="diffusion sampler (default: the model's)")
    parser.add_argument("--steps", type=_positive, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--methods", type=_methods, action="extend", nargs="+", default=None,
                        help="any of model, model+mmff, unguided, unguided+mmff, product, refined, refined+mmff, "
                             "mixed, mixed+mmff, etkdg, etkdg+mmff, model+mmff+polish, mixed+mmff+polish, "
                             "etkdg+mmff+polish, product+mmff+polish, ranked, ranked+mmff, ranked+mmff+polish, "
                             "product-ranked, product-ranked+mmff+polish (space or comma separated; "
                             "default: model model+mmff etkdg etkdg+mmff)")
    parser.add_argument("--draws", type=_draws, default=None, metavar="F",
                        help="draws per kept conformer of the ranked rows (default 2)")
    parser.add_argument("--threads", type=_positive, default=2,
                        help="threads for ETKDG/MMFF (RDKit numThreads) and torch (default 2)")
    parser.add_argument("--out", action="append", default=[], metavar="PATH",
                        help="write results: .json (rows, settings, per-molecule scores) or .csv (rows); repeatable")
    parser.add_argument("--device", default=None, help="torch device for the model (default cpu)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="network precision for sampling (default auto: bf16 where native)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core count, Python / torch / RDKit versions and thread settings."""
    import rdkit
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "rdkit": rdkit.__version__, "torch_threads": torch.get_num_threads(), "rdkit_threads": threads}


def format_rows(rows: Sequence[Any], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A plain-text table (Markdown pipe syntax) of :class:`EvaluationRow` objects."""
    def cell(row: Any, attr: str, fmt: str) -> str:
        value = getattr(row, attr)
        return "nan" if isinstance(value, float) and math.isnan(value) else fmt.format(value)

    header = [h for h, _, _ in columns]
    body = [[cell(r, a, f) for _, a, f in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN / inf float (numpy scalars included) replaced by ``None``.

    ``json.dumps`` would write them as the bare tokens ``NaN`` / ``Infinity``, which standard JSON
    parsers (``jq``, JavaScript, most other languages) reject.
    """
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(paths: Sequence[str], rows: Sequence[Any], settings: dict[str, Any],
                  per_molecule: dict[str, Sequence[Any]]) -> None:
    """Write ``.json`` (everything) and ``.csv`` (rows) files atomically.

    In JSON, NaN and infinite values (e.g. ``stereo_fraction`` when no molecule has stereo elements)
    are written as ``null``; the CSV keeps ``nan``.

    Raises
    ------
    ValueError
        A path with another suffix.
    """
    from dataclasses import asdict

    from molediff.training.checkpoint import atomic_write_bytes

    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            doc = {"settings": settings, "rows": [r.as_dict() for r in rows],
                   "per_molecule": {m: [asdict(s) for s in scores] for m, scores in per_molecule.items()}}
            data = json.dumps(_json_safe(doc), indent=1, allow_nan=False,
                              default=lambda obj: _json_safe(float(obj))).encode()
        elif suffix == ".csv":
            buf = io.StringIO()
            names = list(rows[0].as_dict()) if rows else []
            writer = csv.DictWriter(buf, fieldnames=names)
            writer.writeheader()
            for r in rows:
                writer.writerow(r.as_dict())
            data = buf.getvalue().encode()
        else:
            raise ValueError(f"--out {path}: use a .json or .csv file name")
        atomic_write_bytes(path, data)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by ``args``; print the table; return the exit status."""
    import torch

    from molediff.chem.evaluation import DEFAULT_METHODS, evaluate, needs_model, select_molecules
    from molediff.data.qm9 import load_qm9

    # each --methods word may hold several comma-separated names: flatten, keep order, drop repeats
    methods = list(dict.fromkeys(m for group in (args.methods or [list(DEFAULT_METHODS)]) for m in group))
    for path in args.out:  # checked before the (long) evaluation, whose results would be lost at the end
        if Path(path).suffix.lower() not in (".json", ".csv"):
            print(f"molediff evaluate: error: --out {path}: use a .json or .csv file name", file=sys.stderr)
            return 2
        if Path(path).is_dir():
            print(f"molediff evaluate: error: --out {path} is a folder; give a file name", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda msg: print(f"[evaluate] {msg}", file=sys.stderr, flush=True))
    model, model_info = None, {}
    if any(needs_model(m) for m in methods):
        from molediff.chem.checkpoint_loading import load_model_for_evaluation

        try:
            loaded = load_model_for_evaluation(args.model, device=args.device)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            name = repr(args.model) if args.model else "(the shipped default)"
            print(f"molediff evaluate: error: cannot load model {name}: {err}", file=sys.stderr)
            return 2
        model = loaded.model
        model.precision = args.precision
        cfg = model.config
        model_info = {"model": str(loaded.source), "model_kind": loaded.kind, "step": loaded.step,
                      "sampler": args.sampler or cfg.default_sampler, "steps": args.steps or cfg.default_steps,
                      "precision": model.resolved_precision(device=args.device or "cpu")}
    mols = select_molecules(load_qm9(args.split), args.num_mols, seed=args.seed)
    settings = {"split": args.split, "num_mols": len(mols), "seed": args.seed, "k": args.num_confs,
                "methods": methods, **model_info, "machine": machine_info(args.threads)}
    if any("ranked" in m for m in methods):
        from molediff.chem.strain_ranking import DEFAULT_DRAWS

        settings["draws"] = args.draws if args.draws is not None else DEFAULT_DRAWS
    print("# molediff evaluate: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "machine"))
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in settings["machine"].items()))
    rows, per_molecule = evaluate(mols, methods, model=model, k=args.num_confs, seed=args.seed,
                                  sampler=args.sampler, steps=args.steps, threads=args.threads,
                                  device=args.device, log=log,
                                  **({} if args.draws is None else {"draws": args.draws}))
    print(format_rows(rows))
    for r in rows:
        if r.no_conformer:
            print(f"# {r.method}: {r.no_conformer} molecule(s) got no conformer (misses in coverage, "
                  f"excluded from mean/median min-RMSD)")
        if r.notes:
            print(f"# {r.method}: {r.notes}")
    print("# min-RMSD: heavy atoms, symmetry-aware, after alignment, vs the DFT geometry (Å); stereo: "
          "conformers of molecules with specified stereo; 'stereo fixed': after reflecting mirror images")
    if "etkdg" in per_molecule and len(per_molecule) > 1:
        from molediff.chem.evaluation import PAIRED_COLUMNS, paired_comparison

        paired = paired_comparison(per_molecule, "etkdg")
        print(f"# on the {paired[0].molecules} molecules every method embedded, head-to-head against etkdg:")
        print(format_rows(paired, PAIRED_COLUMNS))
    write_outputs(args.out, rows, settings, per_molecule)
    return 0
