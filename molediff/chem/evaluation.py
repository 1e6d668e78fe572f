"""Evaluate conformer generators against a reference geometry per molecule (QM9 DFT).

Every method gets the same molecules and the same number of conformers K; each molecule's
conformers are scored against its one reference geometry and the scores are aggregated into one
:class:`EvaluationRow` per method. Methods (:data:`METHODS`):

* ``model``: the diffusion model's raw samples (``ConformerModel.sample``), no repair;
* ``model+mmff``: the same samples, each optimised with MMFF94;
* ``ranked``: the least MMFF94-strained K of ``draws · K`` raw samples
  (:class:`molediff.chem.strain_ranking.StrainRankedSampler`; ``molediff conformers --draws`` without the repairs),
  the coordinates unchanged; ``ranked+mmff`` and ``ranked+mmff+polish`` the same relaxed, and polished;
  ``product-ranked`` and ``product-ranked+mmff+polish`` what ``molediff conformers --draws`` and
  ``--draws --polish`` return;
* ``product``: :func:`molediff.chem.generate.generate_conformers_batch` (stereo repair of mirror
  images, re-sampling of invalid conformers), i.e. what ``molediff conformers`` returns;
* ``etkdg``: RDKit ETKDGv3 (:func:`molediff.chem.etkdg.etkdg_conformers`, stereo enforced);
* ``etkdg+mmff``: the same ETKDG conformers, each optimised with MMFF94;
* ``refined``: ETKDG conformers refined by the model from a low noise level
  (:class:`molediff.chem.refine.EtkdgRefinedSampler`, its defaults; ``molediff conformers --start etkdg``
  without the product's repairs), ``refined+mmff`` the same relaxed;
* ``mixed``: half of each molecule's conformers sampled from the prior, half refined from ETKDG
  (the same class with ``prior_share=DEFAULT_PRIOR_SHARE``; ``molediff conformers --start mixed``
  without the repairs), ``mixed+mmff`` the same relaxed;
* ``model+mmff+polish``, ``mixed+mmff+polish``, ``etkdg+mmff+polish``: the relaxed conformers polished by
  the model from a low noise level (:func:`molediff.chem.polish.polish_conformers`, its defaults; the first
  two are ``molediff conformers --polish`` and ``--start mixed --polish`` without the repairs);
  ``product+mmff+polish`` the product path with :class:`molediff.chem.polish.PolishedSampler`, i.e. what
  ``molediff conformers --polish`` returns.

Metrics per row: mean / median over molecules of the minimum heavy-atom RMSD (symmetry-aware,
after alignment) to the reference, coverage at 0.5 / 0.25 / 0.1 Å, mean RMSD over all conformers
(:func:`molediff.chem.metrics.conformer_metrics`), the fraction of conformers passing
:class:`molediff.chem.validity.ValidityChecker`, the fraction with the reference's stereo
(over conformers of molecules that have specified stereo elements; for raw model samples also
after reflecting mirror images, the repair the product applies), the molecules that got no
conformer (counted as misses in coverage, excluded from mean / median and reported) and
conformers per second of generation wall time (relaxation included for the ``+mmff`` rows, and the polish
for the ``+polish`` rows;
scoring excluded). Non-finite conformers count as generated and invalid, but have no RMSD.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from rdkit import Chem, rdBase

from molediff.chem.convert import with_conformers
from molediff.chem.errors import RelaxationError
from molediff.chem.etkdg import etkdg_conformers
from molediff.chem.metrics import conformer_metrics, min_rmsd_to_reference
from molediff.chem.relax import mmff_relaxed_coordinates
from molediff.chem.stereo import stereo_reference, stereo_report
from molediff.chem.strain_ranking import DEFAULT_DRAWS, StrainRankedSampler
from molediff.chem.validity import ValidityChecker

__all__ = ["METHODS", "DEFAULT_METHODS", "EvalMolecule", "MoleculeScore", "EvaluationRow",
           "select_molecules", "score_molecule", "score_coordinates", "aggregate", "PairedRow", "PAIRED_COLUMNS",
           "paired_comparison", "run_model", "run_etkdg",
           "relax_all", "run_product", "evaluate", "needs_model"]

METHODS = ("model", "model+mmff", "unguided", "unguided+mmff", "product", "etkdg", "etkdg+mmff", "refined",
           "refined+mmff", "mixed", "mixed+mmff", "model+mmff+polish", "mixed+mmff+polish", "etkdg+mmff+polish",
           "product+mmff+polish", "ranked", "ranked+mmff", "ranked+mmff+polish", "product-ranked",
           "product-ranked+mmff+polish")
DEFAULT_METHODS = ("model", "model+mmff", "etkdg", "etkdg+mmff")
THRESHOLDS = (0.5, 0.25, 0.1)
Log = Callable[[str], None]


def needs_model(method: str) -> bool:
    """Whether ``method`` (one of :data:`METHODS`) uses the diffusion model (all but the ETKDG rows)."""
    return not method.startswith("etkdg") or method.endswith("+polish")


@dataclass
class EvalMolecule:
    """A molecule to evaluate: explicit-H ``mol`` with stereo tags and the reference as conformer 0."""

    index: int
    smiles: str
    mol: Chem.Mol

    @property
    def template(self) -> Chem.Mol:
        """The molecule without conformers (what the generators get)."""
        m = Chem.Mol(self.mol)
        m.RemoveAllConformers()
        return m


@dataclass
class MoleculeScore:
    """Scores of one method's conformers of one molecule (``rmsds`` over finite conformers)."""

    index: int
    smiles: str
    num_generated: int
    rmsds: list[float] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    stereo_elements: int = 0
    stereo_correct: list[bool] = field(default_factory=list)
    stereo_fixable: list[bool] = field(default_factory=list)
    note: str = ""

    @property
    def min_rmsd(self) -> float:
        return min(self.rmsds) if self.rmsds else math.inf


