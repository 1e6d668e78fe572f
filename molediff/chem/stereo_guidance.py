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

Centres with three neighbours (a lone pair or implicit hydrogen: sulfoxides, bridgehead nitrogens)
and double-bond E/Z are not guided; the conformer generator's stereo check still enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from rdkit import Chem

__all__ = ["TetrahedralConstraints", "tetrahedral_constraints", "signed_volumes", "chirality_penalty",
           "DEFAULT_CHIRALITY_GUIDANCE"]

_TAG_SIGN = {"CHI_TETRAHEDRAL_CW": 1.0, "CHI_TETRAHEDRAL_CCW": -1.0}  # by name: importable without RDKit

#: settings chosen on 40 validation molecules (benchmarks/conformers_qm9.py, ``--stereo-guidance``)
DEFAULT_CHIRALITY_GUIDANCE = {"sigma_range": (0.05, 10.0), "iters": 10, "step_size": 0.3, "margin": 3.0}


@dataclass(frozen=True)
class TetrahedralConstraints:
    """Specified tetrahedral centres of a (batch of) molecule(s).

    Attributes
    ----------
    quads : Tensor
        ``[C, 4]`` long: the four neighbours of each centre, in the atom's bond order (global indices).
    signs : Tensor
        ``[C]`` float: +1 (``CW``) or -1 (``CCW``), the required sign of :func:`signed_volumes`.
    """

    quads: Tensor
    signs: Tensor

    def __len__(self) -> int:
        return int(self.quads.shape[0])

    @staticmethod
    def concat(parts: Sequence["TetrahedralConstraints"], sizes: Sequence[int]) -> "TetrahedralConstraints":
        """Constraints of a disjoint union: part ``i``'s indices shifted by ``sum(sizes[:i])``."""
        offsets, total, quads, signs = [], 0, [], []
        for size in sizes:
            offsets.append(total)
            total += int(size)
        for part, off in zip(parts, offsets):
            quads.append(part.quads + off)
            signs.append(part.signs)
        if not quads:
            return TetrahedralConstraints(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0))
        return TetrahedralConstraints(torch.cat(quads), torch.cat(signs))


def tetrahedral_constraints(mol: "Chem.Mol") -> TetrahedralConstraints:
    """The specified four-neighbour tetrahedral centres of ``mol`` (hydrogens explicit, as sampled)."""
    quads, signs = [], []
    for atom in mol.GetAtoms():
        sign = _TAG_SIGN.get(atom.GetChiralTag().name)
        if sign is None or atom.GetDegree() != 4:
            continue
        quads.append([bond.GetOtherAtomIdx(atom.GetIdx()) for bond in atom.GetBonds()])
        signs.append(sign)
    if not quads:
        return TetrahedralConstraints(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0))
    return TetrahedralConstraints(torch.tensor(quads, dtype=torch.long), torch.tensor(signs))


def signed_volumes(pos: Tensor, quads: Tensor) -> Tensor:
    """``T`` of each quad: ``(x1 - x0) · ((x2 - x0) × (x3 - x0))``.

    Shapes
    ------
    pos: ``[N, 3]``; quads: ``[C, 4]`` -> ``[C]``.
    """
    v = pos[quads]
    return ((v[:, 1] - v[:, 0]) * torch.linalg.cross(v[:, 2] - v[:, 0], v[:, 3] - v[:, 0])).sum(-1)


def chirality_penalty(constraints: TetrahedralConstraints, margin: float = 3.0):
    """``penalty(pos) = Σ relu(margin - sign · T)`` over the centres (Å³), for PenaltyGuidance."""
    quads, signs = constraints.quads, constraints.signs

    def penalty(pos: Tensor) -> Tensor:
        q, s = quads.to(pos.device), signs.to(device=pos.device, dtype=pos.dtype)
        return torch.relu(margin - s * signed_volumes(pos, q)).sum()

    return penalty
