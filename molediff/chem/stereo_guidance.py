"""Stereo guidance: steer sampling toward the stereochemistry the input specifies, geometry kept sane.

An E(3)-equivariant score network (EGNN, the GeoDiff-style field) sees the same invariant inputs for a
molecule and its mirror image, so it cannot place a specified ``@``/``@@`` centre; diastereomers of
polycyclic molecules come out mixed as well. The graph says what is required, so the sampler is told:
:class:`molediff.core.guidance.PenaltyGuidance` pulls the denoiser's estimate ``x̂0`` into the set where
the penalty of :func:`guidance_penalty` is zero. Its terms:

* **Tetrahedral centres.** RDKit reads the configuration of a centre with neighbours ``n0..n3`` (bond
  order) from the sign of ``Ĉ = u0 · (u1 × u2)``, the unit vectors from the centre to ``n0..n2``
  (:func:`chirality_cosines`: ``Ĉ < 0`` for ``CHI_TETRAHEDRAL_CW``). Ĉ alone is a poor handle: a centre
  pulled through the plane of three neighbours flips Ĉ while the fourth stays on the wrong side, and the
  network then restores the old configuration. The guidance therefore hinges on the neighbours' volume
  ``T = (x_n1 - x_n0) · ((x_n2 - x_n0) × (x_n3 - x_n0))`` (:func:`signed_volumes`, |T| ≈ 6 Å³ for an sp3
  carbon), ``relu(margin - sign · shape · T)``: at an ordinary centre, inside its neighbours' tetrahedron,
  ``T > 0`` for ``CW``; at an *inverted* centre (a bridgehead fused into small rings, outside the
  tetrahedron, as in housanes and propellane-like cages) ``T`` has the other sign (:func:`centre_shapes`
  reads which one the network's estimate is, once per guidance call), plus a hinge on Ĉ itself,
  ``relu(centre_margin - (-sign) · Ĉ)``, for centres whose first three neighbours nearly share a plane
  with them (fused cyclopropanes, bicyclopentanes), where T can be right while RDKit reads Ĉ. Against
  the tags RDKit perceives from QM9's DFT geometries, T's sign held for 23,813 of 23,852 validation
  centres; the 39 others are inverted bridgeheads, where the volume-only rule of earlier versions pulled
  every sample into the wrong configuration.
* **Double bonds.** Every dihedral ``a-b=c-d`` across a non-aromatic double bond must be planar,
  ``|cos φ|`` near 1; where the input specifies E/Z, the sign too (``cos φ > 0`` cis): which pair is cis
  comes from RDKit's stereo perception (``FindPotentialStereo``), not from a label convention.
* **Aromatic rings.** The dihedrals of consecutive ring atoms are kept flat the same way (unsigned).
* **Bridgeheads.** An atom with four neighbours in two or more rings (not an invertible centre, below)
  is kept inside its neighbours' tetrahedron: each of its barycentric coordinates in that tetrahedron
  (:func:`hull_coordinates`, taken with the orientation its stereo tag requires where it has one) is
  held above ``hull_margin``, ``relu(hull_margin - λ)``, in guidance calls at σ up to
  ``hull_sigma_max``. Most of the invalid samples left by the other terms were cages closed through
  the wrong side: a bridgehead pushed out through a face of its neighbours, bonds stretched to finish
  the ring, and RDKit reading the wrong configuration. In QM9's DFT geometries the smallest
  barycentric coordinate of such an atom has median 0.16 and is below 0.02 at 5 of 4,262 (4,000
  validation molecules; never below -0.006), so a margin of 0.01 leaves them in place. Atoms in one
  ring or none (never below 0.095 in the DFT geometries) are left to the network: holding them too
  was no better on validation.
* **Bond lengths and angles.** Pulling atoms through a wrong configuration stretches bonds, so 1-2 and
  1-3 distances outside RDKit's distance-geometry bounds (``GetMoleculeBoundsMatrix``) are penalised
  quadratically; inside them the term is zero and the network's geometry is untouched.
* **Contacts.** Pairs four or more bonds apart are kept beyond ``clash_factor`` (0.75) × their contact
  distance (:func:`molediff.chem.validity.contact_bounds`), the same pairs and distances the validity
  check's clash test uses, so the sample does not fold onto itself; a hydrogen bond (N/O/F-H...N/O/F)
  may close to 0.75 × 2.0 Å. (Before, it could close only to 0.75 × the van der Waals sum where RDKit's
  bound was that large: 241 of the README's 1,000 test molecules have such a pair. On 1,000 validation
  molecules, seed 2, raw sampling before and after: mean and median min-RMSD within 0.001 Å, coverage@0.1
  0.405 and 0.404, valid 0.995 both; the product path's coverage@0.1 0.437 and 0.431.)

Centres with three neighbours (a lone pair or implicit hydrogen: sulfoxides, bridgehead nitrogens)
are not guided; the conformer generator's stereo check still enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from molediff.chem.penalty_gradients import (accumulate_rows, chirality_cosine_gradients, dihedral_cosine_gradients,
                                             distance_bound_gradients, gather_rows, volume_gradients)

if TYPE_CHECKING:  # pragma: no cover
    from rdkit import Chem

__all__ = ["GuidanceConstraints", "guidance_constraints", "double_bond_constraints", "planar_dihedrals",
           "aromatic_ring_dihedrals", "guidance_options", "hull_centres", "hull_coordinates",
           "signed_volumes", "chirality_cosines", "centre_shapes", "dihedral_cosines", "guidance_penalty",
           "GuidancePenalty", "DEFAULT_STEREO_GUIDANCE", "NO_UPPER"]

_TAG_SIGN = {"CHI_TETRAHEDRAL_CW": 1.0, "CHI_TETRAHEDRAL_CCW": -1.0}  # by name: importable without RDKit

#: chosen on QM9 validation molecules, K = 5, Euler-Maruyama 40 steps (median min-RMSD / valid conformers).
#: 40 molecules, 10 iterations: no distance term 0.228 Å / 0.835; distance_weight 0.2: 0.229 / 0.920;
#: 0.5: 0.211 / 0.980; 1.0: 0.174 / 0.980; 2.0: 0.195 / 0.960; 5.0: 0.227 / 0.810. 100 molecules,
#: distance_weight 1.0, iterations 10 / 15 / 20 / 30 / 40: 0.159 / 0.144 / 0.127 / 0.135 / 0.147 Å.
#: clash_factor 0.75 (contact lower bounds of pairs >= 4 bonds apart; 0 = off): 100 molecules, valid 0.974 -> 0.980
#: (median 0.122 -> 0.127 Å); 200 others, K = 5: 18 -> 10 invalid of 1,000 (clashes 15 -> 2). DFT geometries of 2,000
#: validation molecules never come below 0.71 x the contact distance (0.1 % quantile 0.78), so 0.75 spares them.
#: sigma_range lower end 0 / 0.01 / 0.05 / 0.1 / 0.2 Å: median 0.220 / 0.148 / 0.127 / 0.135 / 0.168 Å (100 molecules).
#: chirality (DDPM 15 steps, K = 5, seed 0; 300 validation molecules, then the 20 validation molecules whose DFT
#: geometry has an inverted centre; median min-RMSD Å / valid / right stereo): "volume" (before) 0.186 / 0.976 / 0.977,
#: cages 0.695 / 0.22 / 0.61; "centre" 0.222 / 0.723 / 0.664, cages 0.085 / 0.77 / 0.79; "shape" read at every centre
#: 0.194 / 0.952 / 0.947, cages 0.094 / 0.72 / 0.80; "shape" at invertible centres with |T| >= margin
#: 0.188 / 0.977 / 0.977, cages 0.113 / 0.50 / 0.72. Then (weights of step 41,965; 500 validation molecules, and the
#: first 40 validation molecules whose DFT geometry has an inverted centre or one with Ĉ < 0.1, where RDKit's reading
#: hangs on the centre being just on one side of its first three neighbours' plane): that volume term alone 0.195 /
#: 0.980 / 0.983, hard 0.152 / 0.275 / 0.37; plus the centre term with centre_margin 0.02 (kept) 0.195 / 0.988 /
#: 0.995 (mean 0.253 -> 0.247 Å), hard 0.106 / 0.655 / 0.87. Iterations per call, re-checked with
#: ``benchmarks/sampling_grid.py`` (1,000 validation molecules, K = 5, DDPM 15; seed 1 | seed 0, median / mean / valid):
#: 20 iters 0.184 / 0.252 / 0.9888 | 0.171 / 0.240 / 0.9860; 30 (kept) 0.187 / 0.251 / 0.9922 | 0.166 / 0.237 / 0.9880;
#: 40 0.187 / 0.253 / 0.9910 (seed 1). Fewer conformers with rings closed through the wrong side (invalid bonds
#: 37 -> 22 of 5,000, seed 1); the other settings tried there (distance_weight 2, sigma_range from 0.02 Å,
#: clash_factor 0.8, step_size 0.4) were no better. Then aromatic_rings (ring dihedrals kept flat) on top of 30
#: iterations: seed 1 0.185 / 0.248 / 0.9930 (off: 0.187 / 0.251 / 0.9922), seed 0 0.159 / 0.237 / 0.9910
#: (off: 0.166 / 0.237 / 0.9880); kept. Then the bridgehead term (hull, margin 0.01, σ <= 1 Å), same runs, seed 1 |
#: seed 0: off 0.185 / 0.248 / 0.9930 | 0.159 / 0.237 / 0.9910; on (kept) 0.184 / 0.247 / 0.9942 | 0.162 / 0.237 / 0.9916
#: (invalid bonds 22 -> 17, clashes 16 -> 4 of 5,000, seed 1); margin 0.05 0.183 / 0.247 / 0.9942 | 0.162 / 0.237 /
#: 0.9926; at every σ 0.181 / 0.248 / 0.9942 | 0.158 / 0.235 / 0.9910; σ <= 0.5 0.183 / 0.247 / 0.9936 | 0.162 / 0.236 /
#: 0.9912; atoms in one ring too 0.183 / 0.247 / 0.9926 | 0.159 / 0.236 / 0.9920; every four-neighbour atom 0.182 /
#: 0.247 / 0.9908 | 0.158 / 0.236 / 0.9912; invertible centres too (where not inverted) 0.183 / 0.247 / 0.9946 |
#: 0.160 / 0.236 / 0.9920. Taking the orientation from the current geometry instead of the tag (at every σ; 300
#: bridged validation molecules, K = 5) raised stereo failures from 5 to 50 of 1,500.
#: bound_slack (Å added on each side of RDKit's 1-2 and 1-3 windows; (0, 0) kept). In 1,000 validation molecules 82 % of
#: the DFT 1-2 distances lie outside RDKit's 1-2 window (median 0.010 Å outside a window 0.020 Å wide) and 47 % of the 1-3
#: distances outside theirs (median 0.026 Å; ``benchmarks/bounds_vs_dft.py``), yet widening the windows sampled worse
#: (``benchmarks/sampling_grid.py``, 500 validation molecules, K = 5, seed 1; median / mean / cov@0.1 / valid):
#: (0, 0) 0.166 / 0.228 / 0.296 / 0.9952; 0.01:0.03 0.175 / 0.227 / 0.314 / 0.9968; 0.02:0.06 0.184 / 0.235 / 0.270 /
#: 0.9952; 0.04:0.12 0.208 / 0.257 / 0.216 / 0.9924. The network's own bonds and angles are further off than RDKit's.
#: final_iters, final_step_size (after the last step, that many penalty steps of that size on the finished sample, with
#: the guidance's move cap; 0 kept): same runs, 50 × 0.01 0.168 / 0.232 / 0.274 / 0.9956 (it pulls bonds into RDKit's
#: windows, away from DFT). On 40 drug-like molecules (``benchmarks/drug_like.py``, K = 5, seed 0) it raised the valid
#: fraction from 0.615 to 0.750 (50 × 0.05: 0.730; 10 × 0.3, the guidance's own step, overshoots: 0.300).
DEFAULT_STEREO_GUIDANCE = {"sigma_range": (0.05, 10.0), "iters": 30, "step_size": 0.3, "max_move": 0.3,
                           "margin": 3.0, "planar_margin": 0.97, "distance_weight": 1.0, "clash_factor": 0.75,
                           "chirality": "shape", "centre_margin": 0.02, "aromatic_rings": True,
                           "hull": True, "hull_margin": 0.01, "hull_sigma_max": 1.0, "bound_slack": (0.0, 0.0),
                           "final_iters": 0, "final_step_size": 0.01}


def guidance_options(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``DEFAULT_STEREO_GUIDANCE`` with ``overrides`` applied; an unknown name is a ``ValueError``."""
    unknown = sorted(set(overrides or {}) - set(DEFAULT_STEREO_GUIDANCE))
    if unknown:
        raise ValueError(f"unknown stereo-guidance option(s) {unknown}; choose from {sorted(DEFAULT_STEREO_GUIDANCE)}")
    return {**DEFAULT_STEREO_GUIDANCE, **(overrides or {})}


