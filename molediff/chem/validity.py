"""PoseBusters-style physical validity checks for generated conformers.

For one molecular graph, :class:`ValidityChecker` precomputes everything that does not depend
on coordinates (RDKit distance-geometry bounds matrix, bonded / 1-3 / non-bonded pairs, planar
groups, the reference stereo) and then checks any number of conformers with vectorised numpy.
Checks (after Buttenschoen et al. 2024, PoseBusters, "intramolecular validity"):

* ``finite``: all coordinates are finite.
* ``bond_lengths``: every bond within [(1 - tol) * lower, (1 + tol) * upper] of the bounds
  matrix (``rdDistGeom.GetMoleculeBoundsMatrix``), tol = 0.25 by default.
* ``bond_angles``: the same for 1-3 distances (angles).
* ``no_clash``: pairs four or more bonds apart (beyond 1-4: RDKit's 1-4 lower bounds assume
  e.g. trans esters, which DFT geometries of QM9 violate) are at least ``clash_factor`` (0.7)
  × their bounds-matrix lower bound (capped at the sum of van der Waals radii, and for a hydrogen
  bond N/O/F-H...N/O/F at :data:`HYDROGEN_BOND_CONTACT`) apart. Unlike PoseBusters, which leaves
  hydrogens out, hydrogens are checked.
* ``aromatic_planar``: atoms of each 5- or 6-membered aromatic ring within 0.25 Å of their
  best-fit plane (PoseBusters' flat systems; RDKit also calls some 7-membered rings such as
  triazepinones aromatic, and their DFT geometries are puckered by 0.3-0.5 Å).
* ``double_bond_planar``: the two sp2 atoms of each non-ring double bond and their neighbours
  within 0.25 Å of their best-fit plane.
* ``stereo``: stereo perceived from 3D (``AssignStereochemistryFrom3D``) reproduces every
  tetrahedral centre and double bond whose stereo the input specifies (compared as canonical
  isomeric SMILES after clearing stereo the input leaves unspecified).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molediff.chem.stereo import check_coords, stereo_reference

__all__ = ["ValidityResult", "ValidityChecker", "check_conformer", "pair_bounds", "contact_bounds",
           "HYDROGEN_BOND_CONTACT"]

_CHECKS = ("finite", "bond_lengths", "bond_angles", "no_clash", "aromatic_planar",
           "double_bond_planar", "stereo")


@dataclass
class ValidityResult:
    """Outcome for one conformer: a boolean per check plus the worst measured values.

    ``bond_ratio_worst`` / ``angle_ratio_worst``: largest relative violation of the bounds
    (0 when inside; 0.1 means 10 % outside); ``clash_ratio_min``: smallest distance /
    lower bound over checked non-bonded pairs; ``*_deviation``: largest out-of-plane distance (Å).
    """

    finite: bool
    bond_lengths: bool
    bond_angles: bool
    no_clash: bool
    aromatic_planar: bool
    double_bond_planar: bool
    stereo: bool
    bond_ratio_worst: float = 0.0
    angle_ratio_worst: float = 0.0
    clash_ratio_min: float = float("inf")
    aromatic_deviation: float = 0.0
    double_bond_deviation: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every check passes."""
        return all(getattr(self, name) for name in _CHECKS)

    @property
    def failed(self) -> list[str]:
        """Names of the failing checks."""
        return [name for name in _CHECKS if not getattr(self, name)]

    def as_dict(self) -> dict:
        return dict(asdict(self), ok=self.ok)


