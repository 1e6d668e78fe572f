"""One chunk of molecules through sampling, checks and re-sampling rounds (the engine of
:func:`molediff.chem.generate.generate_conformers_batch`).

Per round, one ``model.sample`` call covers every molecule that still needs conformers; each
conformer is then checked in turn: finite coordinates, stereo (mirror images reflected,
:mod:`molediff.chem.stereo`), optional force-field relaxation, geometry validity
(:mod:`molediff.chem.validity`). Failures are re-sampled in the next round (``on_invalid="resample"``),
kept with a flag (``"flag"``) or dropped (``"drop"``). :func:`finish_job` turns what was kept into the
result molecule, with every conformer's provenance and check results as ``molediff_*`` properties,
or into the typed error that says why there is none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from rdkit import Chem

from molediff.chem import stereo as st
from molediff.chem.errors import (MolediffInputError, NonFiniteCoordinatesError,
                                  NoValidConformerError, StereoError)
from molediff.chem.prepare import PreparedMolecule
from molediff.chem.sampler_protocol import ConformerSampler

if TYPE_CHECKING:  # pragma: no cover
    from molediff.chem.generate import ConformerResult

__all__ = ["SamplingJob", "geometry_check", "run_sampling_rounds", "single_atom_job", "finish_job",
           "prune_conformers"]


def geometry_check(mol: Chem.Mol, coords: np.ndarray, checker=None) -> tuple[bool, str]:
    """Is ``coords`` ``[N, 3]`` a chemically sane geometry of ``mol``? Returns ``(ok, reason)``.

    PoseBusters-style checks of :mod:`molediff.chem.validity` (finite coordinates, bond lengths and
    angles within the distance-geometry bounds, no clashes, planarity); stereo is judged separately
    by :mod:`molediff.chem.stereo`, which can also repair mirror images. Pass ``checker`` (a
    :class:`~molediff.chem.validity.ValidityChecker` of ``mol``) to reuse its bounds across conformers.
    """
    from molediff.chem.validity import ValidityChecker

    if not np.all(np.isfinite(coords)):
        return False, "non-finite coordinates"
    result = (checker or ValidityChecker(mol))(np.asarray(coords, dtype=np.float64))
    failed = [name for name in result.failed if name != "stereo"]
    return (not failed), ", ".join(f"{name} check failed" for name in failed)


@dataclass
class SamplingJob:
    """Bookkeeping for one molecule while its conformers are sampled."""

    result: "ConformerResult"
    prep: PreparedMolecule
    ref: st.StereoReference
    accepted: list = field(default_factory=list)  # (coords, props) pairs
    nonfinite: int = 0
    wrong_stereo: int = 0
    bad_geometry: int = 0
    raw_stereo: list = field(default_factory=list)  # round-0 correctness before the mirror fix
    flagged: int = 0
    _checker: object = None

    @property
    def mol(self) -> Chem.Mol:
        return self.prep.mol

    @property
    def checker(self):
        """The molecule's validity checker, built once (its bounds matrix is the costly part)."""
        if self._checker is None:
            from molediff.chem.validity import ValidityChecker

            self._checker = ValidityChecker(self.mol)
        return self._checker


def round_seed(seed: int, rnd: int) -> int:
    """The seed (31 bits) the sampler gets in round ``rnd`` of a run with ``seed``.

    It depends on nothing else: with per-conformer noise (:mod:`molediff.chem.conformer_noise`) a molecule's
    conformers do not depend on its chunk, its position or ``batch_size``.
    """
    return int(np.random.SeedSequence([int(seed), int(rnd)]).generate_state(1)[0] & 0x7FFFFFFF)


