"""Chirality guidance: steer sampling toward the tetrahedral configurations the input specifies.

An E(3)-equivariant score network (EGNN, the GeoDiff-style field) sees the same invariant inputs for a
molecule and its mirror image, so it cannot place a specified ``@``/``@@`` centre; diastereomers of
polycyclic molecules come out mixed as well. The configuration of a centre with four neighbours
``n0..n3`` (RDKit bond order) is the sign of the signed volume

    ``T = (x_n1 - x_n0) · ((x_n2 - x_n0) × (x_n3 - x_n0))``:

``T > 0`` for ``CHI_TETRAHEDRAL_CW`` and ``T < 0`` for ``CHI_TETRAHEDRAL_CCW`` (the tests check it on
ETKDG geometries; it also held for all 3,282 specified centres of the first 3,000 QM9 validation molecules,
whose tags RDKit perceived from the DFT geometry). :func:`chirality_penalty` is the hinge
``Σ relu(margin - sign · T)``, zero for a centre that is already right with some room (|T| of an sp3
carbon's four neighbours is about 6 Å³), and :class:`molediff.core.guidance.PenaltyGuidance` applies it
to the denoiser's estimate while σ is large enough for a centre to invert.

Specified double bonds (E/Z) are guided the same way through the cosine of the dihedral angle of the
controlling neighbours ``a-b=c-d``: ``cos φ > 0`` for a cis pair, ``< 0`` for trans; which pair is
cis comes from RDKit's stereo perception (``FindPotentialStereo``), not from a label convention.

Double bonds are also held planar (every dihedral across a non-aromatic double bond near 0° or
180°), whether or not their stereo is specified.

Centres with three neighbours (a lone pair or implicit hydrogen: sulfoxides, bridgehead nitrogens)
are not guided; the conformer generator's stereo check still enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from rdkit import Chem

__all__ = ["TetrahedralConstraints", "tetrahedral_constraints", "double_bond_constraints", "signed_volumes",
           "dihedral_cosines", "chirality_penalty", "DEFAULT_CHIRALITY_GUIDANCE"]

_TAG_SIGN = {"CHI_TETRAHEDRAL_CW": 1.0, "CHI_TETRAHEDRAL_CCW": -1.0}  # by name: importable without RDKit

#: settings chosen on 40 validation molecules (benchmarks/conformers_qm9.py, ``--stereo-guidance``)
DEFAULT_CHIRALITY_GUIDANCE = {"sigma_range": (0.05, 10.0), "iters": 10, "step_size": 0.3, "margin": 3.0,
                              "dihedral_margin": 0.5, "planar_margin": 0.97}


@dataclass(frozen=True)
class TetrahedralConstraints:
    """Specified stereo elements of a (batch of) molecule(s) as signed four-atom constraints.

    Attributes
    ----------
    quads : Tensor
        ``[C, 4]`` long: the four neighbours of each centre, in the atom's bond order (global indices).
    signs : Tensor
        ``[C]`` float: +1 (``CW``) or -1 (``CCW``), the required sign of :func:`signed_volumes`.
    dihedrals : Tensor
        ``[D, 4]`` long: ``a, b, c, d`` of each specified double bond ``b=c`` (stereo atoms ``a``, ``d``).
    cis : Tensor
        ``[D]`` float: +1 where ``a`` and ``d`` must be cis, -1 where trans.
    planar : Tensor
        ``[P, 4]`` long: every ``a-b=c-d`` across a non-aromatic double bond, which must be planar.
    planar_sign : Tensor
        ``[P]`` float: +1 / -1 where the bond's specified stereo makes the pair cis / trans, 0 where
        either will do (``|cos φ|`` near 1).
    """

    quads: Tensor
    signs: Tensor
    dihedrals: Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    cis: Tensor = field(default_factory=lambda: torch.zeros(0))
    planar: Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    planar_sign: Tensor = field(default_factory=lambda: torch.zeros(0))

    def __len__(self) -> int:
        return int(self.quads.shape[0]) + int(self.dihedrals.shape[0]) + int(self.planar.shape[0])

    @staticmethod
    def concat(parts: Sequence["TetrahedralConstraints"], sizes: Sequence[int]) -> "TetrahedralConstraints":
        """Constraints of a disjoint union: part ``i``'s indices shifted by ``sum(sizes[:i])``."""
        offsets = torch.cumsum(torch.tensor([0, *sizes[:-1]], dtype=torch.long), 0) if len(sizes) else []
        parts = list(parts)
        if not parts:
            return _empty()
        return TetrahedralConstraints(
            torch.cat([p.quads + int(o) for p, o in zip(parts, offsets)]), torch.cat([p.signs for p in parts]),
            torch.cat([p.dihedrals + int(o) for p, o in zip(parts, offsets)]), torch.cat([p.cis for p in parts]),
            torch.cat([p.planar + int(o) for p, o in zip(parts, offsets)]), torch.cat([p.planar_sign for p in parts]))


def _empty() -> TetrahedralConstraints:
    return TetrahedralConstraints(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0))


def tetrahedral_constraints(mol: "Chem.Mol") -> TetrahedralConstraints:
    """The specified four-neighbour tetrahedral centres and double bonds of ``mol`` (hydrogens explicit)."""
    quads, signs = [], []
    for atom in mol.GetAtoms():
        sign = _TAG_SIGN.get(atom.GetChiralTag().name)
        if sign is None or atom.GetDegree() != 4:
            continue
        quads.append([bond.GetOtherAtomIdx(atom.GetIdx()) for bond in atom.GetBonds()])
        signs.append(sign)
    dihedrals, cis = double_bond_constraints(mol)
    planar, planar_sign = planar_dihedrals(mol, dihedrals, cis)
    return TetrahedralConstraints(torch.tensor(quads, dtype=torch.long).reshape(-1, 4),
                                  torch.tensor(signs, dtype=torch.float32), dihedrals, cis, planar, planar_sign)