@dataclass
class EvaluationRow:
    """One method's aggregate over the evaluated molecules (see the module docstring)."""

    method: str
    molecules: int
    k: int
    mean_min_rmsd: float
    median_min_rmsd: float
    coverage_05: float
    coverage_025: float
    coverage_01: float
    mean_rmsd: float
    valid_fraction: float
    stereo_fraction: float
    stereo_fixed_fraction: float
    stereo_molecules: int
    no_conformer: int
    conformers: int
    seconds: float
    conformers_per_s: float
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_molecules(dataset: Sequence[Any], num_mols: int | None = None, seed: int = 0) -> list[EvalMolecule]:
    """A seeded random subset (all when ``num_mols`` is None) of QM9 records, in dataset order."""
    n = len(dataset)
    if num_mols is None or num_mols >= n:
        picks = np.arange(n)
    else:
        if num_mols < 1:
            raise ValueError(f"num_mols must be >= 1, got {num_mols}")
        picks = np.sort(np.random.default_rng(seed).choice(n, size=num_mols, replace=False))
    out = []
    for i in picks:
        rec = dataset[int(i)]
        out.append(EvalMolecule(int(rec.index), str(rec.smiles), rec.mol))
    return out


def score_molecule(ref: EvalMolecule, probe: Chem.Mol, num_nonfinite: int = 0, note: str = "") -> MoleculeScore:
    """Score the conformers of ``probe`` (same constitution as ``ref``, any atom order).

    ``num_nonfinite`` conformers that were generated but dropped for NaN / inf coordinates count
    as invalid and stereo-incorrect; they have no RMSD.
    """
    n = probe.GetNumConformers()
    score = MoleculeScore(ref.index, ref.smiles, n + num_nonfinite, note=note)
    reference = ref.template
    if n:
        _, rmsds = min_rmsd_to_reference(probe, ref.mol)
        score.rmsds = [float(r) for r in rmsds]
        pos = np.stack([c.GetPositions() for c in probe.GetConformers()])
        with rdBase.BlockLogs():
            score.valid = [r.ok for r in ValidityChecker(probe).check_many(pos)]
            report = stereo_report(probe, reference)
        score.stereo_elements = report.num_elements
        score.stereo_correct = list(report.correct)
        score.stereo_fixable = [c or m for c, m in zip(report.correct, report.mirror_correct)]
    score.valid += [False] * num_nonfinite
    score.stereo_correct += [False] * num_nonfinite
    score.stereo_fixable += [False] * num_nonfinite
    if not n:
        score.stereo_elements = stereo_reference(reference).num_elements
    return score


