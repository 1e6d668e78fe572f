"""Conformers to and from other forms: coordinate arrays, ASE ``Atoms`` and PyTorch Geometric ``Data``."""

from __future__ import annotations

import numpy as np
import torch
from rdkit import Chem

__all__ = ["with_conformers", "to_ase_atoms", "to_ase_atoms_list", "to_pyg_data"]

_BOND_ORDER = {Chem.BondType.SINGLE: 1.0, Chem.BondType.DOUBLE: 2.0, Chem.BondType.TRIPLE: 3.0,
               Chem.BondType.AROMATIC: 1.5}


def with_conformers(template: Chem.Mol, coords) -> Chem.Mol:
    """A copy of ``template`` whose conformers are ``coords`` (its own conformers are dropped).

    Parameters
    ----------
    template : Chem.Mol
        The molecule (atom order of ``coords``).
    coords : sequence of numpy.ndarray
        ``[K, N, 3]`` positions in Å (or ``K`` arrays ``[N, 3]``); conformer ids 0 .. K-1.

    Raises
    ------
    ValueError
        A conformer whose positions are not ``[N, 3]`` (RDKit would take ``[N, 2]`` as z = 0).
    """
    mol = Chem.Mol(template)
    mol.RemoveAllConformers()
    shape = (mol.GetNumAtoms(), 3)
    for k, xyz in enumerate(coords):
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.shape != shape:
            raise ValueError(f"conformer {k}: positions have shape {xyz.shape}, expected {shape} "
                             "(coords must be [K, N, 3])")
        conf = Chem.Conformer(mol.GetNumAtoms())
        conf.SetPositions(xyz)
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    return mol


def _positions(mol: Chem.Mol, conf_id: int) -> np.ndarray:
    if mol.GetNumConformers() == 0:
        raise ValueError("molecule has no conformer")
    pos = mol.GetConformer(conf_id).GetPositions()
    if not np.all(np.isfinite(pos)):
        raise ValueError("conformer has non-finite coordinates")
    return pos


def _check_explicit_hydrogens(mol: Chem.Mol) -> None:
    """Raise ValueError if any atom carries implicit (position-less) hydrogens."""
    probe = Chem.Mol(mol)  # the property cache is updated on a copy: the caller's molecule is left as it is
    probe.UpdatePropertyCache(strict=False)
    implicit = sum(a.GetNumImplicitHs() + a.GetNumExplicitHs() for a in probe.GetAtoms())
    if implicit:
        raise ValueError(f"molecule has {implicit} implicit hydrogen(s) without coordinates; "
                         "use Chem.AddHs(mol, addCoords=True) first")


def to_ase_atoms(mol: Chem.Mol, conf_id: int = -1, *, info: bool = True):
    """One conformer as :class:`ase.Atoms`.

    Parameters
    ----------
    mol : Chem.Mol
        Molecule with conformers (hydrogens should be explicit).
    conf_id : int
        Conformer id (``-1``: the first).
    info : bool
        Copy the molecule's and the conformer's properties into ``atoms.info`` (plus ``name``: the
        title, ``charge``: the total formal charge), so extended XYZ keeps them; text properties stay
        strings (``molediff_*`` numbers are numbers).

    Raises
    ------
    ValueError
        No conformer, non-finite coordinates, or implicit hydrogens (they have no positions: the
        ``Atoms`` would be another species; add them with ``Chem.AddHs(mol, addCoords=True)``).

    Returns
    -------
    ase.Atoms
        Positions in Å; ``atoms.info["charge"]`` is the total formal charge; an isotope-labelled molecule
        gets the isotopes' masses (``atoms.get_masses()``, a ``masses`` column in extended XYZ).
    """
    from ase import Atoms

    pos = _positions(mol, conf_id)
    _check_explicit_hydrogens(mol)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos)
    atoms.set_initial_charges([a.GetFormalCharge() for a in mol.GetAtoms()])
    if any(a.GetIsotope() for a in mol.GetAtoms()):  # [2H], [13C]: their masses (ASE's defaults are the elements')
        atoms.set_masses([a.GetMass() for a in mol.GetAtoms()])
    if info:
        meta = {}
        for holder in (mol, mol.GetConformer(conf_id)):  # a user's text stays text ("000123" became 123)
            converted = holder.GetPropsAsDict(includePrivate=False)
            meta.update({k: converted[k] if k.startswith("molediff_") else v
                         for k, v in holder.GetPropsAsDict(includePrivate=False, autoConvertStrings=False).items()})
        meta = {k: (v if isinstance(v, (int, float)) else str(v).replace("\n", " ")) for k, v in meta.items()}
        if mol.HasProp("_Name"):
            meta["name"] = mol.GetProp("_Name").replace("\n", " ")
        meta["charge"] = Chem.GetFormalCharge(mol)
        atoms.info.update(meta)
    return atoms


def to_ase_atoms_list(mol: Chem.Mol) -> list:
    """Every conformer of ``mol`` as :class:`ase.Atoms` (see :func:`to_ase_atoms`)."""
    return [to_ase_atoms(mol, c.GetId()) for c in mol.GetConformers()]


def to_pyg_data(mol: Chem.Mol, conf_id: int = -1):
    """One conformer as a :class:`torch_geometric.data.Data` graph.

    Returns
    -------
    torch_geometric.data.Data
        ``z`` ``[N]`` atomic numbers (long), ``pos`` ``[N, 3]`` (float32, Å), ``edge_index``
        ``[2, 2B]`` both directions of every bond, ``edge_attr`` ``[2B, 1]`` bond order
        (aromatic 1.5), ``formal_charge`` ``[N]`` and ``smiles``.
    """
    from torch_geometric.data import Data

    pos = torch.as_tensor(_positions(mol, conf_id), dtype=torch.float32)
    z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.long)
    src, dst, order = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        o = _BOND_ORDER.get(b.GetBondType(), 1.0)
        src += [i, j]
        dst += [j, i]
        order += [o, o]
    return Data(z=z, pos=pos, edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(order, dtype=torch.float32).reshape(-1, 1),
                formal_charge=torch.tensor([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=torch.long),
                smiles=Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False)))
