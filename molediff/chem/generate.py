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
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from rdkit import Chem

from molediff.chem import stereo as st
from molediff.chem.errors import (MolediffInputError, NonFiniteCoordinatesError, NoValidConformerError,
                                  UnsupportedElementError)
from molediff.chem.io_read import InputRecord, records_from_strings
from molediff.chem.prepare import prepare_molecule
from molediff.chem.sampler_protocol import ConformerSampler, EtkdgSampler
from molediff.chem.sampling_rounds import (SamplingJob, finish_job,
                                           run_sampling_rounds, single_atom_job)

__all__ = ["ConformerResult", "generate_conformers", "generate_conformers_batch", "resolve_model",
           "ON_INVALID", "OVERSIZE", "SINGLE_ATOM_MODEL", "UNSUPPORTED"]

ON_INVALID = ("resample", "flag", "drop")
#: what to do with a molecule larger than any the model was trained on (``model.max_atoms``)
OVERSIZE = ("model", "etkdg")
#: what to do with a molecule that has an element the model was not trained on
UNSUPPORTED = ("error", "etkdg")
_NO_CONFORMER = (NoValidConformerError, NonFiniteCoordinatesError)  # the model drew nothing usable


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


def generate_conformers_batch(
    inputs: Iterable["str | Chem.Mol | InputRecord"], num_confs: int = 10, seed: int | None = None, *,
    model: "ConformerSampler | str | None" = None, sampler: str | None = None, steps: int | None = None,
    relax: str | None = None, prune_rms: float | None = None, device: "str | torch.device | None" = None,
    on_invalid: str = "resample", max_resample_rounds: int = 3, batch_size: int = 64,
    fragments: str = "largest", max_atoms: int | None = None, allow_radicals: bool = False,
    oversize: str = "model", unsupported: str = "error",
) -> Iterator[ConformerResult]:
    """Generate conformers for many molecules, yielding one :class:`ConformerResult` per input, in order.

    Molecules are read lazily and packed ``batch_size`` at a time into one ``model.sample`` call;
    a bad input becomes a result with ``error`` set and never stops the batch.

    Parameters
    ----------
    inputs : iterable of str, Chem.Mol or InputRecord
        SMILES, molecules, or records from :mod:`molediff.chem.io_read`.
    num_confs, seed, model, sampler, steps, relax, prune_rms, device, on_invalid, max_resample_rounds, oversize,
    unsupported
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
    if oversize not in OVERSIZE:
        raise ValueError(f"oversize must be one of {OVERSIZE}, got {oversize!r}")
    if unsupported not in UNSUPPORTED:
        raise ValueError(f"unsupported must be one of {UNSUPPORTED}, got {unsupported!r}")
    for name, value in (("num_confs", num_confs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):  # not "model failed" per molecule
            raise TypeError(f"{name} must be an integer, got {value!r}")
    num_confs, batch_size = int(num_confs), int(batch_size)  # numpy integers failed inside RDKit
    if num_confs < 1 or batch_size < 1:
        raise ValueError("num_confs and batch_size must be >= 1")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if max_resample_rounds < 0:
        raise ValueError(f"max_resample_rounds must be >= 0, got {max_resample_rounds}")
    if relax not in (None, "mmff", "xtb"):
        raise ValueError(f"relax must be None, 'mmff' or 'xtb', got {relax!r}")
    if relax == "xtb":
        from molediff.chem.relax import require_xtb
        require_xtb()
    seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state: dict = {}
    for chunk in _chunks(records_from_strings(inputs), batch_size):
        yield from _process(chunk, state, model, num_confs, seed, sampler, steps, relax, prune_rms, device,
                            on_invalid, max_resample_rounds, fragments, max_atoms, allow_radicals, oversize,
                            unsupported)


def _chunks(records: Iterable[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    """Consecutive lists of ``size`` records (the last may be shorter), read lazily."""
    chunk: list[InputRecord] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _process(chunk, state, model, num_confs, seed, sampler, steps, relax, prune_rms, device,
             on_invalid, max_rounds, fragments, max_atoms, allow_radicals, oversize,
             unsupported) -> list[ConformerResult]:
    results, jobs, trivial, to_etkdg = [], [], [], []
    oversized: set[int] = set()  # results of molecules beyond the model's training size, sampled by it
    for rec in chunk:
        res = ConformerResult(rec.index, rec.line, rec.id, rec.smiles, error=rec.error)
        results.append(res)
        if res.error is not None:
            continue
        try:
            prep = prepare_molecule(rec.source, fragments=fragments, max_atoms=max_atoms,
                                    allow_radicals=allow_radicals)
            res.warnings.extend(prep.warnings)
            job = SamplingJob(res, prep, st.stereo_reference(prep.mol))
            if prep.mol.GetNumAtoms() == 1:
                trivial.append(job)
                continue
            if "model" not in state:  # lazily: an all-bad input never loads the model
                state["model"] = resolve_model(model, device)
            mdl = state["model"]
            try:
                mdl.check_supported(prep.mol)
            except UnsupportedElementError as err:
                if unsupported != "etkdg":
                    raise
                res.warnings.append(f"{err}; embedded with ETKDGv3 instead (unsupported='etkdg')")
                to_etkdg.append(job)
                continue
            smallest = int(getattr(mdl, "min_atoms", 1))
            if prep.mol.GetNumAtoms() < smallest:  # e.g. a diatomic: the network never saw one
                res.warnings.append(f"{prep.mol.GetNumAtoms()} atoms: smaller than any molecule the model {mdl.name} "
                                    f"was trained on ({smallest}); embedded with ETKDGv3 instead")
                to_etkdg.append(job)
                continue
            if prep.mol.GetNumAtoms() > mdl.max_atoms:
                larger = (f"{prep.mol.GetNumAtoms()} atoms: larger than any molecule the model {mdl.name} was "
                          f"trained on ({mdl.max_atoms})")
                if oversize == "etkdg":
                    res.warnings.append(f"{larger}; embedded with ETKDGv3 instead (oversize='etkdg')")
                    to_etkdg.append(job)
                    continue
                res.warnings.append(f"{larger}; expect lower quality (on drug-sized molecules ETKDG is more "
                                    "reliable: oversize='etkdg', README 'Molecules larger than QM9')")
                oversized.add(id(res))
            notes = getattr(mdl, "warnings_for", None)  # what a wrapper's recorded settings misstate for it
            if notes is not None:
                res.warnings.extend(notes(prep.mol))
            jobs.append(job)
        except MolediffInputError as err:
            res.error = err
    for res in results:
        if res.error is not None and res.error.item is None:
            res.error.with_item(_label(res))
    for job in trivial:
        single_atom_job(job, num_confs)
    groups = [(state.get("model"), sampler, steps, jobs, trivial)]  # (sampler, its options, jobs, single atoms)
    if to_etkdg:
        if "etkdg" not in state:
            state["etkdg"] = EtkdgSampler()
        groups.append((state["etkdg"], None, None, to_etkdg, []))
    for group_model, group_sampler, group_steps, sampled, single_atoms in groups:
        if sampled:
            run_sampling_rounds(sampled, group_model, num_confs, seed=seed,
                                sampler=group_sampler, steps=group_steps, device=device, on_invalid=on_invalid,
                                max_rounds=max_rounds, relax=relax)
        meta = _provenance(group_model, group_sampler, group_steps, seed, device)
        placed = {"molediff_model": SINGLE_ATOM_MODEL, "molediff_seed": seed}  # no sampler drew these
        for job in sampled + single_atoms:
            single = job.mol.GetNumAtoms() == 1
            finish_job(job, group_model, num_confs, placed if single else meta, relax, None if single else prune_rms)
            if job.result.error is not None and job.result.error.item is None:
                job.result.error.with_item(_label(job.result))
            if isinstance(job.result.error, _NO_CONFORMER) and id(job.result) in oversized:
                job.result.error.add_hint(f"it is larger than any molecule the model {group_model.name} was "
                                          "trained on: oversize='etkdg' (--oversize etkdg) embeds such molecules "
                                          "with ETKDGv3")
    return results


#: ``molediff_model`` of a single atom: placed at the origin, whatever model the run uses
SINGLE_ATOM_MODEL = "none (single atom at the origin)"


def _provenance(model: Any, sampler: str | None, steps: int | None, seed: int, device) -> dict:
    """The ``molediff_*`` properties recording which model and settings drew a molecule's conformers."""
    defaults = getattr(model, "config", None)
    meta = {"molediff_model": getattr(model, "name", "none"),
            "molediff_sampler": sampler or getattr(defaults, "default_sampler", "default"),
            "molediff_steps": steps or getattr(defaults, "default_steps", "default"), "molediff_seed": seed}
    if hasattr(model, "resolved_precision"):
        meta["molediff_precision"] = model.resolved_precision(device=device or "cpu")
    if hasattr(model, "start_label"):
        meta["molediff_start"] = model.start_label
    return meta


