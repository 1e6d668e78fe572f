"""Force-field relaxation of generated conformers: MMFF94 (RDKit) or GFN2-xTB (tblite, optional).

Relaxation runs after the stereo and validity checks; the checks are repeated on the relaxed
geometry and the conformer's ``molediff_*`` flags updated, so a relaxation that breaks a
conformer is visible rather than silent. Energies are recorded per conformer
(``molediff_energy_kcal`` for MMFF94, ``molediff_energy_ev`` for GFN2-xTB).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdForceFieldHelpers

from molediff.chem.errors import MissingDependencyError, RelaxationError

__all__ = ["relax_conformers", "mmff_relaxed_coordinates", "require_xtb", "RELAX_METHODS"]

RELAX_METHODS = ("mmff", "xtb")


def require_xtb():
    """Return tblite's ASE calculator class, or raise :class:`MissingDependencyError` telling how to get it."""
    try:
        from tblite.ase import TBLite
    except ImportError as err:
        raise MissingDependencyError(
            "GFN2-xTB relaxation needs the optional 'tblite' package: pip install molediff[xtb]"
        ) from err
    return TBLite


def relax_conformers(mol: Chem.Mol, method: str = "mmff", *, reference=None, max_iters: int = 500,
                     fmax: float = 0.05, checker=None) -> list[float]:
    """Relax every conformer of ``mol`` in place and re-check it.

    Parameters
    ----------
    mol : Chem.Mol
        Molecule with explicit hydrogens and conformers.
    method : {"mmff", "xtb"}
        MMFF94 through RDKit, or GFN2-xTB through tblite's ASE calculator (BFGS).
    reference : molediff.chem.stereo.StereoReference, optional
        Stereo to re-check after relaxation (default: the molecule's own tags).
    max_iters : int
        Optimiser iterations per conformer.
    fmax : float
        Force threshold in eV/Å for the xTB optimisation.
    checker : molediff.chem.validity.ValidityChecker, optional
        A checker of ``mol`` to reuse (built once here otherwise).

    Returns
    -------
    list of float
        Final energy per conformer (kcal/mol for MMFF94, eV for xTB); NaN for a conformer whose relaxation
        failed (e.g. xTB's SCF did not converge) or diverged: it keeps its coordinates and is marked
        ``molediff_relaxed=failed``, and the other conformers are still relaxed.

    Raises
    ------
    RelaxationError
        MMFF94 has no parameters for the molecule.
    MissingDependencyError
        ``method="xtb"`` without tblite installed.
    """
    from molediff.chem import stereo as st
    from molediff.chem.sampling_rounds import geometry_check
    from molediff.chem.validity import ValidityChecker

    if method not in RELAX_METHODS:
        raise ValueError(f"method must be one of {RELAX_METHODS}, got {method!r}")
    ref = reference if reference is not None else st.stereo_reference(mol)
    checker = checker or ValidityChecker(mol)
    energies = []
    step = _mmff(mol, max_iters) if method == "mmff" else _xtb(mol, max_iters, fmax)
    for conf in mol.GetConformers():
        before = conf.GetPositions()
        try:
            energy, converged = step(conf.GetId())
        except RelaxationError:  # this conformer only (e.g. xTB's SCF did not converge): the others go on
            energy, converged = float("nan"), False
        after = conf.GetPositions()
        if not np.all(np.isfinite(after)) or not np.isfinite(energy):
            conf.SetPositions(before)  # never keep a diverged relaxation
            conf.SetProp("molediff_relaxed", "failed")
            energies.append(float("nan"))
            continue
        stereo_ok = st.check_coords(ref, after)
        geo_ok, reason = geometry_check(mol, after, checker)
        conf.SetProp("molediff_relaxed", method)
        conf.SetProp("molediff_energy_kcal" if method == "mmff" else "molediff_energy_ev", f"{energy:.6f}")
        conf.SetProp("molediff_relax_converged", str(int(converged)))  # 0: max_iters ran out, not a minimum
        conf.SetProp("molediff_stereo_ok", str(int(stereo_ok)))
        conf.SetProp("molediff_geometry_ok", str(int(geo_ok)))
        conf.SetProp("molediff_valid", str(int(stereo_ok and geo_ok)))
        if reason:
            conf.SetProp("molediff_geometry_reason", reason)
        energies.append(float(energy))
    return energies


def mmff_relaxed_coordinates(template: Chem.Mol, coords: np.ndarray, *, max_iters: int = 2000,
                             num_threads: int = 1) -> np.ndarray:
    """Each conformer of ``coords`` minimised with MMFF94 (no checks, no properties: the array form).

    Parameters
    ----------
    template : Chem.Mol
        The molecule with explicit hydrogens, in the atom order of ``coords``.
    coords : numpy.ndarray
        ``[K, N, 3]`` positions in Å; may hold non-finite conformers.
    max_iters, num_threads
        Optimiser iterations per conformer; RDKit threads.

    Returns
    -------
    numpy.ndarray
        ``[K, N, 3]`` float64, a new array: the minimised conformers; non-finite conformers and
        minimisations that diverged keep their input coordinates.

    Raises
    ------
    RelaxationError
        MMFF94 has no parameters for the molecule (nothing is relaxed).
    """
    from molediff.chem.convert import with_conformers
    from molediff.chem.etkdg import mmff_relax

    out = np.array(coords, dtype=np.float64, copy=True)
    finite = np.isfinite(out).all(axis=(1, 2)) if len(out) else np.zeros(0, bool)
    if not finite.any():
        return out
    mol = with_conformers(template, out[finite])
    with rdBase.BlockLogs():
        mmff_relax(mol, max_iters=max_iters, num_threads=num_threads)
    relaxed = np.stack([c.GetPositions() for c in mol.GetConformers()])
    keep = np.isfinite(relaxed).all(axis=(1, 2))
    out[np.flatnonzero(finite)[keep]] = relaxed[keep]
    return out


def _mmff(mol: Chem.Mol, max_iters: int):
    with rdBase.BlockLogs():
        props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise RelaxationError("MMFF94 has no parameters for this molecule (unusual element or valence)")

    def step(cid: int) -> tuple[float, bool]:
        with rdBase.BlockLogs():
            ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props, confId=cid)
            if ff is None:
                raise RelaxationError("MMFF94 force field could not be set up")
            more_needed = ff.Minimize(maxIts=max_iters)  # 0 once converged
            return float(ff.CalcEnergy()), more_needed == 0
    return step


def _xtb(mol: Chem.Mol, max_iters: int, fmax: float):
    calc_cls = require_xtb()
    from ase.optimize import BFGS

    from molediff.chem.convert import to_ase_atoms

    charge = Chem.GetFormalCharge(mol)
    unpaired = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())

    def step(cid: int) -> tuple[float, bool]:
        atoms = to_ase_atoms(mol, cid, info=False)
        atoms.calc = calc_cls(method="GFN2-xTB", charge=charge, multiplicity=unpaired + 1, verbosity=0)
        try:
            converged = BFGS(atoms, logfile=None).run(fmax=fmax, steps=max_iters)
            energy = float(atoms.get_potential_energy())
        except Exception as err:  # tblite raises on SCF non-convergence
            raise RelaxationError(f"GFN2-xTB failed: {err}") from err
        mol.GetConformer(cid).SetPositions(atoms.get_positions())
        return energy, bool(converged)
    return step
