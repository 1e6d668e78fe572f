"""Generate 3D conformers from SMILES or molecules: the library face of molediff.

>>> from molediff.chem.generate import generate_conformers
>>> mol = generate_conformers("C[C@H](N)C(=O)O", num_confs=3, seed=0, model="etkdg")
>>> mol.GetNumConformers(), mol.GetConformer(0).GetProp("molediff_stereo_ok")
(3, '1')

Pipeline per molecule: :func:`~molediff.chem.prepare.prepare_molecule` (parse, fragments,
hydrogens, caps) -> one ``model.sample`` call per chunk of molecules -> per conformer: finite
coordinates, stereo (mirror images reflected, :mod:`molediff.chem.stereo`) and geometry
validity -> re-sampling of the failures within ``max_resample_rounds`` -> optional force-field
relaxation and RMSD pruning. Every conformer carries its provenance and check results as
conformer properties (``molediff_*``); the SDF writer copies them into each record.

Stereo policy: stereo specified by the input (SMILES tags, an RDKit Mol's tags or its 3D
geometry) is enforced. Unspecified stereo elements are *not* enumerated: each conformer keeps
what the model produced, the molecule gets ``molediff_unspecified_stereo`` (count) and each
conformer ``molediff_stereo_smiles`` (the stereoisomer perceived from its 3D coordinates).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from rdkit import Chem

from molediff.chem import stereo as st
from molediff.chem.errors import (MolediffInputError, NonFiniteCoordinatesError,
                                  NoValidConformerError, StereoError)
from molediff.chem.io_read import InputRecord, records_from_strings
from molediff.chem.prepare import PreparedMolecule, prepare_molecule
from molediff.chem.sampler_protocol import ConformerSampler, EtkdgSampler

__all__ = ["ConformerResult", "generate_conformers", "generate_conformers_batch", "resolve_model",
           "ON_INVALID"]

ON_INVALID = ("resample", "flag", "drop")


@dataclass
class ConformerResult:
    """Outcome for one input of :func:`generate_conformers_batch`.

    Attributes
    ----------
    index, line, id : int, int or None, str
        Position in the input (0-based), 1-based file line (if any) and identifier.
    smiles : str
        The input SMILES ("" for molecule inputs).
    mol : Chem.Mol or None
        Molecule with explicit hydrogens and conformers when ``ok``.
    error : MolediffInputError or None
        Why no conformer could be produced.
    warnings : list of str
        Non-fatal remarks (fragments removed, larger than the training set, conformers dropped).
    """

    index: int
    line: int | None
    id: str
    smiles: str
    mol: Chem.Mol | None = None
    error: MolediffInputError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the molecule has at least one conformer."""
        return self.error is None and self.mol is not None


@functools.lru_cache(maxsize=4)
def _load(name: str | None, device: str | None) -> ConformerSampler:
    try:
        from molediff.chem.model import load_conformer_model
    except ImportError as err:
        raise ImportError(f"the trained conformer model is not available ({err}); "
                          "use model='etkdg' for the RDKit baseline") from err
    return load_conformer_model(name, device=device)


def resolve_model(model: "ConformerSampler | str | None" = None, device=None) -> ConformerSampler:
    """Return a sampler: an instance as is, ``"etkdg"`` for the RDKit baseline, else a checkpoint.

    ``None`` loads the shipped default model (cached, loaded on first use only).
    """
    if model is not None and not isinstance(model, str):
        return model
    if isinstance(model, str) and model.lower() == "etkdg":
        return EtkdgSampler()
    return _load(model, None if device is None else str(device))


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
class _Job:
    """Bookkeeping for one molecule while its conformers are sampled."""

    result: ConformerResult
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


def _round_seed(seed: int, start: int, rnd: int) -> int:
    return int(np.random.SeedSequence([seed, start, rnd]).generate_state(1)[0] & 0x7FFFFFFF)


