"""Choose the noise level and steps for polishing MMFF94-relaxed conformers with the model, on QM9 validation.

For each setting ``SIGMA:STEPS[:guided|unguided][:SAMPLER]`` the model's own samples, relaxed with MMFF94, are
raised to noise level SIGMA (Å) and the model's default sampler (or SAMPLER, e.g. ``ddim`` for the deterministic
DDIM, ``heun``) runs STEPS steps down from there, with the stereo guidance (``guided``, the default of the
setting, as in the runs that chose SIGMA and STEPS) or without it (``unguided``, what ``molediff conformers
--polish`` does since a later run of this script chose it; :func:`molediff.chem.polish.polish_conformers`).
In the same run, on the same molecules: the model's raw samples, the same relaxed with MMFF94, ETKDGv3 and
ETKDGv3 + MMFF94; and, for the first setting, two controls: the raw samples polished without relaxing them
first (is it the relaxation or the polish?) and ETKDGv3 + MMFF94 polished (is it the model's samples?).
Prints median / mean min-RMSD (heavy atoms, Å), coverage at 0.5 / 0.25 / 0.1 Å, the fraction of valid
conformers and conformers per second (every stage of a row included)::

    python benchmarks/polish.py --num-mols 300 -k 5 --seed 1 --threads 2 0.1:4 0.2:5 0.05:3 0.3:6
    python benchmarks/polish.py --num-mols 300 -k 5 --seed 1 --threads 2 --no-controls 0.1:4 0.1:4:unguided
    python benchmarks/polish.py --num-mols 300 -k 5 --seed 1 --threads 2 --no-controls 0.1:4:unguided 0.1:4:unguided:ddim
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from molediff.chem.evaluation import aggregate, relax_all, run_etkdg, run_model, score_coordinates
from molediff.chem.polish import polish_conformers, polish_seed
from molediff.core.samplers import SAMPLERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling_grid import add_validation_arguments, start_validation_run  # noqa: E402


def parse_setting(spec: str) -> tuple[float, int, bool, str | None]:
    """``"0.1:4"`` -> ``(0.1, 4, True, None)``; ``"0.1:4:unguided"`` -> ``(0.1, 4, False, None)`` (the polish
    without the stereo guidance); ``"0.1:4:unguided:ddim"`` -> ``(0.1, 4, False, "ddim")`` (another sampler than
    the model's default)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3, 4) or (len(parts) >= 3 and parts[2] not in ("guided", "unguided")) or \
            (len(parts) == 4 and parts[3] not in SAMPLERS):
        raise ValueError(f"setting {spec!r} is not SIGMA:STEPS[:guided|unguided][:SAMPLER] with SAMPLER one of "
                         f"{', '.join(sorted(SAMPLERS))}")
    return float(parts[0]), int(parts[1]), len(parts) == 2 or parts[2] == "guided", \
        parts[3] if len(parts) == 4 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=["0.1:4"],
                        help="SIGMA:STEPS[:guided|unguided][:SAMPLER], e.g. 0.1:4, 0.1:4:unguided (the polish without "
                             "the stereo guidance; default guided) or 0.1:4:unguided:ddim")
    parser.add_argument("--no-controls", dest="controls", action="store_false",
                        help="skip the two control rows of the first setting")
    add_validation_arguments(parser, num_mols=300)
    args = parser.parse_args(argv)
    try:
        settings = [parse_setting(s) for s in args.settings]
    except ValueError as err:
        parser.error(str(err))
    sys.stdout.reconfigure(line_buffering=True)
    loaded, mols = start_validation_run("polish", args)
    model = loaded.model
    templates = [m.template for m in mols]
    print("| method | median minRMSD | mean minRMSD | cov@0.5 | cov@0.25 | cov@0.1 | valid | conf/s |")
    print("|---|---|---|---|---|---|---|---|")

    def report(name: str, coords: list[np.ndarray], seconds: float) -> None:
        row = aggregate(name, score_coordinates(mols, coords), args.num_confs, seconds)
        print(f"| {name} | {row.median_min_rmsd:.3f} | {row.mean_min_rmsd:.3f} | {row.coverage_05:.3f} | "
              f"{row.coverage_025:.3f} | {row.coverage_01:.3f} | {row.valid_fraction:.4f} | "
              f"{row.conformers_per_s:.1f} |")

    def polished(coords: list[np.ndarray], sigma: float, steps: int, guided: bool,
                 sampler: str | None) -> tuple[list[np.ndarray], float]:
        t0 = time.perf_counter()
        out = polish_conformers(model, templates, coords, sigma_start=sigma, steps=steps,
                                seed=polish_seed(args.seed), stereo_guidance=guided, sampler=sampler)
        return out, time.perf_counter() - t0

    raw, t_raw = run_model(model, mols, args.num_confs, seed=args.seed)
    report(f"model ({model.config.default_sampler}, {model.config.default_steps} steps)", raw, t_raw)
    relaxed, t_relax, _ = relax_all(mols, raw, threads=args.threads)
    report("model + MMFF94", relaxed, t_raw + t_relax)
    etkdg, t_etkdg = run_etkdg(mols, args.num_confs, seed=args.seed, threads=args.threads)
    report("ETKDGv3", etkdg, t_etkdg)
    etkdg_relaxed, t_etkdg_relax, _ = relax_all(mols, etkdg, threads=args.threads)
    report("ETKDGv3 + MMFF94", etkdg_relaxed, t_etkdg + t_etkdg_relax)
    for i, (sigma, steps, guided, sampler) in enumerate(settings):
        how = (f"{sigma:g} Å, {steps} step{'s' if steps != 1 else ''}{'' if guided else ', unguided'}"
               f"{f', {sampler}' if sampler else ''}")
        coords, seconds = polished(relaxed, sigma, steps, guided, sampler)
        report(f"model + MMFF94, polished from {how}", coords, t_raw + t_relax + seconds)
        if i == 0 and args.controls:
            coords, seconds = polished(raw, sigma, steps, guided, sampler)
            report(f"control: model, polished without MMFF94 ({how})", coords, t_raw + seconds)
            coords, seconds = polished(etkdg_relaxed, sigma, steps, guided, sampler)
            report(f"control: ETKDGv3 + MMFF94, polished ({how})", coords, t_etkdg + t_etkdg_relax + seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