def _mean(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def aggregate(method: str, scores: Sequence[MoleculeScore], k: int, seconds: float, notes: str = "") -> EvaluationRow:
    """Turn per-molecule scores into one :class:`EvaluationRow`."""
    stats = conformer_metrics([np.asarray(s.rmsds) for s in scores], thresholds=THRESHOLDS)
    stereo = [s for s in scores if s.stereo_elements]
    generated = sum(s.num_generated for s in scores)
    return EvaluationRow(
        method=method, molecules=len(scores), k=k,
        mean_min_rmsd=stats["mean_min_rmsd"], median_min_rmsd=stats["median_min_rmsd"],
        coverage_05=stats["coverage@0.5"], coverage_025=stats["coverage@0.25"],
        coverage_01=stats["coverage@0.1"], mean_rmsd=stats["mean_rmsd"],
        valid_fraction=_mean([v for s in scores for v in s.valid]),
        stereo_fraction=_mean([v for s in stereo for v in s.stereo_correct]),
        stereo_fixed_fraction=_mean([v for s in stereo for v in s.stereo_fixable]),
        stereo_molecules=len(stereo), no_conformer=int(stats["failed_molecules"]),
        conformers=generated, seconds=float(seconds),
        conformers_per_s=generated / seconds if seconds > 0 else float("nan"), notes=notes)


@dataclass
class PairedRow:
    """One method on the molecules every compared method embedded, and head-to-head against a baseline."""

    method: str
    molecules: int
    mean_min_rmsd: float
    median_min_rmsd: float
    coverage_05: float
    coverage_025: float
    coverage_01: float
    wins: float  # fraction of these molecules where this method's min-RMSD is lower than the baseline's
    losses: float


PAIRED_COLUMNS = (
    ("method", "method", "{}"), ("mols", "molecules", "{}"), ("mean minRMSD", "mean_min_rmsd", "{:.3f}"),
    ("median", "median_min_rmsd", "{:.3f}"), ("cov@0.5", "coverage_05", "{:.3f}"),
    ("cov@0.25", "coverage_025", "{:.3f}"), ("cov@0.1", "coverage_01", "{:.3f}"),
    ("better than baseline", "wins", "{:.3f}"), ("worse", "losses", "{:.3f}"),
)


def paired_comparison(per_molecule: dict[str, Sequence[MoleculeScore]], baseline: str) -> list[PairedRow]:
    """Every method restricted to the molecules where *all* methods produced a finite conformer.

    The main table leaves a method's failed molecules out of its mean and median, which flatters a method
    that fails on the hard ones; here every row covers the same molecules, and ``wins`` / ``losses``
    count the molecules where a method's min-RMSD is lower / higher than ``baseline``'s (ties: neither).
    """
    if baseline not in per_molecule:
        raise ValueError(f"baseline {baseline!r} is not among the methods {list(per_molecule)}")
    common = set.intersection(*({s.index for s in scores if s.rmsds} for scores in per_molecule.values()))
    base = {s.index: s.min_rmsd for s in per_molecule[baseline] if s.index in common}
    order = sorted(common)
    ref = np.array([base[i] for i in order])
    rows = []
    for method, scores in per_molecule.items():
        mine = {s.index: s.min_rmsd for s in scores if s.index in common}
        best = np.array([mine[i] for i in order])
        if not len(best):
            rows.append(PairedRow(method, 0, *[float("nan")] * 7))
            continue
        rows.append(PairedRow(
            method, len(best), float(best.mean()), float(np.median(best)),
            *(float((best < t).mean()) for t in THRESHOLDS),  # strict, as conformer_metrics
            float((best < ref).mean()), float((best > ref).mean())))
    return rows


# ----------------------------------------------------------------------------- generators
def run_model(model: Any, mols: Sequence[EvalMolecule], k: int, *, sampler: str | None = None,
              steps: int | None = None, seed: int = 0, device: str | None = None,
              stereo_guidance: bool = True) -> tuple[list[np.ndarray], float]:
    """Sample K conformers per molecule in one batched call; returns ``([K, N, 3] arrays, seconds)``.

    ``stereo_guidance=False`` gives the network's unguided output (method ``unguided``).
    """
    templates = [m.template for m in mols]
    kwargs: dict[str, Any] = {"steps": steps, "seed": seed, "device": device}
    if not stereo_guidance:
        kwargs["stereo_guidance"] = False
    if sampler is not None:
        kwargs["sampler"] = sampler
    t0 = time.perf_counter()
    coords = model.sample(templates, k, **kwargs)
    return [np.asarray(c, dtype=np.float64) for c in coords], time.perf_counter() - t0


def run_etkdg(mols: Sequence[EvalMolecule], k: int, *, seed: int = 0,
              threads: int = 1) -> tuple[list[np.ndarray], float]:
    """ETKDGv3 conformers (``numThreads=threads``); a molecule may get fewer than K (failed embeds).

    Each molecule gets its own RDKit seed derived from ``seed`` and its index, never 0: RDKit seeds
    conformer c of ``EmbedMultipleConfs`` from ``randomSeed * (c + 1)``, so ``randomSeed=0``
    returns K identical conformers.
    """
    out, seconds = [], 0.0
    for m in mols:
        rd_seed = int(np.random.SeedSequence([seed, m.index]).generate_state(1)[0] % (2**31 - 2)) + 1
        res = etkdg_conformers(m.template, k, seed=rd_seed, num_threads=threads)
        seconds += res.seconds
        n = res.mol.GetNumAtoms()
        out.append(np.stack([res.mol.GetConformer(c).GetPositions() for c in res.conf_ids])
                   if res.conf_ids else np.zeros((0, n, 3)))
    return out, seconds


def relax_all(mols: Sequence[EvalMolecule], coords: Sequence[np.ndarray], *, threads: int = 1,
              max_iters: int = 2000) -> tuple[list[np.ndarray], float, int]:
    """MMFF94-optimise finite conformers; returns ``(coords, seconds, molecules MMFF could not treat)``.

    Non-finite conformers and diverged optimisations keep their input coordinates.
    """
    out, seconds, failed = [], 0.0, 0
    for m, xyz in zip(mols, coords):
        t0 = time.perf_counter()
        try:
            out.append(mmff_relaxed_coordinates(m.template, xyz, max_iters=max_iters, num_threads=threads))
        except RelaxationError:
            failed += 1
            out.append(np.array(xyz, dtype=np.float64, copy=True))
        seconds += time.perf_counter() - t0
    return out, seconds, failed


def run_product(model: Any, mols: Sequence[EvalMolecule], k: int, *, sampler: str | None = None,
                steps: int | None = None, seed: int = 0, device: str | None = None) -> tuple[list[Chem.Mol | None], float]:
    """The product path (stereo repair + re-sampling); ``None`` for a molecule that got nothing."""
    from molediff.chem.generate import generate_conformers_batch

    kwargs: dict[str, Any] = {"model": model, "steps": steps, "device": device, "on_invalid": "resample"}
    if sampler is not None:
        kwargs["sampler"] = sampler
    t0 = time.perf_counter()
    with rdBase.BlockLogs():
        results = list(generate_conformers_batch([m.template for m in mols], k, seed, **kwargs))
    seconds = time.perf_counter() - t0
    return [r.mol if r.ok else None for r in results], seconds


# ----------------------------------------------------------------------------- driver
def score_coordinates(mols: Sequence[EvalMolecule], coords: Sequence[np.ndarray]) -> list[MoleculeScore]:
    """Score ``[K_i, N_i, 3]`` coordinate arrays (RDKit atom order of each molecule); NaN rows allowed."""
    scores = []
    for m, xyz in zip(mols, coords):
        finite = np.isfinite(xyz).all(axis=(1, 2)) if len(xyz) else np.zeros(0, bool)
        probe = with_conformers(m.template, np.asarray(xyz)[finite])
        scores.append(score_molecule(m, probe, num_nonfinite=int((~finite).sum())))
    return scores


def evaluate(mols: Sequence[EvalMolecule], methods: Sequence[str] = DEFAULT_METHODS, *, model: Any = None,
             k: int = 10, seed: int = 0, sampler: str | None = None, steps: int | None = None,
             threads: int = 1, device: str | None = None, draws: float = DEFAULT_DRAWS,
             log: Log | None = None) -> tuple[list[EvaluationRow], dict[str, list[MoleculeScore]]]:
    """Run ``methods`` on ``mols`` with K conformers each and score them.

    ``draws`` is the draws per kept conformer of the ``ranked`` methods.

    Returns
    -------
    rows : one :class:`EvaluationRow` per method, in ``methods`` order
    per_molecule : method -> per-molecule :class:`MoleculeScore` list (for JSON dumps)

    Raises
    ------
    ValueError
        An unknown method, K < 1, a model method without ``model``, or ``draws`` < 1 with a ranked method.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if model is None and any(needs_model(m) for m in methods):
        raise ValueError("model methods need a model")
    if any("ranked" in m for m in methods):
        StrainRankedSampler(model, draws)  # a bad ``draws`` fails here, before any method has run
    say = log or (lambda _msg: None)
    rows: list[EvaluationRow] = []
    scores: dict[str, list[MoleculeScore]] = {}
    generated: dict[Any, tuple[list[np.ndarray], float]] = {}  # by base name, and (name, "mmff") relaxed
    unrelaxed: dict[str, int] = {}  # molecules MMFF94 could not relax, by base name

    def base(name: str) -> tuple[list[np.ndarray], float]:
        if name not in generated:
            say(f"generating: {name} ({len(mols)} molecules x {k})")
            if name in ("model", "unguided"):
                generated[name] = run_model(model, mols, k, sampler=sampler, steps=steps, seed=seed, device=device,
                                            stereo_guidance=name == "model")
            elif name == "ranked":
                generated[name] = run_model(StrainRankedSampler(model, draws), mols, k, sampler=sampler, steps=steps,
                                            seed=seed, device=device)
            elif name in ("refined", "mixed"):
                from molediff.chem.refine import DEFAULT_PRIOR_SHARE, EtkdgRefinedSampler
                from molediff.chem.sampler_protocol import EtkdgSampler

                share = DEFAULT_PRIOR_SHARE if name == "mixed" else 0.0
                starts = EtkdgSampler(num_threads=threads)  # as many RDKit threads as the etkdg row
                generated[name] = run_model(EtkdgRefinedSampler(model, prior_share=share, etkdg=starts), mols, k,
                                            sampler=sampler, seed=seed, device=device)
            else:
                generated[name] = run_etkdg(mols, k, seed=seed, threads=threads)
        return generated[name]

    for method in methods:
        notes = ""
        if method.startswith("product"):
            say(f"generating: {method} ({len(mols)} molecules x {k})")
            sampling_model = StrainRankedSampler(model, draws) if method.startswith("product-ranked") else model
            if method.endswith("+polish"):
                from molediff.chem.polish import PolishedSampler

                sampling_model = PolishedSampler(model, base=sampling_model)
            out, seconds = run_product(sampling_model, mols, k, sampler=sampler, steps=steps, seed=seed,
                                       device=device)
            per = [score_molecule(m, mol) if mol is not None else score_molecule(m, m.template, note="no conformer")
                   for m, mol in zip(mols, out)]
        else:
            name, *stages = method.split("+")
            coords, seconds = base(name)
            if "mmff" in stages:
                if (name, "mmff") not in generated:
                    say(f"relaxing: {name}+mmff")
                    relaxed, extra, failed = relax_all(mols, coords, threads=threads)
                    generated[name, "mmff"] = relaxed, extra
                    unrelaxed[name] = failed
                coords, extra = generated[name, "mmff"]
                seconds += extra
                failed = unrelaxed[name]
                notes = f"{failed} molecule(s) without MMFF94 parameters left unrelaxed" if failed else ""
            if "polish" in stages:
                from molediff.chem.polish import polish_conformers, polish_seed

                say(f"polishing: {method}")
                t0 = time.perf_counter()
                coords = polish_conformers(model, [m.template for m in mols], coords, seed=polish_seed(seed),
                                           device=device)
                seconds += time.perf_counter() - t0
            per = score_coordinates(mols, coords)
        say(f"scored: {method}")
        scores[method] = per
        rows.append(aggregate(method, per, k, seconds, notes))
    return rows, scores