#: upper bound of a pair that only has a lower one (contacts), Å: never reached by a molecule.
NO_UPPER = 1.0e4


def _long(rows: list, width: int) -> Tensor:
    return torch.tensor(rows, dtype=torch.long).reshape(-1, width)


def _index(values: list) -> Tensor:
    return torch.tensor(values, dtype=torch.long).reshape(-1)


def _float(values) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32).reshape(-1))


@dataclass(frozen=True)
class GuidanceConstraints:
    """What the graph requires of a (batch of) molecule(s), as index tensors (global atom indices).

    Attributes
    ----------
    centres, quads, signs : Tensor
        ``[C]`` the specified tetrahedral centres; ``[C, 4]`` their four neighbours (bond order); ``[C]`` +1
        (``CW``) or -1 (``CCW``), the required sign of :func:`signed_volumes` at an ordinary centre (and
        minus that of :func:`chirality_cosines` at every centre).
    invertible : Tensor
        ``[C]`` bool, centres in two or more rings of at most four atoms and three or more rings in all,
        the only ones that can be inverted (:func:`centre_shapes`).
    planar, planar_sign : Tensor
        ``[P, 4]`` every ``a-b=c-d`` across a non-aromatic double bond; ``[P]`` +1 / -1 where the
        specified stereo makes the pair cis / trans, 0 where either will do.
    pairs, lower, upper : Tensor
        ``[Q, 2]`` bonded (1-2) and angle (1-3) atom pairs with their distance bounds (Å), then pairs
        four or more bonds apart with a contact lower bound and :data:`NO_UPPER`; ``[Q]`` each.
    hull, hull_quads, hull_signs : Tensor
        ``[H]`` the bridgeheads kept inside their neighbours' tetrahedron (:func:`hull_centres`);
        ``[H, 4]`` their neighbours; ``[H]`` the sign of :func:`signed_volumes` their stereo tag requires
        (``signs``), 0 where the atom has no tag.
    """

    centres: Tensor
    quads: Tensor
    signs: Tensor
    invertible: Tensor
    planar: Tensor
    planar_sign: Tensor
    pairs: Tensor
    lower: Tensor
    upper: Tensor
    hull: Tensor
    hull_quads: Tensor
    hull_signs: Tensor

    _INDEX = ("quads", "planar", "pairs", "hull_quads")  # one row per constraint
    _ATOM_INDICES = ("centres", "quads", "planar", "pairs", "hull", "hull_quads")  # shifted when concatenated

    def __len__(self) -> int:
        return sum(int(getattr(self, name).shape[0]) for name in self._INDEX)

    def to(self, device: torch.device | str) -> "GuidanceConstraints":
        """The same constraints on ``device`` (move once, before sampling, not per penalty call)."""
        return GuidanceConstraints(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence["GuidanceConstraints"], sizes: Sequence[int]) -> "GuidanceConstraints":
        """Constraints of a disjoint union: part ``i``'s indices shifted by ``sum(sizes[:i])``."""
        parts = list(parts)
        if not parts:
            return GuidanceConstraints(_index([]), _long([], 4), _float([]), torch.zeros(0, dtype=torch.bool),
                                       _long([], 4), _float([]), _long([], 2), _float([]), _float([]),
                                       _index([]), _long([], 4), _float([]))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        merged = {}
        for f in fields(GuidanceConstraints):
            tensors = [getattr(p, f.name) for p in parts]
            if f.name in GuidanceConstraints._ATOM_INDICES:
                tensors = [t + int(o) for t, o in zip(tensors, offsets)]
            merged[f.name] = torch.cat(tensors)
        return GuidanceConstraints(**merged)