def _label(res: ConformerResult) -> str:
    where = f"line {res.line}" if res.line is not None else f"input {res.index + 1}"
    return where if res.id == where else f"{where} ({res.id})"


def generate_conformers(
    smiles_or_mol: "str | Chem.Mol", num_confs: int = 10, seed: int | None = None, *,
    model: "ConformerSampler | str | None" = None, sampler: str | None = None, steps: int | None = None,
    relax: str | None = None, prune_rms: float | None = None, device: "str | torch.device | None" = None,
    on_invalid: str = "resample", max_resample_rounds: int = 3, fragments: str = "largest",
    max_atoms: int | None = None, allow_radicals: bool = False, oversize: str = "model",
    unsupported: str = "error",
) -> Chem.Mol:
    """Generate 3D conformers of one molecule.

    Parameters
    ----------
    smiles_or_mol : str or Chem.Mol
        SMILES, or a molecule whose own stereochemistry is respected.
    num_confs : int
        Conformers wanted (fewer can come back after ``prune_rms`` or with ``on_invalid="drop"``).
    seed : int, optional
        Random seed; ``None`` draws one and records it in ``molediff_seed``. A molecule's conformers depend
        on the seed and the molecule (its atoms in input order), not on the rest of the input: in
        :func:`generate_conformers_batch` it gets the same conformers whatever its position, its batch-mates,
        ``batch_size`` or the number of workers (up to the last bits of batched arithmetic, which the
        stochastic sampler can amplify on rare molecules). Each conformer records the seed of the sampler call
        that drew it (``molediff_call_seed``) and its number in that call (``molediff_draw``):
        ``model.sample([mol], draw + 1, seed=call_seed)[0][draw]``, with the run's sampler options, is its
        raw draw again (before mirror repair and relaxation).
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
    oversize : {"model", "etkdg"}
        A molecule with more atoms than any the model was trained on (``model.max_atoms``; 29 for the
        shipped QM9 model) is sampled by the model with a warning (``"model"``), or embedded with ETKDGv3
        instead (``"etkdg"``, recorded as ``molediff_model=etkdg``): on drug-sized molecules ETKDG's
        conformers were more often valid and less strained (README, "Molecules larger than QM9").
        A molecule with fewer atoms than any in training (``model.min_atoms``; 3 for the shipped model, so
        diatomics such as N#N or [C-]#N) is always embedded with ETKDGv3, with a warning: the network is
        undefined there (it collapsed [C-]#N to a 0.2–0.7 Å bond and then to NaN).
    unsupported : {"error", "etkdg"}
        A molecule with an element the model was not trained on fails with
        :class:`~molediff.chem.errors.UnsupportedElementError` naming the element and the model (``"error"``),
        or is embedded with ETKDGv3 instead, with a warning that names them (``"etkdg"``, recorded as
        ``molediff_model=etkdg``). With ``oversize="etkdg"`` too, every input the model was not trained for
        goes to ETKDG.

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
        batch_size=1, fragments=fragments, max_atoms=max_atoms, allow_radicals=allow_radicals, oversize=oversize,
        unsupported=unsupported))
    if res.error is not None:
        raise res.error
    for msg in res.warnings:
        warnings.warn(msg, stacklevel=2)
    return res.mol
