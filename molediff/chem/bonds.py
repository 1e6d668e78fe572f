"""Connectivity perception from 3D and safe mapping of a geometry onto a molecular graph.

Datasets such as QM9 give a SMILES string and an XYZ block whose atom order differs from the
order RDKit assigns to ``AddHs(MolFromSmiles(smiles))``. :func:`map_geometry_to_mol` recovers the
permutation by graph isomorphism between the SMILES graph and the connectivity perceived from
the coordinates (element-preserving, bond-order-agnostic), first with RDKit's covalent-radius
rule and, when that graph does not match (strained cages get spurious bonds), with extended
Hückel bond orders. The result is then verified independently, so a wrong assignment raises
:class:`GeometryMismatchError` instead of silently producing a scrambled conformer.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds

__all__ = [
    "GeometryMismatchError",
    "mol_from_xyz",
    "covalent_radii",
    "check_bond_lengths",
    "map_geometry_to_mol",
    "graph_template",
    "MAX_BOND_FACTOR",
]

#: A bonded pair may be at most this factor times the sum of covalent radii apart.
MAX_BOND_FACTOR = 1.35
#: ...and at least this factor times the sum (catches collapsed / swapped atoms).
MIN_BOND_FACTOR = 0.6


class GeometryMismatchError(ValueError):
    """Coordinates cannot be mapped onto a molecular graph.

    ``reason`` is a short machine-readable tag (``atom_count``, ``composition``,
    ``connectivity``, ``bond_length``, ``nonfinite``) used for drop statistics.
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def covalent_radii(atomic_numbers: np.ndarray) -> np.ndarray:
    """Covalent radii in Å from RDKit's periodic table. Shapes: [N] -> [N]."""
    table = Chem.GetPeriodicTable()
    return np.array([table.GetRcovalent(int(z)) for z in atomic_numbers], dtype=np.float64)


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - non-POSIX libc
        pass