def _invertible(ring_sizes: list[int]) -> bool:
    """Can a centre in rings of these sizes be inverted (two or more rings of <= 4 atoms, three or more rings)?"""
    return sum(n <= 4 for n in ring_sizes) >= 2 and len(ring_sizes) >= 3


def hull_centres(mol: "Chem.Mol") -> tuple[Tensor, Tensor, Tensor]:
    """``([H], [H, 4], [H])``: atoms with four neighbours in two or more rings that cannot be inverted, their
    neighbours, and the sign of :func:`signed_volumes` their stereo tag requires (0: no tag).

    These bridgeheads and fusion atoms sit inside the tetrahedron of their neighbours in every sane
    geometry (see the module docstring); centres that can be inverted (``GuidanceConstraints.invertible``)
    are left to the chirality terms.
    """
    rings = mol.GetRingInfo().AtomRings()
    centres, quads, signs = [], [], []
    for atom in mol.GetAtoms():
        sizes = [len(r) for r in rings if atom.GetIdx() in r]
        if atom.GetDegree() != 4 or len(sizes) < 2 or _invertible(sizes):
            continue
        centres.append(atom.GetIdx())
        quads.append([bond.GetOtherAtomIdx(atom.GetIdx()) for bond in atom.GetBonds()])  # bond order, as the tag
        signs.append(_TAG_SIGN.get(atom.GetChiralTag().name, 0.0))
    return _index(centres), _long(quads, 4), _float(signs)