def _sample(model: ConformerSampler, jobs: list[SamplingJob], k: int, **kw) -> list:
    """One sampler call for all jobs; on failure retry one by one so one bad molecule stays alone.

    Per job ``(coords [k, N, 3], draws [k])`` or the exception: ``draws`` are the sampler's own draw numbers
    when it reports them (``sample_with_draws``, e.g. :class:`~molediff.chem.strain_ranking.StrainRankedSampler`),
    else ``0 .. k-1``.
    """
    try:
        return _checked(_call(model, [j.mol for j in jobs], k, **kw), jobs, k)
    except Exception as err:  # a model error must not take down the whole chunk
        if len(jobs) == 1:
            return [err]
    out = []
    for j in jobs:
        try:
            out.extend(_checked(_call(model, [j.mol], k, **kw), [j], k))
        except Exception as err:
            out.append(err)
    return out


def _call(model: ConformerSampler, mols: list, k: int, **kw) -> tuple[list, list]:
    with_draws = getattr(model, "sample_with_draws", None)
    if with_draws is not None:
        arrays, draws = with_draws(mols, k, **kw)
        return list(arrays), list(draws)
    arrays = list(model.sample(mols, k, **kw))
    return arrays, [np.arange(k)] * len(arrays)


def _checked(sampled, jobs, k) -> list:
    arrays, draws = sampled
    if len(arrays) != len(jobs):
        raise RuntimeError(f"sampler returned {len(arrays)} arrays for {len(jobs)} molecules")
    if len(draws) != len(jobs):
        raise RuntimeError(f"sampler returned {len(draws)} draw-number arrays for {len(jobs)} molecules")
    out = []
    for a, d, j in zip(arrays, draws, jobs):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (k, j.mol.GetNumAtoms(), 3):
            raise RuntimeError(f"sampler returned shape {a.shape}, expected {(k, j.mol.GetNumAtoms(), 3)}")
        d = np.asarray(d, dtype=np.int64)
        if d.shape != (k,):
            raise RuntimeError(f"sampler returned draw numbers of shape {d.shape}, expected {(k,)}")
        out.append((a, d))
    return out


def _relaxed(job: SamplingJob, coords: np.ndarray, method: str) -> tuple[np.ndarray, dict] | None:
    """``coords`` after relaxation with ``method`` and its energy property (None if it failed)."""
    from molediff.chem.relax import relax_conformers

    mol = Chem.Mol(job.mol)
    mol.RemoveAllConformers()
    conf = Chem.Conformer(mol.GetNumAtoms())
    conf.SetPositions(coords)
    mol.AddConformer(conf, assignId=True)
    try:
        relax_conformers(mol, method=method, reference=job.ref, checker=job.checker)
    except MolediffInputError as err:  # e.g. no MMFF94 parameters: keep the sampled geometry
        if not any(w.startswith("not relaxed") for w in job.result.warnings):
            job.result.warnings.append(f"not relaxed: {err.reason}")
        return None
    conf = mol.GetConformer()
    if conf.GetProp("molediff_relaxed") == "failed":
        return None
    out = conf.GetPositions()
    energy = {k: conf.GetProp(k) for k in ("molediff_energy_kcal", "molediff_energy_ev", "molediff_relax_converged")
              if conf.HasProp(k)}
    return out - out.mean(axis=0), energy


def _consider(job: SamplingJob, coords: np.ndarray, rnd: int, call_seed: int, draw: int, on_invalid: str,
              relax: str | None = None) -> bool:
    """Check one conformer (after relaxation, if asked); keep it, possibly flagged, or discard it.

    Returns True when the conformer was kept as valid.
    """
    if not np.all(np.isfinite(coords)):
        job.nonfinite += 1
        return False  # never kept, not even flagged: NaN is never written
    coords = coords - coords.mean(axis=0)
    fixed, status = st.fix_coords(job.ref, coords)
    if rnd == 0:
        job.raw_stereo.append(status == "ok")
    relaxed_by, energy = "none", {}
    if relax and status != "wrong":
        relaxed = _relaxed(job, fixed, relax)
        if relaxed is not None:
            (fixed, energy), relaxed_by = relaxed, relax
            status = "ok" if st.check_coords(job.ref, fixed) else "wrong"
    geo_ok, reason = geometry_check(job.mol, fixed, job.checker)
    stereo_ok = status != "wrong"
    job.wrong_stereo += not stereo_ok
    job.bad_geometry += not geo_ok
    valid = stereo_ok and geo_ok
    if not valid and on_invalid != "flag":
        return False
    job.flagged += not valid
    props = {"molediff_round": rnd, "molediff_call_seed": call_seed, "molediff_draw": draw,
             "molediff_valid": int(valid), "molediff_stereo_ok": int(stereo_ok),
             "molediff_stereo_fix": "mirrored" if status == "mirrored" else "none",
             "molediff_geometry_ok": int(geo_ok), "molediff_relaxed": relaxed_by, **energy}
    if reason:
        props["molediff_geometry_reason"] = reason
    job.accepted.append((fixed, props))
    return valid