def planar_dihedrals(mol: "Chem.Mol", dihedrals: Tensor, cis: Tensor) -> tuple[Tensor, Tensor]:
    """``([P, 4], [P])``: every ``a-b=c-d`` across a non-aromatic double bond, with its cis/trans sign.

    The sign follows from the bond's specified pair (``dihedrals``, ``cis``): swapping the substituent
    on one end swaps cis and trans. Bonds without specified stereo get sign 0.
    """
    from rdkit import Chem

    specified = {(int(b), int(c)): (int(a), int(d), float(s)) for (a, b, c, d), s in zip(dihedrals.tolist(), cis.tolist())}
    rows, sign = [], []
    for bond in mol.GetBonds():
        if bond.GetBondType() != Chem.BondType.DOUBLE or bond.GetIsAromatic():
            continue
        b, c = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if (c, b) in specified:
            b, c = c, b
        ref = specified.get((b, c))
        for a in (n.GetIdx() for n in mol.GetAtomWithIdx(b).GetNeighbors() if n.GetIdx() != c):
            for d in (n.GetIdx() for n in mol.GetAtomWithIdx(c).GetNeighbors() if n.GetIdx() != b):
                if a == d:
                    continue
                rows.append([a, b, c, d])
                sign.append(0.0 if ref is None else ref[2] * (1 if a == ref[0] else -1) * (1 if d == ref[1] else -1))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4), torch.tensor(sign, dtype=torch.float32)


def double_bond_constraints(mol: "Chem.Mol") -> tuple[Tensor, Tensor]:
    """``([D, 4] a-b=c-d, [D] ±1 cis/trans)`` of the double bonds with specified stereo.

    Read from RDKit's stereo perception (``FindPotentialStereo``): for a specified double bond it names
    one controlling neighbour on each end and whether those two are cis or trans.
    """
    from rdkit import Chem

    rows, cis = [], []
    for info in Chem.FindPotentialStereo(Chem.Mol(mol)):
        if info.type != Chem.StereoType.Bond_Double or info.specified != Chem.StereoSpecified.Specified:
            continue
        if info.descriptor not in (Chem.StereoDescriptor.Bond_Cis, Chem.StereoDescriptor.Bond_Trans):
            continue
        bond = mol.GetBondWithIdx(info.centeredOn)
        a, d = info.controllingAtoms[0], info.controllingAtoms[2]
        b, c = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if mol.GetBondBetweenAtoms(a, b) is None:
            b, c = c, b
        rows.append([a, b, c, d])
        cis.append(1.0 if info.descriptor == Chem.StereoDescriptor.Bond_Cis else -1.0)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4), torch.tensor(cis, dtype=torch.float32)


def signed_volumes(pos: Tensor, quads: Tensor) -> Tensor:
    """``T`` of each quad: ``(x1 - x0) · ((x2 - x0) × (x3 - x0))``.

    Shapes
    ------
    pos: ``[N, 3]``; quads: ``[C, 4]`` -> ``[C]``.
    """
    v = pos[quads]
    return ((v[:, 1] - v[:, 0]) * torch.linalg.cross(v[:, 2] - v[:, 0], v[:, 3] - v[:, 0])).sum(-1)


def dihedral_cosines(pos: Tensor, quads: Tensor, eps: float = 1e-9) -> Tensor:
    """``cos φ`` of the dihedral ``a-b-c-d`` of each quad (``+1`` cis, ``-1`` trans).

    Shapes
    ------
    pos: ``[N, 3]``; quads: ``[D, 4]`` -> ``[D]``.
    """
    v = pos[quads]
    n1 = torch.linalg.cross(v[:, 0] - v[:, 1], v[:, 2] - v[:, 1])
    n2 = torch.linalg.cross(v[:, 1] - v[:, 2], v[:, 3] - v[:, 2])
    return (n1 * n2).sum(-1) / (n1.norm(dim=-1) * n2.norm(dim=-1) + eps)


def chirality_penalty(constraints: TetrahedralConstraints, margin: float = 3.0, dihedral_margin: float = 0.5,
                      planar_margin: float = 0.97):
    """The guidance penalty (PenaltyGuidance): zero when every constraint holds with its margin.

    ``Σ relu(margin - sign · T)`` (centres, Å³) ``+ Σ relu(dihedral_margin - cis · cos φ)`` (the specified
    pair of each stereo double bond) ``+ Σ relu(planar_margin - s · cos φ)`` over every pair across a
    double bond, ``s`` its cis/trans sign, or ``|cos φ|`` where the stereo is free (0.97 ≈ 14°).
    """
    quads, signs = constraints.quads, constraints.signs
    dihedrals, cis, planar = constraints.dihedrals, constraints.cis, constraints.planar
    planar_sign = constraints.planar_sign

    def penalty(pos: Tensor) -> Tensor:
        total = pos.new_zeros(())
        if quads.numel():
            s = signs.to(device=pos.device, dtype=pos.dtype)
            total = total + torch.relu(margin - s * signed_volumes(pos, quads.to(pos.device))).sum()
        if dihedrals.numel():
            c = cis.to(device=pos.device, dtype=pos.dtype)
            total = total + torch.relu(dihedral_margin - c * dihedral_cosines(pos, dihedrals.to(pos.device))).sum()
        if planar.numel():
            cos = dihedral_cosines(pos, planar.to(pos.device))
            s = planar_sign.to(device=pos.device, dtype=pos.dtype)
            aligned = torch.where(s == 0, cos.abs(), s * cos)
            total = total + torch.relu(planar_margin - aligned).sum()
        return total

    return penalty