def guidance_constraints(mol: "Chem.Mol", clash_factor: float | None = None,
                         aromatic_rings: bool | None = None,
                         bound_slack: tuple[float, float] | None = None) -> GuidanceConstraints:
    """The constraints of ``mol`` (hydrogens explicit, atom order as sampled).

    ``clash_factor`` (default ``DEFAULT_STEREO_GUIDANCE["clash_factor"]``) scales the contact distance
    (:func:`molediff.chem.validity.contact_bounds`) of pairs four or more bonds apart into a lower
    bound; ``0`` leaves those pairs out. ``aromatic_rings`` (default
    ``DEFAULT_STEREO_GUIDANCE["aromatic_rings"]``) adds the dihedrals along every aromatic ring
    (:func:`aromatic_ring_dihedrals`) to the planar ones, unsigned. The bridgeheads of
    :func:`hull_centres` are always listed; the penalty's ``hull_margin`` decides whether they count.
    ``bound_slack`` (Å, default ``DEFAULT_STEREO_GUIDANCE["bound_slack"]``) widens RDKit's 1-2 and 1-3
    windows by its first and second entry on each side.
    """
    from molediff.chem.validity import contact_bounds, pair_bounds

    if clash_factor is None:
        clash_factor = DEFAULT_STEREO_GUIDANCE["clash_factor"]
    if aromatic_rings is None:
        aromatic_rings = bool(DEFAULT_STEREO_GUIDANCE["aromatic_rings"])

    centres, quads, signs, invertible = [], [], [], []
    rings = mol.GetRingInfo().AtomRings()
    for atom in mol.GetAtoms():
        sign = _TAG_SIGN.get(atom.GetChiralTag().name)
        if sign is None or atom.GetDegree() != 4:
            continue
        centres.append(atom.GetIdx())
        invertible.append(_invertible([len(r) for r in rings if atom.GetIdx() in r]))
        quads.append([bond.GetOtherAtomIdx(atom.GetIdx()) for bond in atom.GetBonds()])
        signs.append(sign)
    planar, planar_sign = planar_dihedrals(mol, *double_bond_constraints(mol))
    if aromatic_rings:
        ring = aromatic_ring_dihedrals(mol)
        planar, planar_sign = torch.cat([planar, ring]), torch.cat([planar_sign, torch.zeros(len(ring))])
    bounds = pair_bounds(mol)
    iu, ju, lower, upper, hops = bounds
    if bound_slack is None:
        bound_slack = DEFAULT_STEREO_GUIDANCE["bound_slack"]
    near = hops <= 2  # bonds and angles
    i, j, lo, hi = iu[near], ju[near], lower[near], upper[near]
    slack = np.where(hops[near] == 1, bound_slack[0], bound_slack[1])
    lo, hi = np.maximum(lo - slack, 0.0), hi + slack
    if clash_factor:
        ic, jc, contact, _ = contact_bounds(mol, bounds)
        i, j = np.concatenate([i, ic]), np.concatenate([j, jc])
        lo, hi = np.concatenate([lo, clash_factor * contact]), np.concatenate([hi, np.full(ic.shape, NO_UPPER)])
    return GuidanceConstraints(_index(centres), _long(quads, 4), _float(signs),
                               torch.tensor(invertible, dtype=torch.bool), planar, planar_sign,
                               torch.as_tensor(np.stack([i, j], 1), dtype=torch.long).reshape(-1, 2),
                               _float(lo), _float(hi), *hull_centres(mol))


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
    return _long(rows, 4), _float(cis)


