"""Check the conformer model's sampling settings on QM9 validation: σ grid, sampler noise, and why samples fail.

Each setting is a comma-separated list of ``key=value`` pairs, all optional: ``sampler`` and ``steps``
(default: the model's), the grid of :meth:`molediff.chem.model.ConformerModel.sigmas` (``rho``,
``sigma_min``, ``sigma_max``), any keyword argument of the sampler itself (``eta`` for ``ddim``,
``churn`` for ``heun``), prefixed ``guidance.``, any entry of
:data:`molediff.chem.stereo_guidance.DEFAULT_STEREO_GUIDANCE` (``guidance.iters=30``) and, prefixed
``particles.``, any entry of :data:`molediff.chem.particle_guidance.DEFAULT_PARTICLE_GUIDANCE`
(``particles.weight=2``; naming one turns particle guidance on, ``particles=1`` with the defaults,
``particles=0`` off) and, prefixed ``net.``, an execution attribute of the network
(``net.dense_chunk_pairs=none``: the EGNN's dense blocks in one piece; ``none`` for None), restored after the
setting. The empty setting ``""`` is the model's defaults; naming a setting twice runs it twice (alternating
settings is how to compare speeds on a noisy machine). Every setting samples the
same seeded validation molecules with the same seed (defaults are chosen on validation, never on
test), and the table gives median / mean min-RMSD (heavy atoms, Å), coverage@0.5 Å, the fraction of
valid conformers, conformers per second and, for the invalid ones, how often each validity check
failed (:class:`molediff.chem.validity.ValidityChecker`; a conformer can fail several).

Usage::

    python benchmarks/sampling_grid.py --num-mols 1000 -k 5 --seed 1 --threads 2 \\
        "" "sampler=ddim,eta=0.7" "rho=4" "rho=10" "sigma_max=5" "guidance.iters=30"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from typing import Any, Callable

import numpy as np
import torch

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.evaluation import aggregate, score_coordinates, select_molecules
from molediff.chem.particle_guidance import DEFAULT_PARTICLE_GUIDANCE
from molediff.chem.stereo_guidance import DEFAULT_STEREO_GUIDANCE
from molediff.chem.validity import ValidityChecker
from molediff.data.qm9 import load_qm9

GRID_KEYS = ("rho", "sigma_min", "sigma_max")


def _guidance_value(default: Any, value: str) -> Any:
    """``value`` as the type of the default: a string, a number, or ``lo:hi`` for a range."""
    if isinstance(default, str):
        return value
    if isinstance(default, tuple):
        return tuple(float(v) for v in value.split(":"))
    return type(default)(float(value))


def parse_setting(spec: str) -> tuple[str | None, int | None, dict[str, float], dict[str, float], dict[str, Any],
                                      bool | dict[str, Any] | None, dict[str, int | None]]:
    """``"sampler=ddim,eta=0.7,rho=5,guidance.iters=30,particles.weight=2,net.dense_chunk_pairs=none"`` ->
    ``(sampler, steps, grid, sampler options, guidance, particles, network attributes)``; ``particles`` is
    ``None`` where the setting does not say (the model's default), else ``False`` or the options of particle
    guidance."""
    sampler, steps, grid, options, guidance, net = None, None, {}, {}, {}, {}
    particles: bool | dict[str, Any] | None = None
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {spec!r}: {item!r} is not key=value")
        if key == "sampler":
            sampler = value
        elif key == "steps":
            steps = int(value)
        elif key.startswith("guidance."):
            name = key[len("guidance."):]
            if name not in DEFAULT_STEREO_GUIDANCE:
                raise ValueError(f"setting {spec!r}: no guidance option {name!r}; "
                                 f"choose from {sorted(DEFAULT_STEREO_GUIDANCE)}")
            guidance[name] = _guidance_value(DEFAULT_STEREO_GUIDANCE[name], value)
        elif key == "particles":
            particles = {} if float(value) else False
        elif key.startswith("particles."):
            name = key[len("particles."):]
            if name not in DEFAULT_PARTICLE_GUIDANCE:
                raise ValueError(f"setting {spec!r}: no particle-guidance option {name!r}; "
                                 f"choose from {sorted(DEFAULT_PARTICLE_GUIDANCE)}")
            particles = {**(particles or {}), name: _guidance_value(DEFAULT_PARTICLE_GUIDANCE[name], value)}
        elif key.startswith("net."):
            net[key[len("net."):]] = None if value.lower() == "none" else int(value)
        elif key in GRID_KEYS:
            grid[key] = float(value)
        else:
            options[key] = float(value)
    return sampler, steps, grid, options, guidance, particles, net


def failed_checks(mols: list[Any], coords: list[np.ndarray]) -> Counter:
    """How often each validity check failed over all conformers."""
    counts: Counter = Counter()
    for mol, xyz in zip(mols, coords):
        for result in ValidityChecker(mol.template).check_many(xyz):
            counts.update(result.failed)
    return counts


def rotatable_bonds(mol: Any) -> int:
    """RDKit's rotatable-bond count on the hydrogen-free graph (as ``benchmarks/conformers_qm9.py`` buckets):
    with explicit H atoms RDKit also counts C-OH / C-NH2 bonds, whose rotation moves only a hydrogen."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    return int(rdMolDescriptors.CalcNumRotatableBonds(Chem.RemoveHs(mol)))


def select_validation_molecules(num_mols: int, seed: int, min_rotatable_bonds: int = 0) -> list[Any]:
    """``num_mols`` seeded validation molecules, drawn from those with ``min_rotatable_bonds`` or more
    (:func:`rotatable_bonds`)."""
    if not min_rotatable_bonds:
        return select_molecules(load_qm9("valid"), num_mols, seed=seed)
    flexible = [m for m in select_molecules(load_qm9("valid")) if rotatable_bonds(m.mol) >= min_rotatable_bonds]
    return select_molecules(flexible, num_mols, seed=seed)  # the same seeded draw, from the flexible ones


def add_validation_arguments(parser: argparse.ArgumentParser, *, num_mols: int, num_confs: int = 5) -> None:
    """The options of the scripts that measure settings on QM9 validation molecules: ``--model``,
    ``--num-mols``, ``-k``, ``--seed`` (default 1), ``--threads`` (default 2), ``--min-rotatable-bonds``."""
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: shipped)")
    parser.add_argument("--num-mols", type=int, default=num_mols)
    parser.add_argument("-k", "--num-confs", type=int, default=num_confs)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-rotatable-bonds", type=int, default=0,
                        help="draw the molecules from those with at least this many rotatable bonds (RDKit's count on the "
                             "hydrogen-free graph)")