#: a re-sampling round draws at most this many times the conformers a molecule still misses
MAX_OVERSAMPLING = 8


def draws_for(missing: int, valid: int, drawn: int) -> int:
    """Conformers to draw for a molecule that misses ``missing`` valid ones after ``valid`` of ``drawn`` passed.

    The missing ones divided by the molecule's pass rate so far, at most :data:`MAX_OVERSAMPLING` times them: a
    molecule whose draws mostly fail the checks (a strained cage the model often gets in the wrong
    diastereomer) is drawn more often in one round instead of running out of rounds.
    """
    if missing <= 0:
        return 0
    if drawn == 0:
        return missing
    rate = max(valid / drawn, 1.0 / MAX_OVERSAMPLING)
    return min(missing * MAX_OVERSAMPLING, math.ceil(missing / rate - 1e-9))


def run_sampling_rounds(jobs: list[SamplingJob], model: ConformerSampler, num_confs: int, *, seed: int,
               sampler: str, steps, device, on_invalid: str, max_rounds: int, relax: str | None = None) -> None:
    """Sample, (relax,) check and re-sample conformers for the jobs of one chunk (in place).

    Round 0 draws ``num_confs`` conformers of every molecule. With ``on_invalid="resample"`` each further round
    draws, for every molecule still short of valid conformers, :func:`draws_for` of them (more than it misses
    when its earlier draws failed often), in one sampler call per draw count, and keeps valid ones until the
    molecule has ``num_confs``.
    """
    need = {id(j): num_confs for j in jobs}
    valid = {id(j): 0 for j in jobs}
    drawn = {id(j): 0 for j in jobs}
    rounds = 1 + (max_rounds if on_invalid == "resample" else 0)
    for rnd in range(rounds):
        todo = [j for j in jobs if need[id(j)] > 0 and j.result.error is None]
        if not todo:
            break
        call_seed = round_seed(seed, rnd)
        by_count: dict[int, list[SamplingJob]] = {}
        for j in todo:
            by_count.setdefault(draws_for(need[id(j)], valid[id(j)], drawn[id(j)]), []).append(j)
        for k, group in sorted(by_count.items()):
            outs = _sample(model, group, k, sampler=sampler, steps=steps, seed=call_seed, device=device)
            for job, out in zip(group, outs):
                if isinstance(out, Exception):
                    failure = f"model failed: {type(out).__name__}: {out}"
                    if job.accepted:  # a failing re-sampling round must not discard earlier rounds' conformers
                        job.result.warnings.append(f"re-sampling round {rnd}: {failure}; kept the "
                                                   f"{len(job.accepted)} conformer(s) of earlier rounds")
                        need[id(job)] = 0
                    else:
                        job.result.error = MolediffInputError(failure)
                    continue
                coords_k, draws_k = out
                for coords, draw in zip(coords_k, draws_k.tolist()):
                    if on_invalid == "resample" and valid[id(job)] >= num_confs:
                        break  # the rest of an oversampled round is not needed
                    drawn[id(job)] += 1
                    if _consider(job, coords, rnd, call_seed, draw, on_invalid, relax):
                        valid[id(job)] += 1
                need[id(job)] = num_confs - valid[id(job)] if on_invalid == "resample" else 0