def aromatic_ring_dihedrals(mol: "Chem.Mol") -> Tensor:
    """``[R, 4]``: every dihedral of four consecutive atoms along each aromatic ring (flat: ``|cos φ| = 1``)."""
    rows = []
    for ring in mol.GetRingInfo().AtomRings():
        if all(mol.GetAtomWithIdx(a).GetIsAromatic() for a in ring):
            n = len(ring)
            rows.extend([ring[i], ring[(i + 1) % n], ring[(i + 2) % n], ring[(i + 3) % n]] for i in range(n))
    return _long(rows, 4)


def planar_dihedrals(mol: "Chem.Mol", dihedrals: Tensor, cis: Tensor) -> tuple[Tensor, Tensor]:
    """``([P, 4], [P])``: every ``a-b=c-d`` across a non-aromatic double bond, with its cis/trans sign.

    The sign follows from the bond's specified pair (``dihedrals``, ``cis`` of
    :func:`double_bond_constraints`): swapping the substituent on one end swaps cis and trans. Bonds
    without specified stereo get sign 0.
    """
    from rdkit import Chem

    specified = {(b, c): (a, d, s) for (a, b, c, d), s in zip(dihedrals.tolist(), cis.tolist())}
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
    return _long(rows, 4), _float(sign)


def signed_volumes(pos: Tensor, quads: Tensor) -> Tensor:
    """``T`` of each quad: ``(x1 - x0) · ((x2 - x0) × (x3 - x0))``.

    Shapes
    ------
    pos: ``[N, 3]``; quads: ``[C, 4]`` -> ``[C]``.
    """
    v = pos[quads]
    return ((v[:, 1] - v[:, 0]) * torch.linalg.cross(v[:, 2] - v[:, 0], v[:, 3] - v[:, 0])).sum(-1)


def chirality_cosines(pos: Tensor, centres: Tensor, quads: Tensor, eps: float = 1e-9) -> Tensor:
    """``Ĉ = u0 · (u1 × u2)`` of each centre, ``u_i`` the unit vectors from the centre to its first three neighbours.

    This is the quantity RDKit reads a centre's configuration from (``AssignStereochemistryFrom3D``:
    ``Ĉ < 0`` for ``CHI_TETRAHEDRAL_CW``); unlike :func:`signed_volumes` it keeps its sign at an inverted
    centre, whose neighbours do not surround it. About ±0.77 at an ideal tetrahedral centre.

    Shapes
    ------
    pos: ``[N, 3]``; centres: ``[C]``; quads: ``[C, 4]`` -> ``[C]``.
    """
    u = pos[quads[:, :3]] - pos[centres][:, None]
    u = u / (u.norm(dim=-1, keepdim=True) + eps)
    return (u[:, 0] * torch.linalg.cross(u[:, 1], u[:, 2])).sum(-1)


