"""The G2 test set (162 small molecules with MP2 geometries) from ``ase.collections.g2``.

Each molecule becomes an RDKit ``Mol`` with explicit hydrogens and one conformer; bonds and bond
orders are perceived from 3D with ``rdDetermineBonds.DetermineBonds`` (total charge 0). Entries
that cannot be perceived, or come out as radicals (G2 contains several open-shell species such
as CH3 or H2COH), are skipped and reported with the reason. Meant for fast tests of geometry
code on real, non-generated structures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds

__all__ = ["G2Set", "load_g2", "atoms_to_mol"]


@dataclass
class G2Set:
    """Molecules that were perceived (``mols[name]``) and those skipped (``skipped[name]``)."""

    mols: dict[str, Chem.Mol] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def atoms_to_mol(symbols, positions, *, charge: int = 0, name: str = "") -> Chem.Mol:
    """RDKit molecule with bonds perceived from 3D. Shapes: positions [N, 3] in Å.

    Raises ``ValueError`` naming the molecule when perception fails or leaves radicals.
    """
    pos = np.asarray(positions, dtype=np.float64)
    block = f"{len(symbols)}\n{name}\n" + "".join(
        f"{s} {x:.8f} {y:.8f} {z:.8f}\n" for s, (x, y, z) in zip(symbols, pos))
    with rdBase.BlockLogs():
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            raise ValueError(f"{name}: RDKit cannot read the geometry")
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=charge)
            Chem.SanitizeMol(mol)
        except Exception as err:  # RDKit raises ValueError / RuntimeError subclasses
            raise ValueError(f"{name}: bond perception failed ({err})") from err
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        raise ValueError(f"{name}: open-shell (radical) species")
    if name:
        mol.SetProp("_Name", name)
    return mol


def load_g2(names=None) -> G2Set:
    """Load (a subset of) G2 as RDKit molecules; see :class:`G2Set`."""
    from ase.collections import g2

    out = G2Set()
    for name in (g2.names if names is None else names):
        atoms = g2[name]
        try:
            out.mols[name] = atoms_to_mol(atoms.get_chemical_symbols(), atoms.get_positions(),
                                          name=name)
        except ValueError as err:
            out.skipped[name] = str(err)
    return out
