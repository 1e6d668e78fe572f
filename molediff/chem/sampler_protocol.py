"""The contract between the conformer product and any conformer model, plus an ETKDG baseline.

:class:`ConformerSampler` is what :func:`molediff.chem.generate.generate_conformers` drives: the
shipped diffusion model (``molediff.chem.model.load_conformer_model``) implements it, and so does
:class:`EtkdgSampler`, RDKit's ETKDGv3 wrapped in the same interface (``--model etkdg`` on the
command line): a fast, dependable fallback and the baseline every benchmark compares against.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molediff.chem.errors import UnsupportedElementError

__all__ = ["ConformerSampler", "EtkdgSampler", "ModelWrapper", "check_elements", "notes_without_mmff94"]


@runtime_checkable
class ConformerSampler(Protocol):
    """A model that samples 3D conformers for molecules with explicit hydrogens.

    Attributes
    ----------
    name : str
        Model name recorded in every output record (e.g. ``"molediff-qm9-egnn"``).
    elements : tuple of str
        Element symbols the model was trained on.
    max_atoms : int
        Largest molecule (hydrogens included) seen in training; larger inputs get a warning.
    min_atoms : int, optional
        Smallest molecule seen in training (default 1 when absent); smaller inputs (more than one atom) are
        embedded with ETKDGv3 by :func:`~molediff.chem.generate.generate_conformers_batch`.
    """

    name: str
    elements: tuple[str, ...]
    max_atoms: int

    def check_supported(self, mol: Chem.Mol) -> None:
        """Raise :class:`~molediff.chem.errors.UnsupportedElementError` naming element and model."""
        ...

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int | None = None,
               device: str | torch.device | None = None) -> list[np.ndarray]:
        """Sample ``num_confs`` conformers of every molecule in one call.

        Parameters
        ----------
        mols : sequence of Chem.Mol
            Molecules with explicit hydrogens.
        num_confs : int
            Conformers per molecule.
        sampler, steps, seed, device
            Sampling algorithm, number of steps (``None``: the model's default), random seed
            and torch device.

        Returns
        -------
        list of numpy.ndarray
            One float64 array ``[num_confs, N_i, 3]`` in Å per molecule, RDKit atom order. May
            contain NaN / inf where the sampler diverged; the caller checks.
        """
        ...


class ModelWrapper:
    """Base of samplers that wrap a conformer model and pass its description through.

    ``name``, ``elements``, ``max_atoms``, ``min_atoms``, ``config``, :meth:`resolved_precision` and
    :meth:`check_supported` are the wrapped ``model``'s; subclasses add ``sample`` and override
    what they change (e.g. the name).
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.model.elements)

    @property
    def max_atoms(self) -> int:
        return int(self.model.max_atoms)

    @property
    def min_atoms(self) -> int:
        return int(getattr(self.model, "min_atoms", 1))

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def resolved_precision(self) -> Callable[..., str]:
        """The wrapped model's ``resolved_precision(precision=None, device="cpu")``
        (``ConformerModel.resolved_precision``); no such attribute when it has none (ETKDG)."""
        return self.model.resolved_precision

    def check_supported(self, mol: Chem.Mol) -> None:
        """The wrapped model's elements."""
        self.model.check_supported(mol)


def check_elements(mol: Chem.Mol, elements: Sequence[str], model: str) -> None:
    """Raise :class:`UnsupportedElementError` for the first atom whose element is not in ``elements``."""
    allowed = set(elements)
    for atom in mol.GetAtoms():
        if atom.GetSymbol() not in allowed:
            raise UnsupportedElementError(atom.GetSymbol(), atom.GetIdx(), tuple(elements), model=model)


class EtkdgSampler:
    """RDKit ETKDGv3 distance-geometry embedding behind the :class:`ConformerSampler` interface.

    Parameters
    ----------
    max_attempts_factor : int
        Embedding attempts per conformer before RDKit gives up; failed conformers come back
        as NaN so the caller re-samples them like any diverged model output.
    num_threads : int
        RDKit threads embedding the conformers of a molecule (0: all cores; results are
        reproducible for a fixed seed and thread count).

    Notes
    -----
    ``sampler`` and ``steps`` are accepted and ignored, ``device`` is ignored (CPU only).
    Stereochemistry specified on the input is enforced by ETKDG itself.
    """

    name = "etkdg"
    elements: tuple[str, ...] = tuple(
        Chem.GetPeriodicTable().GetElementSymbol(z) for z in range(1, 87)
    )
    max_atoms = 1000

    def __init__(self, max_attempts_factor: int = 10, num_threads: int = 1) -> None:
        self.max_attempts_factor = max_attempts_factor
        self.num_threads = num_threads

    def check_supported(self, mol: Chem.Mol) -> None:
        """ETKDG embeds any element up to radon."""
        check_elements(mol, self.elements, self.name)

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int | None = None,
               device: str | torch.device | None = None) -> list[np.ndarray]:
        """Embed ``num_confs`` ETKDGv3 conformers per molecule (NaN where embedding failed)."""
        rng = np.random.default_rng(seed)
        out = []
        for mol in mols:
            work = Chem.Mol(mol)
            work.RemoveAllConformers()
            params = rdDistGeom.ETKDGv3()
            params.randomSeed = int(rng.integers(0, 2**31 - 1))
            params.maxIterations = self.max_attempts_factor * work.GetNumAtoms()
            params.enforceChirality = True
            params.numThreads = int(self.num_threads)
            ids = list(rdDistGeom.EmbedMultipleConfs(work, num_confs, params))
            coords = np.full((num_confs, work.GetNumAtoms(), 3), np.nan)
            for k, cid in enumerate(ids[:num_confs]):
                coords[k] = work.GetConformer(cid).GetPositions()
            out.append(coords)
        return out


def notes_without_mmff94(base: Any, mol: Chem.Mol, note: str) -> list[str]:
    """A wrapper's ``warnings_for``: the wrapped sampler's notes for ``mol``, then ``note`` if MMFF94 has no
    parameters for it (the wrappers that rank or relax with MMFF94 cannot do what their label says)."""
    from rdkit import rdBase
    from rdkit.Chem import rdForceFieldHelpers

    wrapped = getattr(base, "warnings_for", None)
    notes = list(wrapped(mol)) if wrapped is not None else []
    with rdBase.BlockLogs():
        if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
            return notes
    return notes + [note]