def hull_coordinates(pos: Tensor, centres: Tensor, quads: Tensor, signs: Tensor | None = None,
                     min_volume: float = 1.0) -> Tensor:
    """Barycentric coordinates ``λ`` of each centre in the tetrahedron of its four neighbours.

    ``λ_l`` is the signed volume of the tetrahedron with neighbour ``l`` replaced by the centre, over
    that of the neighbours (:func:`signed_volumes`); the four sum to one, and all are positive exactly
    when the centre lies inside. The denominator is held at ``min_volume`` (Å³) or more in size, so a
    flattened tetrahedron does not blow the coordinates up. Where ``signs`` (±1) gives the sign the
    neighbours' volume must have, the denominator takes that sign: a centre inside a mirror-image
    tetrahedron then has all four coordinates negative, so holding them positive also sets the
    configuration; where it is 0 (or ``signs`` is None) the current sign counts.

    Shapes
    ------
    pos: ``[N, 3]``; centres: ``[H]``; quads: ``[H, 4]``; signs: ``[H]`` -> ``[H, 4]``.
    """
    return _barycentric(pos, quads, _hull_faces(centres, quads), signs, min_volume)


def _hull_faces(centres: Tensor, quads: Tensor) -> Tensor:
    """``[4H, 4]``: each quad four times, neighbour ``l`` replaced by the centre in the ``l``-th copy."""
    swapped = quads[:, None, :].expand(-1, 4, -1).clone()  # [H, 4 (replaced), 4]
    swapped[:, torch.arange(4), torch.arange(4)] = centres[:, None].expand(-1, 4)
    return swapped.reshape(-1, 4)


def _barycentric(pos: Tensor, quads: Tensor, faces: Tensor, signs: Tensor | None, min_volume: float) -> Tensor:
    """:func:`hull_coordinates` with the face quads of :func:`_hull_faces` given."""
    denom = _hull_denominators(signed_volumes(pos, quads), signs, min_volume)
    return signed_volumes(pos, faces).reshape(-1, 4) / denom[:, None]


def _hull_denominators(total: Tensor, signs: Tensor | None, min_volume: float) -> Tensor:
    """The neighbours' volumes ``total`` ``[H]`` held at ``min_volume`` or more in size, with the sign
    ``signs`` requires where it is non-zero and their own elsewhere (the sign carries no gradient)."""
    sign = torch.where(total < 0, -1.0, 1.0).to(total.dtype).detach()
    if signs is not None:
        sign = torch.where(signs != 0, signs.to(total.dtype), sign)
    return sign * total.abs().clamp_min(min_volume)


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


#: smallest size (Å³) of the neighbours' volume that the bridgehead term divides by (:func:`_barycentric`)
HULL_MIN_VOLUME = 1.0

#: scale of the centre-cosine hinge (unitless) against the volume hinge (Å³), so their gradients are alike
CENTRE_SCALE = 10.0

CHIRALITY_TERMS = ("shape", "volume", "centre")


def centre_shapes(pos: Tensor, centres: Tensor, quads: Tensor, invertible: Tensor, min_volume: float = 3.0) -> Tensor:
    """``-1`` at an inverted centre, ``+1`` at an ordinary one; ``[C]``, no gradient.

    At an ordinary centre, inside its neighbours' tetrahedron, :func:`signed_volumes` and
    :func:`chirality_cosines` have opposite signs; at an inverted one (a bridgehead of a housane or a
    propellane-like cage, outside the tetrahedron) the same sign. A centre counts as inverted only where
    it is ``invertible`` and ``|T| >= min_volume`` (Å³), so a centre caught halfway through being pulled
    to the other configuration is not mistaken for one. In QM9's validation DFT geometries 39 of 23,852
    specified centres are inverted; 38 of them are among the 3,026 invertible ones (the other sits in only
    two rings).
    """
    with torch.no_grad():
        t = signed_volumes(pos, quads)
        cos = chirality_cosines(pos, centres, quads)
        inverted = (t * cos > 0) & (t.abs() >= min_volume) & invertible
        return torch.where(inverted, -1.0, 1.0).to(pos.dtype)