def _sample(model: ConformerSampler, jobs: list[_Job], k: int, **kw) -> list:
    """One sampler call for all jobs; on failure retry one by one so one bad molecule stays alone."""
    try:
        return _checked(model.sample([j.mol for j in jobs], k, **kw), jobs, k)
    except Exception as err:  # a model error must not take down the whole chunk
        if len(jobs) == 1:
            return [err]
    out = []
    for j in jobs:
        try:
            out.extend(_checked(model.sample([j.mol], k, **kw), [j], k))
        except Exception as err:
            out.append(err)
    return out


def _checked(arrays, jobs, k) -> list:
    arrays = list(arrays)
    if len(arrays) != len(jobs):
        raise RuntimeError(f"sampler returned {len(arrays)} arrays for {len(jobs)} molecules")
    out = []
    for a, j in zip(arrays, jobs):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (k, j.mol.GetNumAtoms(), 3):
            raise RuntimeError(f"sampler returned shape {a.shape}, expected {(k, j.mol.GetNumAtoms(), 3)}")
        out.append(a)
    return out


def _relaxed(job: _Job, coords: np.ndarray, method: str) -> tuple[np.ndarray, dict] | None:
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
    energy = {k: conf.GetProp(k) for k in ("molediff_energy_kcal", "molediff_energy_ev") if conf.HasProp(k)}
    return out - out.mean(axis=0), energy