@contextmanager
def _quiet_c_output() -> Iterator[None]:
    """Temporarily point file descriptors 1 and 2 at /dev/null (YAeHMOP prints from C).

    Used only around one extended Hückel call; Python's own streams are flushed first.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):  # no real descriptors (e.g. some notebook front-ends)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()  # flush C buffers while the descriptors still point at /dev/null
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)
        os.close(devnull)


def mol_from_xyz(symbols: Sequence[str], pos: np.ndarray, *, charge: int = 0,
                 use_hueckel: bool = False) -> Chem.Mol:
    """Build an RDKit molecule with single bonds for the connectivity perceived from 3D.

    Parameters
    ----------
    symbols : sequence of str, length N
    pos : [N, 3] array in Å
    charge : total molecular charge (used by the extended Hückel perception)
    use_hueckel : use extended Hückel instead of the covalent-radius rule

    Returns
    -------
    rdkit.Chem.Mol (not sanitised) with one conformer.
    """
    pos = np.asarray(pos, dtype=np.float64)
    rw = Chem.RWMol()
    conf = Chem.Conformer(len(symbols))
    for i, s in enumerate(symbols):
        atom = Chem.Atom(s)
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
        conf.SetAtomPosition(i, pos[i].tolist())
    rw.AddConformer(conf, assignId=True)
    mol = rw.GetMol()
    if use_hueckel:
        with _quiet_c_output():  # YAeHMOP prints distance warnings from C
            rdDetermineBonds.DetermineConnectivity(mol, useHueckel=True, charge=charge)
    else:
        rdDetermineBonds.DetermineConnectivity(mol)
    return mol


def graph_template(mol: Chem.Mol) -> Chem.Mol:
    """Copy of ``mol`` reduced to elements + topology (all bonds single, no charges)."""
    rw = Chem.RWMol(mol)
    rw.RemoveAllConformers()
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(True)
        atom.SetNumRadicalElectrons(0)
        atom.SetIsotope(0)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for bond in rw.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
        bond.SetStereo(Chem.BondStereo.STEREONONE)
    out = rw.GetMol()
    out.UpdatePropertyCache(strict=False)
    return out


def _isomorphism(template: Chem.Mol, target: Chem.Mol) -> tuple[int, ...] | None:
    """Return m with template atom i -> target atom m[i], or None if not isomorphic."""
    if template.GetNumBonds() != target.GetNumBonds():
        return None
    target.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(target)
    Chem.FastFindRings(template)
    match = target.GetSubstructMatch(template, useChirality=False)
    if len(match) != template.GetNumAtoms():
        return None
    return tuple(match)


def check_bond_lengths(mol: Chem.Mol, pos: np.ndarray, *, max_factor: float = MAX_BOND_FACTOR,
                       min_factor: float = MIN_BOND_FACTOR) -> list[tuple[int, int, float]]:
    """Bonds of ``mol`` whose length in ``pos`` is outside [min, max] × (r_cov,a + r_cov,b).

    Shapes: pos [N, 3]. Returns a list of (atom a, atom b, distance) offenders (empty if fine).
    """
    if mol.GetNumBonds() == 0:
        return []
    ij = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()])
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    r = covalent_radii(z)
    ref = r[ij[:, 0]] + r[ij[:, 1]]
    d = np.linalg.norm(pos[ij[:, 0]] - pos[ij[:, 1]], axis=1)
    bad = (d > max_factor * ref) | (d < min_factor * ref)
    return [(int(a), int(b), float(x)) for (a, b), x in zip(ij[bad], d[bad])]


def map_geometry_to_mol(mol: Chem.Mol, symbols: Sequence[str], pos: np.ndarray,
                        name: str = "") -> tuple[np.ndarray, bool]:
    """Reorder XYZ coordinates into the atom order of ``mol`` (which has explicit Hs).

    Parameters
    ----------
    mol : rdkit.Chem.Mol with explicit hydrogens (N atoms)
    symbols : element symbols of the XYZ atoms, length N
    pos : [N, 3] XYZ coordinates in Å
    name : identifier used in error messages

    Returns
    -------
    pos_mol : [N, 3] float64, row i is the position of ``mol`` atom i
    used_hueckel : whether the extended Hückel fallback was needed

    Raises
    ------
    GeometryMismatchError
        Atom counts or compositions differ, the graphs are not isomorphic under either
        perception, or a bonded pair has an implausible length after mapping.
    """
    pos = np.asarray(pos, dtype=np.float64)
    tag = f"molecule {name!r}" if name else "molecule"
    n = mol.GetNumAtoms()
    if len(symbols) != n or pos.shape != (n, 3):
        raise GeometryMismatchError(
            "atom_count", f"{tag}: graph has {n} atoms, geometry has {len(symbols)} "
            f"(positions shape {pos.shape}); were hydrogens added?")
    if not np.isfinite(pos).all():
        raise GeometryMismatchError("nonfinite", f"{tag}: non-finite coordinates")
    mol_syms = [a.GetSymbol() for a in mol.GetAtoms()]
    if sorted(mol_syms) != sorted(symbols):
        raise GeometryMismatchError("composition", f"{tag}: element composition differs")
    template = graph_template(mol)
    charge = Chem.GetFormalCharge(mol)
    match, used_hueckel = None, False
    for hueckel in (False, True):
        try:
            xyz = mol_from_xyz(symbols, pos, charge=charge, use_hueckel=hueckel)
        except Exception:  # Hückel can fail on odd-electron / exotic inputs
            continue
        match = _isomorphism(template, xyz)
        if match is not None:
            used_hueckel = hueckel
            break
    if match is None:
        raise GeometryMismatchError(
            "connectivity", f"{tag}: connectivity perceived from 3D (covalent radii and "
            "extended Hückel) is not isomorphic to the molecular graph")
    perm = np.asarray(match)
    out = pos[perm]
    # Independent verification: elements and bond lengths in the new order.
    if any(mol_syms[i] != symbols[j] for i, j in enumerate(perm)):
        raise GeometryMismatchError("composition", f"{tag}: mapping changed elements")
    bad = check_bond_lengths(mol, out)
    if bad:
        a, b, d = bad[0]
        raise GeometryMismatchError(
            "bond_length", f"{tag}: {len(bad)} bonds with implausible length after mapping, "
            f"e.g. atoms {a}-{b} at {d:.3f} Å")
    return out, used_hueckel