def single_atom_job(job: SamplingJob, num_confs: int) -> None:
    props = {"molediff_round": 0, "molediff_call_seed": -1, "molediff_draw": 0, "molediff_valid": 1,
             "molediff_stereo_ok": 1,
             "molediff_stereo_fix": "none", "molediff_geometry_ok": 1}
    job.accepted = [(np.zeros((1, 3)), dict(props)) for _ in range(num_confs)]


def finish_job(job: SamplingJob, model: ConformerSampler, num_confs: int, meta: dict, relax, prune_rms) -> None:
    """Turn accepted coordinates into the result molecule, or into the right error."""
    res = job.result
    if res.error is not None:
        return
    if not job.accepted:
        counts = (f"{job.nonfinite} non-finite, {job.wrong_stereo} wrong stereo, "
                  f"{job.bad_geometry} invalid geometry")
        if job.nonfinite and not (job.wrong_stereo or job.bad_geometry):
            res.error = NonFiniteCoordinatesError(f"model returned only NaN/inf coordinates ({counts})")
        elif job.wrong_stereo and not (job.nonfinite or job.bad_geometry):
            res.error = StereoError(f"no conformer with the requested stereo ({counts})")
        else:
            res.error = NoValidConformerError(f"no valid conformer ({counts})")
        return
    rejected = job.nonfinite + job.wrong_stereo + job.bad_geometry
    if rejected:
        res.warnings.append(f"{rejected} sampled conformer(s) failed the checks ({job.nonfinite} non-finite, "
                            f"{job.wrong_stereo} wrong stereo, {job.bad_geometry} invalid geometry); "
                            f"{job.flagged} kept flagged molediff_valid=0, the others re-sampled or dropped")
    if len(job.accepted) < num_confs:
        res.warnings.append(f"only {len(job.accepted)} of {num_confs} conformers passed the checks")
    mol = Chem.Mol(job.mol)
    unspecified = st.count_unspecified_stereo(mol)
    for k, (coords, props) in enumerate(job.accepted):
        conf = Chem.Conformer(mol.GetNumAtoms())
        conf.SetPositions(coords)
        conf.Set3D(True)
        cid = mol.AddConformer(conf, assignId=True)
        c = mol.GetConformer(cid)
        for key, val in props.items():
            c.SetProp(key, str(val))
        if unspecified:
            c.SetProp("molediff_stereo_smiles", st.perceived_smiles(mol, coords))
    if prune_rms:
        prune_conformers(mol, prune_rms)
    mol.SetProp("_Name", res.id)
    for key, val in meta.items():
        mol.SetProp(key, str(val))
    mol.SetProp("molediff_input_smiles", res.smiles or job.prep.smiles)
    mol.SetProp("molediff_smiles", job.prep.smiles)
    mol.SetIntProp("molediff_unspecified_stereo", unspecified)
    if job.ref.num_elements and job.raw_stereo:
        mol.SetProp("molediff_stereo_raw_fraction", f"{np.mean(job.raw_stereo):.4f}")
    if res.warnings:
        mol.SetProp("molediff_warnings", "; ".join(res.warnings))
    res.mol = mol


def prune_conformers(mol: Chem.Mol, threshold: float) -> None:
    """Greedy heavy-atom RMSD pruning (symmetry-aware), keeping the first of similar conformers."""
    from rdkit.Chem import rdMolAlign
    heavy = Chem.RemoveHs(mol, sanitize=False)
    if heavy.GetNumAtoms() == 0:
        return
    kept: list[int] = []
    for conf in list(mol.GetConformers()):
        cid = conf.GetId()
        if all(rdMolAlign.GetBestRMS(heavy, heavy, cid, k, maxMatches=1000) >= threshold for k in kept):
            kept.append(cid)
        else:
            mol.RemoveConformer(cid)