def _consider(job: _Job, coords: np.ndarray, rnd: int, call_seed: int, on_invalid: str,
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
    props = {"molediff_round": rnd, "molediff_call_seed": call_seed, "molediff_valid": int(valid),
             "molediff_stereo_ok": int(stereo_ok),
             "molediff_stereo_fix": "mirrored" if status == "mirrored" else "none",
             "molediff_geometry_ok": int(geo_ok), "molediff_relaxed": relaxed_by, **energy}
    if reason:
        props["molediff_geometry_reason"] = reason
    job.accepted.append((fixed, props))
    return valid


def _run_chunk(jobs: list[_Job], model: ConformerSampler, num_confs: int, *, start: int, seed: int,
               sampler: str, steps, device, on_invalid: str, max_rounds: int, relax: str | None = None) -> None:
    """Sample, (relax,) check and re-sample conformers for the jobs of one chunk (in place)."""
    need = {id(j): num_confs for j in jobs}
    valid = {id(j): 0 for j in jobs}
    rounds = 1 + (max_rounds if on_invalid == "resample" else 0)
    for rnd in range(rounds):
        todo = [j for j in jobs if need[id(j)] > 0 and j.result.error is None]
        if not todo:
            break
        k = max(need[id(j)] for j in todo)
        call_seed = _round_seed(seed, start, rnd)
        outs = _sample(model, todo, k, sampler=sampler, steps=steps, seed=call_seed, device=device)
        for job, out in zip(todo, outs):
            if isinstance(out, Exception):
                job.result.error = MolediffInputError(f"model failed: {type(out).__name__}: {out}")
                continue
            for coords in out[: need[id(job)]]:
                if _consider(job, coords, rnd, call_seed, on_invalid, relax):
                    valid[id(job)] += 1
            need[id(job)] = num_confs - (valid[id(job)] if on_invalid == "resample" else num_confs)


def _single_atom(job: _Job, num_confs: int) -> None:
    props = {"molediff_round": 0, "molediff_call_seed": -1, "molediff_valid": 1, "molediff_stereo_ok": 1,
             "molediff_stereo_fix": "none", "molediff_geometry_ok": 1}
    job.accepted = [(np.zeros((1, 3)), dict(props)) for _ in range(num_confs)]


def _finish(job: _Job, model: ConformerSampler, num_confs: int, meta: dict, relax, prune_rms) -> None:
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
        _prune(mol, prune_rms)
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


def _prune(mol: Chem.Mol, threshold: float) -> None:
    """Greedy heavy-atom RMSD pruning (symmetry-aware), keeping the first of similar conformers."""
    from rdkit.Chem import rdMolAlign
    heavy = Chem.RemoveHs(mol, sanitize=False)
    if heavy.GetNumAtoms() < 3:
        return
    kept: list[int] = []
    for conf in list(mol.GetConformers()):
        cid = conf.GetId()
        if all(rdMolAlign.GetBestRMS(heavy, heavy, cid, k, maxMatches=1000) >= threshold for k in kept):
            kept.append(cid)
        else:
            mol.RemoveConformer(cid)


def generate_conformers_batch(
    inputs: Iterable["str | Chem.Mol | InputRecord"], num_confs: int = 10, seed: int | None = None, *,
    model: "ConformerSampler | str | None" = None, sampler: str | None = None, steps: int | None = None,
    relax: str | None = None, prune_rms: float | None = None, device: "str | torch.device | None" = None,
    on_invalid: str = "resample", max_resample_rounds: int = 3, batch_size: int = 64,
    fragments: str = "largest", max_atoms: int | None = None, allow_radicals: bool = False,
) -> Iterator[ConformerResult]:
    """Generate conformers for many molecules, yielding one :class:`ConformerResult` per input, in order.

    Molecules are read lazily and packed ``batch_size`` at a time into one ``model.sample`` call;
    a bad input becomes a result with ``error`` set and never stops the batch.

    Parameters
    ----------
    inputs : iterable of str, Chem.Mol or InputRecord
        SMILES, molecules, or records from :mod:`molediff.chem.io_read`.
    num_confs, seed, model, sampler, steps, relax, prune_rms, device, on_invalid, max_resample_rounds
        As in :func:`generate_conformers`.
    batch_size : int
        Molecules per sampler call.
    fragments, max_atoms, allow_radicals
        Input policy, see :func:`molediff.chem.prepare.prepare_molecule`.

    Yields
    ------
    ConformerResult
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    if num_confs < 1 or batch_size < 1:
        raise ValueError("num_confs and batch_size must be >= 1")
    if relax not in (None, "mmff", "xtb"):
        raise ValueError(f"relax must be None, 'mmff' or 'xtb', got {relax!r}")
    if relax == "xtb":
        from molediff.chem.relax import require_xtb
        require_xtb()
    seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
    chunk: list[InputRecord] = []
    state: dict = {}
    for rec in records_from_strings(inputs):
        chunk.append(rec)
        if len(chunk) >= batch_size:
            yield from _process(chunk, state, model, num_confs, seed, sampler, steps, relax, prune_rms,
                                device, on_invalid, max_resample_rounds, fragments, max_atoms, allow_radicals)
            chunk = []
    if chunk:
        yield from _process(chunk, state, model, num_confs, seed, sampler, steps, relax, prune_rms,
                            device, on_invalid, max_resample_rounds, fragments, max_atoms, allow_radicals)


def _process(chunk, state, model, num_confs, seed, sampler, steps, relax, prune_rms, device,
             on_invalid, max_rounds, fragments, max_atoms, allow_radicals) -> list[ConformerResult]:
    results, jobs, trivial = [], [], []
    for rec in chunk:
        res = ConformerResult(rec.index, rec.line, rec.id, rec.smiles, error=rec.error)
        results.append(res)
        if res.error is not None:
            continue
        try:
            prep = prepare_molecule(rec.source, fragments=fragments, max_atoms=max_atoms,
                                    allow_radicals=allow_radicals)
            res.warnings.extend(prep.warnings)
            job = _Job(res, prep, st.stereo_reference(prep.mol))
            if prep.mol.GetNumAtoms() == 1:
                trivial.append(job)
                continue
            if "model" not in state:  # lazily: an all-bad input never loads the model
                state["model"] = resolve_model(model, device)
            mdl = state["model"]
            mdl.check_supported(prep.mol)
            if prep.mol.GetNumAtoms() > mdl.max_atoms:
                res.warnings.append(f"{prep.mol.GetNumAtoms()} atoms: larger than any molecule the model "
                                    f"{mdl.name} was trained on ({mdl.max_atoms}); expect lower quality")
            jobs.append(job)
        except MolediffInputError as err:
            res.error = err
    for res in results:
        if res.error is not None and res.error.item is None:
            res.error.with_item(_label(res))
    mdl = state.get("model")
    if jobs:
        _run_chunk(jobs, mdl, num_confs, start=chunk[0].index, seed=seed, sampler=sampler, steps=steps,
                   device=device, on_invalid=on_invalid, max_rounds=max_rounds, relax=relax)
    for job in trivial:
        _single_atom(job, num_confs)
    defaults = getattr(mdl, "config", None)
    meta = {"molediff_model": getattr(mdl, "name", "none"),
            "molediff_sampler": sampler or getattr(defaults, "default_sampler", "default"),
            "molediff_steps": steps or getattr(defaults, "default_steps", "default"), "molediff_seed": seed}
    if hasattr(mdl, "resolved_precision"):
        meta["molediff_precision"] = mdl.resolved_precision(device=device or "cpu")
    for job in jobs + trivial:
        _finish(job, mdl, num_confs, meta, relax, prune_rms if job.mol.GetNumAtoms() > 1 else None)
        if job.result.error is not None and job.result.error.item is None:
            job.result.error.with_item(_label(job.result))
    return results


def _label(res: ConformerResult) -> str:
    where = f"line {res.line}" if res.line is not None else f"input {res.index + 1}"
    return where if res.id == where else f"{where} ({res.id})"


def generate_conformers(
    smiles_or_mol: "str | Chem.Mol", num_confs: int = 10, seed: int | None = None, *,
    model: "ConformerSampler | str | None" = None, sampler: str | None = None, steps: int | None = None,
    relax: str | None = None, prune_rms: float | None = None, device: "str | torch.device | None" = None,
    on_invalid: str = "resample", max_resample_rounds: int = 3, fragments: str = "largest",
    max_atoms: int | None = None, allow_radicals: bool = False,
) -> Chem.Mol:
    """Generate 3D conformers of one molecule.

    Parameters
    ----------
    smiles_or_mol : str or Chem.Mol
        SMILES, or a molecule whose own stereochemistry is respected.
    num_confs : int
        Conformers wanted (fewer can come back after ``prune_rms`` or with ``on_invalid="drop"``).
    seed : int, optional
        Random seed; ``None`` draws one and records it in ``molediff_seed``.
    model : ConformerSampler, str or None
        A sampler object, ``"etkdg"`` (RDKit baseline), a checkpoint path / model name, or
        ``None`` for the shipped default model.
    sampler, steps, device
        Passed to ``model.sample`` (``steps=None``: the model's default).
    relax : {None, "mmff", "xtb"}
        Relax each conformer with MMFF94 (RDKit) or GFN2-xTB (needs ``molediff[xtb]``).
    prune_rms : float, optional
        Drop conformers within this heavy-atom RMSD (Å) of an earlier one.
    on_invalid : {"resample", "flag", "drop"}
        Conformers with wrong stereo or invalid geometry are re-sampled (up to
        ``max_resample_rounds`` extra rounds, then dropped), kept with ``molediff_valid=0``,
        or dropped. Non-finite conformers are always discarded.
    fragments, max_atoms, allow_radicals
        Input policy, see :func:`molediff.chem.prepare.prepare_molecule`.

    Returns
    -------
    Chem.Mol
        Molecule with explicit hydrogens (input atom order, hydrogens appended) and conformers.

    Raises
    ------
    MolediffInputError
        A subclass naming the reason (invalid SMILES, unsupported element, no valid conformer, ...).
    """
    (res,) = list(generate_conformers_batch(
        [smiles_or_mol], num_confs, seed, model=model, sampler=sampler, steps=steps, relax=relax,
        prune_rms=prune_rms, device=device, on_invalid=on_invalid, max_resample_rounds=max_resample_rounds,
        batch_size=1, fragments=fragments, max_atoms=max_atoms, allow_radicals=allow_radicals))
    if res.error is not None:
        raise res.error
    for msg in res.warnings:
        warnings.warn(msg, stacklevel=2)
    return res.mol
