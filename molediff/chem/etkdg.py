"""The ETKDG baseline (RDKit ETKDGv3 distance geometry, optional MMFF94 relaxation).

:func:`etkdg_conformers` is the reference every conformer benchmark of molediff compares
against; :func:`mmff_relax` is also what the product uses for ``--relax mmff``. Neither raises
when embedding or optimisation partly fails: failures are counted and returned, so a batch of
molecules (strained QM9 cages sometimes embed nothing) goes on with the rest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molediff.chem.errors import RelaxationError

__all__ = ["EmbedResult", "etkdg_conformers", "mmff_relax"]


@dataclass
class EmbedResult:
    """Conformers of one molecule.

    ``mol`` has explicit hydrogens and ``len(conf_ids)`` conformers; ``num_failed`` =
    ``num_requested - len(conf_ids)``; ``mmff_not_converged`` counts optimisations that hit the
    iteration limit (they are kept); ``energies`` are MMFF94 energies (kcal/mol) when relaxed.
    """

    mol: Chem.Mol
    conf_ids: list[int]
    num_requested: int
    seconds: float
    mmff_not_converged: int = 0
    energies: list[float] = field(default_factory=list)

    @property
    def num_failed(self) -> int:
        return self.num_requested - len(self.conf_ids)


def _with_hs(mol: Chem.Mol) -> Chem.Mol:
    has_implicit = any(a.GetTotalNumHs(includeNeighbors=False) for a in mol.GetAtoms())
    return Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0) if has_implicit else Chem.Mol(mol)


def etkdg_conformers(mol: Chem.Mol, num_confs: int, seed: int = 0, *, mmff: bool = False,
                     num_threads: int = 1, prune_rms: float = -1.0,
                     max_iterations: int = 0, mmff_max_iters: int = 2000) -> EmbedResult:
    """Embed ``num_confs`` ETKDGv3 conformers (stereo of the input is enforced).

    Parameters
    ----------
    mol : rdkit.Chem.Mol; hydrogens are added (``Chem.AddHs``) when implicit, existing
        conformers are discarded in the returned copy, the input is not modified.
    num_confs : conformers requested
    seed : random seed >= 0 (deterministic for a fixed ``num_threads``; passed to RDKit as seed + 1)
    mmff : optimise every conformer with MMFF94 afterwards (see :func:`mmff_relax`)
    num_threads : RDKit threads (0 = all cores)
    prune_rms : RDKit's heavy-atom RMSD pruning threshold (-1: none, the benchmark default)
    max_iterations : ETKDG's per-conformer attempt limit (0: RDKit's default)

    Returns
    -------
    EmbedResult (``num_failed`` > 0 instead of an exception when some embeddings fail)
    """
    if num_confs < 0:
        raise ValueError(f"num_confs must be >= 0, got {num_confs}")
    t0 = time.perf_counter()
    work = _with_hs(mol)
    work.RemoveAllConformers()
    params = rdDistGeom.ETKDGv3()
    # RDKit seeds conformer c with randomSeed * (c + 1): seed 0 would give K identical conformers.
    params.randomSeed = int(seed) + 1
    params.numThreads = int(num_threads)
    params.pruneRmsThresh = float(prune_rms)
    params.enforceChirality = True
    if max_iterations:
        params.maxIterations = int(max_iterations)
    ids = list(rdDistGeom.EmbedMultipleConfs(work, int(num_confs), params)) if num_confs else []
    result = EmbedResult(work, ids, int(num_confs), 0.0)
    if mmff and ids:
        outcome = mmff_relax(work, ids, max_iters=mmff_max_iters, num_threads=num_threads)
        result.mmff_not_converged = sum(1 for flag, _ in outcome if flag != 0)
        result.energies = [energy for _, energy in outcome]
    result.seconds = time.perf_counter() - t0
    return result


def mmff_relax(mol: Chem.Mol, conf_ids: list[int] | None = None, *, max_iters: int = 2000,
               num_threads: int = 1, variant: str = "MMFF94") -> list[tuple[int, float]]:
    """Optimise conformers of ``mol`` in place with MMFF94 (or MMFF94s).

    Parameters
    ----------
    mol : rdkit.Chem.Mol with explicit hydrogens and conformers
    conf_ids : conformers to optimise (default: all); others are left untouched
    max_iters : optimiser iterations per conformer

    Returns
    -------
    list of (flag, energy) per optimised conformer, in ``conf_ids`` order; flag 0 = converged,
    1 = iteration limit reached (the conformer is still moved towards the minimum).

    Raises
    ------
    RelaxationError
        MMFF94 has no parameters for this molecule (nothing is modified then).
    """
    if not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        raise RelaxationError(f"no {variant} parameters for this molecule",
                              item=Chem.MolToSmiles(Chem.RemoveHs(mol)))
    all_ids = [c.GetId() for c in mol.GetConformers()]
    wanted = all_ids if conf_ids is None else list(conf_ids)
    if not wanted:
        return []
    if set(wanted) == set(all_ids):
        out = rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
            mol, numThreads=num_threads, maxIters=max_iters, mmffVariant=variant)
        by_id = dict(zip(all_ids, out))
        return [(int(by_id[c][0]), float(by_id[c][1])) for c in wanted]
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    results = []
    for cid in wanted:
        ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props, confId=cid)
        flag = ff.Minimize(maxIts=max_iters)
        results.append((int(flag), float(ff.CalcEnergy())))
    return results