def start_validation_run(script: str, args: argparse.Namespace,
                         details: Callable[[Any], str] | None = None) -> tuple[Any, list[Any]]:
    """Set the threads, load the model and draw the molecules of :func:`add_validation_arguments`; print the
    run's header (``script``, model, molecules, K, seed, then ``details(model)``) and the machine line.

    Returns
    -------
    (LoadedModel, list of EvalMolecule)
    """
    torch.set_num_threads(args.threads)
    loaded = load_model_for_evaluation(args.model)
    mols = select_validation_molecules(args.num_mols, args.seed, args.min_rotatable_bonds)
    flexible = f" with >= {args.min_rotatable_bonds} rotatable bonds" if args.min_rotatable_bonds else ""
    print(f"# {script}, model={loaded.source} (step {loaded.step}), QM9 valid, {len(mols)} molecules{flexible}, "
          f"K={args.num_confs}, seed {args.seed}{details(loaded.model) if details else ''}")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.threads).items()))
    return loaded, mols


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=[""], help='e.g. "" "rho=10" "sampler=ddim,eta=0.7"')
    add_validation_arguments(parser, num_mols=1000)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    try:
        parsed = [parse_setting(s) for s in args.settings]
    except ValueError as exc:
        parser.error(str(exc))

    def defaults(model: Any) -> str:
        base = model.config
        return (f", defaults {base.default_sampler} {base.default_steps} steps, rho {base.rho}, "
                f"sigma [{base.sigma_min}, {base.sigma_max}]")

    loaded, mols = start_validation_run("sampling_grid", args, defaults)
    model, base = loaded.model, loaded.model.config
    print("| setting | median minRMSD | mean minRMSD | cov@0.5 | cov@0.1 | valid | conf/s | failed checks |")
    print("|---|---|---|---|---|---|---|---|")
    network = model.denoiser.net
    for spec, (sampler, steps, grid, options, guidance, particles, net_attrs) in zip(args.settings, parsed):
        model.config = dataclasses.replace(base, **grid)
        missing = [name for name in net_attrs if not hasattr(network, name)]
        if missing:
            parser.error(f"setting {spec!r}: {type(network).__name__} has no attribute {missing[0]!r}")
        saved = {name: getattr(network, name) for name in net_attrs}
        for name, value in net_attrs.items():
            setattr(network, name, value)
        extra = {} if particles is None else {"particle_guidance": particles}
        t0 = time.perf_counter()
        coords = model.sample([m.template for m in mols], args.num_confs, sampler=sampler, steps=steps,
                              seed=args.seed, sampler_options=options or None, stereo_guidance=guidance or True,
                              **extra)
        seconds = time.perf_counter() - t0
        coords = [np.asarray(c, dtype=np.float64) for c in coords]
        row = aggregate(spec or "defaults", score_coordinates(mols, coords), args.num_confs, seconds)
        fails = ", ".join(f"{k} {v}" for k, v in failed_checks(mols, coords).most_common()) or "none"
        print(f"| {spec or 'defaults'} | {row.median_min_rmsd:.3f} | {row.mean_min_rmsd:.3f} | {row.coverage_05:.3f} | {row.coverage_01:.3f} "
              f"| {row.valid_fraction:.4f} | {row.conformers_per_s:.1f} | {fails} |")
        for name, value in saved.items():
            setattr(network, name, value)
    model.config = base
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