class GuidancePenalty:
    """``penalty(pos)``, zero when every constraint holds (for PenaltyGuidance); see :func:`guidance_penalty`.

    ``bind(x0)`` fixes the centres' shapes (:func:`centre_shapes`) at the network's estimate ``x0`` for
    one guidance call, so that pulling a centre through its inversion does not flip its target midway.
    """

    def __init__(self, constraints: GuidanceConstraints, margin: float, planar_margin: float,
                 distance_weight: float, chirality: str, centre_margin: float,
                 shapes: Tensor | None = None, hull_margin: float | None = None,
                 hull_sigma_max: float = float("inf"), hull_faces: Tensor | None = None) -> None:
        if chirality not in CHIRALITY_TERMS:
            raise ValueError(f"chirality must be one of {CHIRALITY_TERMS}, got {chirality!r}")
        self.c, self.margin, self.planar_margin = constraints, margin, planar_margin
        self.distance_weight, self.chirality, self.centre_margin = distance_weight, chirality, centre_margin
        self.shapes, self.hull_margin, self.hull_sigma_max = shapes, hull_margin, hull_sigma_max
        if hull_faces is None and constraints.hull.numel():  # indexed once, not in every guidance step
            hull_faces = _hull_faces(constraints.hull, constraints.hull_quads)
        self.hull_faces = hull_faces

    def bind(self, x0: Tensor, sigma: float | None = None) -> "GuidancePenalty":
        """This penalty for one guidance call at noise level ``sigma``: the centre shapes of ``x0`` ``[N, 3]``
        held fixed, and the bridgehead term dropped above ``hull_sigma_max``."""
        hull_margin = self.hull_margin if sigma is None or sigma <= self.hull_sigma_max else None
        shapes = self.shapes
        if self.chirality == "shape" and self.c.quads.numel():
            c, dev = self.c, x0.device
            shapes = centre_shapes(x0, c.centres.to(dev), c.quads.to(dev), c.invertible.to(dev), self.margin)
        return GuidancePenalty(self.c, self.margin, self.planar_margin, self.distance_weight, self.chirality,
                               self.centre_margin, shapes, hull_margin, self.hull_sigma_max, self.hull_faces)

    def _centres(self, pos: Tensor) -> Tensor:
        c, dev = self.c, pos.device
        signs, centres, quads = c.signs.to(dev, pos.dtype), c.centres.to(dev), c.quads.to(dev)
        if self.chirality == "volume":
            return torch.relu(self.margin - signs * signed_volumes(pos, quads))
        centre = CENTRE_SCALE * torch.relu(self.centre_margin + signs * chirality_cosines(pos, centres, quads))
        if self.chirality == "centre":
            return centre
        shapes = self.shapes
        if shapes is None:
            shapes = centre_shapes(pos, centres, quads, c.invertible.to(dev), self.margin)
        return torch.relu(self.margin - signs * shapes * signed_volumes(pos, quads)) + centre

    def __call__(self, pos: Tensor) -> Tensor:
        c, dev, dt = self.c, pos.device, pos.dtype
        total = pos.new_zeros(())
        if c.quads.numel():
            total = total + self._centres(pos).sum()
        if c.planar.numel():
            cos, s = dihedral_cosines(pos, c.planar.to(dev)), c.planar_sign.to(dev, dt)
            total = total + torch.relu(self.planar_margin - torch.where(s == 0, cos.abs(), s * cos)).sum()
        if c.hull.numel() and self.hull_margin is not None:
            lam = _barycentric(pos, c.hull_quads.to(dev), self.hull_faces.to(dev), c.hull_signs.to(dev),
                               HULL_MIN_VOLUME)
            total = total + CENTRE_SCALE * torch.relu(self.hull_margin - lam).sum()
        if c.pairs.numel() and self.distance_weight:
            pairs = c.pairs.to(dev)
            d = (pos[pairs[:, 0]] - pos[pairs[:, 1]]).norm(dim=-1)
            outside = torch.relu(c.lower.to(dev, dt) - d).square() + torch.relu(d - c.upper.to(dev, dt)).square()
            total = total + self.distance_weight * outside.sum()
        return total

    def gradient(self, pos: Tensor) -> Tensor:
        """``∇ penalty(pos)`` ``[N, 3]`` in closed form (:mod:`molediff.chem.penalty_gradients`), no autograd.

        Equal to autograd's gradient of :meth:`__call__` up to rounding (relu and norm taken with
        autograd's conventions at their kinks); one guidance step over 100 QM9 molecules × 10 conformers
        (18,130 atoms) took 9.3 ms against autograd's 14.3 ms on 2 CPU threads, 9.5 against 16.7 ms on one
        (``benchmarks/guidance_gradients.py``).
        """
        c, dev, dt = self.c, pos.device, pos.dtype
        parts: list[tuple[Tensor, Tensor]] = []
        if c.quads.numel():
            parts.extend(self._centre_gradients(pos))
        if c.planar.numel():
            planar = c.planar.to(dev)
            cos, dcos = dihedral_cosine_gradients(gather_rows(pos, planar))
            s = c.planar_sign.to(dev, dt)
            slope = torch.where(s == 0, torch.sign(cos), s)  # the hinge is relu(margin - slope · cos φ)
            coef = torch.where(self.planar_margin - slope * cos > 0, -slope, torch.zeros_like(slope))
            parts.append((planar, coef[:, None, None] * dcos))
        if c.hull.numel() and self.hull_margin is not None:
            parts.extend(self._hull_gradients(pos))
        if c.pairs.numel() and self.distance_weight:
            parts += distance_bound_gradients(pos, c.pairs.to(dev), c.lower.to(dev, dt), c.upper.to(dev, dt),
                                              self.distance_weight, compact=pos.device.type == "cpu")
        return accumulate_rows(pos.shape[0], parts, pos)

    def _centre_gradients(self, pos: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Gradients of the centre terms of :meth:`_centres`, as ``(index, grad)`` parts."""
        c, dev = self.c, pos.device
        signs, centres, quads = c.signs.to(dev, pos.dtype), c.centres.to(dev), c.quads.to(dev)
        parts = []
        if self.chirality != "centre":
            shapes = torch.ones_like(signs)
            if self.chirality == "shape":
                shapes = self.shapes if self.shapes is not None else centre_shapes(
                    pos, centres, quads, c.invertible.to(dev), self.margin)
            volume, dvolume = volume_gradients(gather_rows(pos, quads))
            slope = signs * shapes
            coef = torch.where(self.margin - slope * volume > 0, -slope, torch.zeros_like(slope))
            parts.append((quads, coef[:, None, None] * dvolume))
        if self.chirality != "volume":
            cosine, dcosine = chirality_cosine_gradients(pos.index_select(0, centres), gather_rows(pos, quads[:, :3]))
            coef = torch.where(self.centre_margin + signs * cosine > 0, CENTRE_SCALE * signs, torch.zeros_like(signs))
            parts.append((torch.cat((centres[:, None], quads[:, :3]), dim=1), coef[:, None, None] * dcosine))
        return parts

    def _hull_gradients(self, pos: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Gradients of the bridgehead term (:func:`_barycentric`, ``HULL_MIN_VOLUME``), as ``(index, grad)``."""
        c, dev, dt = self.c, pos.device, pos.dtype
        quads, faces = c.hull_quads.to(dev), self.hull_faces.to(dev)
        total, dtotal = volume_gradients(gather_rows(pos, quads))  # [H], [H, 4, 3]
        face, dface = volume_gradients(gather_rows(pos, faces))  # [4H], [4H, 4, 3]
        denom = _hull_denominators(total, c.hull_signs.to(dev), HULL_MIN_VOLUME)
        lam = face.reshape(-1, 4) / denom[:, None]  # [H, 4]
        coef = torch.where(self.hull_margin - lam > 0, -CENTRE_SCALE, 0.0).to(dt)  # ∂penalty/∂λ
        # λ = face / denom: ∂λ/∂face = 1 / denom,
        # ∂λ/∂total = -face / denom² · sign · sign(total) · [|total| >= HULL_MIN_VOLUME]
        ddenom = torch.sign(denom) * torch.sign(total) * (total.abs() >= HULL_MIN_VOLUME).to(dt)
        per_total = (coef * -lam / denom[:, None]).sum(1) * ddenom
        return [(faces, (coef / denom[:, None]).reshape(-1)[:, None, None] * dface),
                (quads, per_total[:, None, None] * dtotal)]


def guidance_penalty(constraints: GuidanceConstraints, margin: float = 3.0, planar_margin: float = 0.97,
                     distance_weight: float = 1.0, chirality: str = "shape",
                     centre_margin: float = 0.02, hull_margin: float | None = 0.01,
                     hull_sigma_max: float = 1.0) -> GuidancePenalty:
    """``penalty(pos)``, zero when every constraint holds (for PenaltyGuidance).

    Centres (``chirality``): ``"volume"`` ``Σ relu(margin - sign · T)`` (Å³, :func:`signed_volumes`);
    ``"centre"`` ``CENTRE_SCALE · Σ relu(centre_margin + sign · Ĉ)`` (:func:`chirality_cosines`, RDKit's
    own criterion, a poor handle alone: see the module docstring); ``"shape"`` (default) the volume term
    with its sign flipped at inverted centres (:func:`centre_shapes`) plus the centre term. Double bonds:
    ``Σ relu(planar_margin - s · cos φ)`` (``|cos φ|`` where ``s = 0``; 0.97 ≈ 14°). Distances:
    ``distance_weight · Σ (relu(lower - d)² + relu(d - upper)²)`` (1-2 and 1-3 distances, and the contact
    lower bounds of farther pairs; Å²). Bridgeheads (:func:`hull_centres`): ``CENTRE_SCALE · Σ relu(hull_margin
    - λ)`` over their barycentric coordinates (:func:`hull_coordinates`), in guidance calls at σ up to
    ``hull_sigma_max`` (Å); ``hull_margin=None`` leaves them out.
    """
    return GuidancePenalty(constraints, margin, planar_margin, distance_weight, chirality, centre_margin,
                           hull_margin=hull_margin, hull_sigma_max=hull_sigma_max)
