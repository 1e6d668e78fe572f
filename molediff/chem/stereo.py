"""Stereochemistry of generated conformers: perceive from 3D, compare, repair mirror images.

A diffusion model with an E(3)-invariant prior produces mirror images as easily as the
right enantiomer, and may twist double bonds. This module makes stereo *checked*, not hoped:

1. The reference's **specified** stereo elements (tetrahedral centres with a tag, double
   bonds with E/Z or cis/trans) are collected after RDKit's perception cleanup.
2. For a conformer, RDKit perceives every element from the coordinates
   (``AssignStereochemistryFrom3D``; explicit-H geometry counts), elements that the
   reference leaves unspecified are cleared, and the canonical isomeric SMILES of the
   result is compared with the reference's. Comparing canonical SMILES (not raw parity
   tags) is exact also for ring cis/trans and pseudo-asymmetric centres, where inverting all
   tags can give back the same stereoisomer.
3. A wrong conformer whose reflection ``x -> -x`` is right is a mirror image: it is reflected
   (reflection inverts every tetrahedral centre and leaves double bonds alone). Anything
   else is reported wrong and must be re-sampled or flagged by the caller.

Unspecified stereo elements are not enforced: each conformer keeps whatever the model made,
and :func:`perceived_smiles` tells which stereoisomer that is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem, rdBase

__all__ = [
    "StereoReference",
    "StereoReport",
    "stereo_reference",
    "check_coords",
    "fix_coords",
    "perceived_smiles",
    "count_unspecified_stereo",
    "stereo_report",
]

_SPECIFIED_BOND = (Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOZ,
                   Chem.BondStereo.STEREOCIS, Chem.BondStereo.STEREOTRANS)


@dataclass(frozen=True)
class StereoReference:
    """The stereo a conformer must reproduce.

    Attributes
    ----------
    mol : Chem.Mol
        Reference molecule (explicit hydrogens, same atom order as the coordinates).
    atoms : frozenset of int
        Indices of tetrahedral centres with specified configuration.
    bonds : frozenset of int
        Indices of double bonds with specified configuration.
    smiles : str
        Canonical isomeric SMILES carrying only the specified elements.
    """

    mol: Chem.Mol
    atoms: frozenset
    bonds: frozenset
    smiles: str

    @property
    def num_elements(self) -> int:
        """Number of specified stereo elements (0: nothing to check)."""
        return len(self.atoms) + len(self.bonds)


def stereo_reference(mol: Chem.Mol) -> StereoReference:
    """Collect the specified stereo elements of ``mol`` (tags, E/Z) as a :class:`StereoReference`."""
    ref = Chem.Mol(mol)
    ref.RemoveAllConformers()
    with rdBase.BlockLogs():
        Chem.AssignStereochemistry(ref, cleanIt=True, force=True)
    atoms = frozenset(a.GetIdx() for a in ref.GetAtoms()
                      if a.GetChiralTag() in (Chem.ChiralType.CHI_TETRAHEDRAL_CW,
                                              Chem.ChiralType.CHI_TETRAHEDRAL_CCW))
    bonds = frozenset(b.GetIdx() for b in ref.GetBonds() if b.GetStereo() in _SPECIFIED_BOND)
    smiles = _canonical(ref) if (atoms or bonds) else ""
    return StereoReference(ref, atoms, bonds, smiles)


def _canonical(mol: Chem.Mol) -> str:
    with rdBase.BlockLogs():
        return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))


def _with_coords(mol: Chem.Mol, coords: np.ndarray) -> Chem.Mol:
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    conf.SetPositions(np.asarray(coords, dtype=np.float64))
    conf.Set3D(True)
    m.AddConformer(conf, assignId=True)
    return m


def perceived_smiles(mol: Chem.Mol, coords: np.ndarray) -> str:
    """Canonical isomeric SMILES with every stereo element perceived from ``coords`` ``[N, 3]``."""
    m = _with_coords(mol, coords)
    with rdBase.BlockLogs():
        Chem.AssignStereochemistryFrom3D(m, confId=0, replaceExistingTags=True)
    return _canonical(m)


def check_coords(reference: StereoReference, coords: np.ndarray) -> bool:
    """True when ``coords`` ``[N, 3]`` reproduce every specified stereo element of ``reference``."""
    if reference.num_elements == 0:
        return True
    if not np.all(np.isfinite(coords)):
        return False
    m = _with_coords(reference.mol, coords)
    with rdBase.BlockLogs():
        Chem.AssignStereochemistryFrom3D(m, confId=0, replaceExistingTags=True)
        for atom in m.GetAtoms():
            if atom.GetIdx() not in reference.atoms:
                atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
        _forget_unspecified_double_bonds(m, reference.bonds)
        Chem.AssignStereochemistry(m, cleanIt=True, force=True)
    return _canonical(m) == reference.smiles


def _forget_unspecified_double_bonds(mol: Chem.Mol, specified: frozenset) -> None:
    """Clear the configuration perceived from 3D at every double bond not in ``specified`` (in place).

    Clearing the bond's stereo is not enough: perception also sets the directions (``/``, ``\\``) of its
    neighbouring single bonds, and SMILES output writes those, so an imine ``C=N-H`` left unspecified in
    the input (amidines, guanidines) would come out as ``[H]/N=C`` and never match. Directions next to a
    specified double bond are kept: they carry its configuration.
    """
    def neighbours(bond: Chem.Bond) -> set[int]:
        return {b.GetIdx() for atom in (bond.GetBeginAtom(), bond.GetEndAtom()) for b in atom.GetBonds()}

    keep = set().union(*(neighbours(mol.GetBondWithIdx(i)) for i in specified)) if specified else set()
    for bond in mol.GetBonds():
        if bond.GetIdx() in specified or bond.GetBondType() != Chem.BondType.DOUBLE:
            continue
        bond.SetStereo(Chem.BondStereo.STEREONONE)
        for idx in neighbours(bond) - keep - {bond.GetIdx()}:
            mol.GetBondWithIdx(idx).SetBondDir(Chem.BondDir.NONE)


def fix_coords(reference: StereoReference, coords: np.ndarray) -> tuple[np.ndarray, str]:
    """Check one conformer and reflect it when it is the mirror image.

    Returns
    -------
    coords : numpy.ndarray
        ``[N, 3]``, reflected through the yz-plane when that fixed the stereo.
    status : {"ok", "mirrored", "wrong"}
        ``"wrong"``: neither the conformer nor its mirror image is right (re-sample it).
    """
    if check_coords(reference, coords):
        return coords, "ok"
    mirrored = np.array(coords, dtype=np.float64, copy=True)
    mirrored[:, 0] *= -1.0
    if check_coords(reference, mirrored):
        return mirrored, "mirrored"
    return coords, "wrong"


def count_unspecified_stereo(mol: Chem.Mol) -> int:
    """Number of potential stereo elements (centres, double bonds) the molecule leaves unspecified."""
    m = Chem.Mol(mol)
    with rdBase.BlockLogs():
        return sum(1 for info in Chem.FindPotentialStereo(m)
                   if info.specified == Chem.StereoSpecified.Unspecified)


@dataclass
class StereoReport:
    """Per-conformer stereo correctness of a molecule against a reference.

    Attributes
    ----------
    conf_ids : list of int
        Conformer ids, in the molecule's order.
    correct : list of bool
        Conformer reproduces every specified stereo element.
    mirror_correct : list of bool
        The conformer's mirror image would be correct (it is an enantiomeric geometry).
    num_elements : int
        Specified stereo elements checked per conformer.
    """

    conf_ids: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    mirror_correct: list[bool] = field(default_factory=list)
    num_elements: int = 0

    @property
    def fraction_correct(self) -> float:
        """Fraction of conformers with correct stereo (NaN for a molecule without conformers)."""
        return float(np.mean(self.correct)) if self.correct else float("nan")

    @property
    def fraction_fixable(self) -> float:
        """Fraction correct once mirror images are reflected (an upper bound of the repair)."""
        if not self.correct:
            return float("nan")
        return float(np.mean([c or m for c, m in zip(self.correct, self.mirror_correct)]))


def stereo_report(mol_with_confs: Chem.Mol, reference: Chem.Mol | str | None = None) -> StereoReport:
    """Check every conformer of ``mol_with_confs`` against the reference stereochemistry.

    Parameters
    ----------
    mol_with_confs : Chem.Mol
        Molecule with explicit hydrogens and conformers.
    reference : Chem.Mol or str, optional
        Molecule or SMILES with the intended stereo, same constitution; its atom order may
        differ (it is matched to ``mol_with_confs`` by substructure). ``None``: the stereo tags
        of ``mol_with_confs`` itself.

    Returns
    -------
    StereoReport
    """
    target = Chem.Mol(mol_with_confs)
    if reference is None:
        ref_mol = target
    else:
        ref_mol = Chem.MolFromSmiles(reference) if isinstance(reference, str) else Chem.Mol(reference)
        if ref_mol is None:
            raise ValueError(f"cannot parse reference SMILES {reference!r}")
        ref_mol = _renumber_like(Chem.AddHs(ref_mol), target)
    ref = stereo_reference(ref_mol)
    report = StereoReport(num_elements=ref.num_elements)
    for conf in target.GetConformers():
        xyz = conf.GetPositions()
        mirrored = xyz.copy()
        mirrored[:, 0] *= -1.0
        report.conf_ids.append(conf.GetId())
        report.correct.append(check_coords(ref, xyz))
        report.mirror_correct.append(ref.num_elements > 0 and check_coords(ref, mirrored))
    return report


def _renumber_like(ref: Chem.Mol, target: Chem.Mol) -> Chem.Mol:
    """Renumber ``ref``'s atoms into ``target``'s order (same constitution required)."""
    if ref.GetNumAtoms() != target.GetNumAtoms():
        raise ValueError("reference and molecule have different numbers of atoms")
    plain = Chem.Mol(target)
    match = plain.GetSubstructMatch(ref, useChirality=False)
    if not match:
        raise ValueError("reference is not the same constitution as the molecule")
    order = [0] * len(match)
    for ref_idx, tgt_idx in enumerate(match):
        order[tgt_idx] = ref_idx
    return Chem.RenumberAtoms(ref, order)