def _pairs_violation(d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Relative violation of [lo, hi] per pair. Shapes: d [K, P], lo/hi [P] -> [K, P]."""
    below = np.clip((lo - d) / lo, 0.0, None)
    above = np.clip((d - hi) / hi, 0.0, None)
    return np.maximum(below, above)


def _plane_deviation(pos: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Max distance to the best-fit plane over all groups. Shapes: pos [K, N, 3] -> [K]."""
    worst = np.zeros(pos.shape[0])
    for idx in groups:
        pts = pos[:, idx]  # [K, g, 3]
        centred = pts - pts.mean(1, keepdims=True)
        # The plane normal is the right singular vector of the smallest singular value.
        _, _, vt = np.linalg.svd(centred)
        normal = vt[:, -1]  # [K, 3]
        dev = np.abs(np.einsum("kgi,ki->kg", centred, normal)).max(1)
        worst = np.maximum(worst, dev)
    return worst


def pair_bounds(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every atom pair ``i < j`` with RDKit's distance-geometry bounds and its bond distance.

    Returns ``(i, j, lower, upper, hops)``, each ``[N (N - 1) / 2]``: the bounds come from
    ``rdDistGeom.GetMoleculeBoundsMatrix`` (Å), ``hops`` from the topological distance matrix.
    """
    bounds = rdDistGeom.GetMoleculeBoundsMatrix(mol)  # upper above, lower below the diagonal
    iu, ju = np.triu_indices(mol.GetNumAtoms(), 1)
    return iu, ju, bounds[ju, iu], bounds[iu, ju], Chem.GetDistanceMatrix(mol)[iu, ju]


#: contact distance (Å) of a hydrogen on N, O or F and an N, O or F atom: a hydrogen bond, not a clash. The
#: shortest such pairs among QM9's DFT geometries are 1.59 Å (a charge-assisted N-H...N-, test index 129410)
#: and 1.67 Å (3,000 validation molecules); with the van der Waals sum (2.7-2.8 Å) as their contact distance
#: the clash check failed those references (0.7 x 2.8 = 1.96 Å).
HYDROGEN_BOND_CONTACT = 2.0

_HBOND_HEAVY = (7, 8, 9)


def contact_bounds(mol: Chem.Mol, bounds: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs four or more bonds apart with their contact distance: ``(i, j, lower, upper)``.

    ``lower`` is the bounds-matrix lower bound capped at the sum of van der Waals radii: bounds of
    1-5+ pairs inside rigid groups encode RDKit's preferred geometry (e.g. trans esters), not contact
    distances. A hydrogen-bond pair (a hydrogen on N, O or F and an N, O or F atom) is capped further at
    :data:`HYDROGEN_BOND_CONTACT`. ``bounds`` is :func:`pair_bounds` of ``mol`` if already computed.
    """
    iu, ju, lower, upper, hop = bounds if bounds is not None else pair_bounds(mol)
    far = hop >= 4
    i4, j4 = iu[far], ju[far]
    table = Chem.GetPeriodicTable()
    atoms = list(mol.GetAtoms())
    vdw = np.array([table.GetRvdw(a.GetAtomicNum()) for a in atoms])
    acceptor = np.array([a.GetAtomicNum() in _HBOND_HEAVY for a in atoms], dtype=bool)
    polar_h = np.array([a.GetAtomicNum() == 1 and any(n.GetAtomicNum() in _HBOND_HEAVY for n in a.GetNeighbors())
                        for a in atoms], dtype=bool)
    contact = np.minimum(lower[far], vdw[i4] + vdw[j4])
    hbond = (polar_h[i4] & acceptor[j4]) | (polar_h[j4] & acceptor[i4])
    contact[hbond] = np.minimum(contact[hbond], HYDROGEN_BOND_CONTACT)
    return i4, j4, contact, upper[far]


class ValidityChecker:
    """Vectorised validity checks for conformers of one molecule.

    Parameters
    ----------
    mol : rdkit.Chem.Mol with explicit hydrogens; its stereo tags are the reference.
    bond_tolerance : relative tolerance on the bounds for bonds and angles (PoseBusters: 0.25)
    clash_factor : a non-bonded pair clashes below ``clash_factor × lower bound``
    planarity_tolerance : Å, for aromatic rings and double bonds
    """

    def __init__(self, mol: Chem.Mol, *, bond_tolerance: float = 0.25, clash_factor: float = 0.7,
                 planarity_tolerance: float = 0.25):
        self.mol = Chem.Mol(mol)
        self.tol, self.clash_factor, self.plane_tol = bond_tolerance, clash_factor, planarity_tolerance
        iu, ju, lower, upper, hop = pair_bounds(self.mol)
        sel = lambda mask: (iu[mask], ju[mask], lower[mask], upper[mask])  # noqa: E731
        self.bonds = sel(hop == 1)
        self.angles = sel(hop == 2)
        self.nonbonded = contact_bounds(self.mol, (iu, ju, lower, upper, hop))
        ri = self.mol.GetRingInfo()
        self.aromatic_groups = [np.array(r) for r in ri.AtomRings() if len(r) in (5, 6)
                                and all(self.mol.GetAtomWithIdx(a).GetIsAromatic() for a in r)]
        self.double_groups = []
        for b in self.mol.GetBonds():
            if b.GetBondType() == Chem.BondType.DOUBLE and not b.IsInRing():
                a1, a2 = b.GetBeginAtom(), b.GetEndAtom()
                idx = {a1.GetIdx(), a2.GetIdx()} | {x.GetIdx() for x in a1.GetNeighbors()} \
                    | {x.GetIdx() for x in a2.GetNeighbors()}
                if len(idx) > 3:
                    self.double_groups.append(np.array(sorted(idx)))
        self._stereo = stereo_reference(self.mol)

    def _stereo_ok(self, pos: np.ndarray) -> bool:
        return check_coords(self._stereo, pos)

    def check_many(self, pos: np.ndarray) -> list[ValidityResult]:
        """Check K conformers. Shapes: pos [K, N, 3] (or [N, 3]) -> K results."""
        pos = np.asarray(pos, dtype=np.float64)
        if pos.ndim == 2:
            pos = pos[None]
        n = self.mol.GetNumAtoms()
        if pos.shape[1:] != (n, 3):
            raise ValueError(f"positions of shape {pos.shape[1:]} for a molecule with {n} atoms")
        finite = np.isfinite(pos).all(axis=(1, 2))
        safe = np.where(finite[:, None, None], pos, 0.0)

        def dist(i, j):
            return np.linalg.norm(safe[:, i] - safe[:, j], axis=-1)  # [K, P]

        def worst(v):
            return v.max(1) if v.shape[1] else np.zeros(len(pos))

        i, j, lo, hi = self.bonds
        bond_v = worst(_pairs_violation(dist(i, j), lo * (1 - self.tol), hi * (1 + self.tol)))
        bond_r = worst(_pairs_violation(dist(i, j), lo, hi))
        i, j, lo, hi = self.angles
        ang_v = worst(_pairs_violation(dist(i, j), lo * (1 - self.tol), hi * (1 + self.tol)))
        ang_r = worst(_pairs_violation(dist(i, j), lo, hi))
        i, j, lo, _ = self.nonbonded
        clash = (dist(i, j) / lo).min(1) if i.size else np.full(len(pos), np.inf)
        arom = _plane_deviation(safe, self.aromatic_groups)
        dbl = _plane_deviation(safe, self.double_groups)
        results = []
        for k in range(len(pos)):
            f = bool(finite[k])
            results.append(ValidityResult(
                finite=f, bond_lengths=f and bool(bond_v[k] == 0),
                bond_angles=f and bool(ang_v[k] == 0),
                no_clash=f and bool(clash[k] >= self.clash_factor),
                aromatic_planar=f and bool(arom[k] <= self.plane_tol),
                double_bond_planar=f and bool(dbl[k] <= self.plane_tol),
                stereo=f and self._stereo_ok(pos[k]),
                bond_ratio_worst=float(bond_r[k]), angle_ratio_worst=float(ang_r[k]),
                clash_ratio_min=float(clash[k]), aromatic_deviation=float(arom[k]),
                double_bond_deviation=float(dbl[k])))
        return results

    def __call__(self, pos: np.ndarray) -> ValidityResult:
        """Check one conformer. Shapes: pos [N, 3]."""
        return self.check_many(np.asarray(pos)[None])[0]


def check_conformer(mol: Chem.Mol, conf_id: int = -1, **kwargs) -> ValidityResult:
    """Check conformer ``conf_id`` of ``mol`` against ``mol``'s own graph and stereo."""
    pos = mol.GetConformer(conf_id).GetPositions()
    return ValidityChecker(mol, **kwargs)(pos)
