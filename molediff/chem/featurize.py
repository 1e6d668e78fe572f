"""Molecular graph featurisation for the conformer generator.

A molecule *with explicit hydrogens* becomes a :class:`MolGraph`: atomic numbers, per-atom
one-hot / flag features, and the GeoDiff-style *extended* graph (bonds plus 2-hop and 3-hop
pairs by shortest topological path, both directions, no self loops) with per-edge features.

Node features (``NODE_FEATURE_DIM`` = 29 for the default element set), in this order:

===========  =====  =========================================================================
block        width  meaning
===========  =====  =========================================================================
element      len(E) one-hot over ``elements`` (default ``ELEMENTS = ("H","C","N","O","F")``)
charge       3      formal charge one-hot (-1, 0, +1); other charges raise
aromatic     1      atom is aromatic
hybrid       4      SP, SP2, SP3, other
in_ring      1      atom is in any ring
ring_size    6      atom is in a ring of size 3, 4, 5, 6, 7, 8 (SSSR rings)
degree       5      total degree (heavy + H neighbours) one-hot 0..4 (4 means >= 4)
stereo       1      atom carries a tetrahedral stereo tag (chiral centre with defined configuration)
cip          3      CIP label R, S, none
===========  =====  =========================================================================

Every node and edge feature is 0/1, so the features can be stored as ``uint8`` (as
:class:`molediff.data.packed.PackedGraphs` does) without loss.

Chirality choice: RDKit's ``CHI_TETRAHEDRAL_CW/CCW`` tags are defined relative to the order of
the atom's bonds in the ``Mol``, so the same molecule renumbered gets different tags. Such a
feature is not a property of the molecule and an SE(3) network cannot interpret it. We
therefore encode a "has defined tetrahedral stereo" flag plus the *CIP label* (R/S, RDKit's
legacy CIP assignment), which is invariant to renumbering and determines the handedness
the generated geometry must have up to the neighbours' priority order, which the network can
infer from their elements and environment; stereo of the generated conformer is in any case
checked against the input afterwards (:mod:`molediff.chem.validity`).

Edge features (``EDGE_FEATURE_DIM`` = 10): bond type one-hot (single, double, triple, aromatic;
all zero for non-bonded pairs), 2-hop flag, 3-hop flag, double-bond stereo one-hot (E, Z, none;
"none" for every non-stereo edge), bond-in-ring flag.

The input must already carry explicit hydrogens (``Chem.AddHs``); otherwise
:class:`ImplicitHydrogenError` is raised, because atom indices of the graph must coincide with
the rows of the coordinates the model generates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.errors import FeaturizationError, UnsupportedElementError

__all__ = [
    "ELEMENTS",
    "FEATURIZER_VERSION",
    "NODE_FEATURE_DIM",
    "EDGE_FEATURE_DIM",
    "FeaturizationError",
    "UnsupportedElementError",
    "ImplicitHydrogenError",
    "MolGraph",
    "MolBatch",
    "featurize",
    "featurize_batch",
    "collate",
    "node_feature_dim",
]

FEATURIZER_VERSION = "feat-v2"
ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")

_CHARGES = (-1, 0, 1)
_HYBRID = {
    Chem.HybridizationType.SP: 0,
    Chem.HybridizationType.SP2: 1,
    Chem.HybridizationType.SP3: 2,
}
_RING_SIZES = (3, 4, 5, 6, 7, 8)
_MAX_DEGREE = 4
_N_OTHER = len(_CHARGES) + 1 + 4 + 1 + len(_RING_SIZES) + (_MAX_DEGREE + 1) + 1 + 3

_BOND_TYPES = {
    Chem.BondType.SINGLE: 0,
    Chem.BondType.DOUBLE: 1,
    Chem.BondType.TRIPLE: 2,
    Chem.BondType.AROMATIC: 3,
}
EDGE_FEATURE_DIM = 10
_E_HOP2, _E_HOP3, _E_STEREO_E, _E_STEREO_Z, _E_STEREO_NONE, _E_RING = 4, 5, 6, 7, 8, 9


def node_feature_dim(elements: Sequence[str] = ELEMENTS) -> int:
    """Width of ``node_attr`` for a given element vocabulary."""
    return len(elements) + _N_OTHER


NODE_FEATURE_DIM = node_feature_dim(ELEMENTS)


class ImplicitHydrogenError(FeaturizationError):
    """The molecule has implicit hydrogens; call ``Chem.AddHs`` first."""


@dataclass
class MolGraph:
    """Featurised molecule (one graph).

    Shapes
    ------
    z : [N] long, atomic numbers. node_attr : [N, F] float32. edge_index : [2, E] long
    (extended graph, both directions). edge_attr : [E, F_e] float32. pos : [N, 3] float32 or None
    (conformer 0 if the molecule has one).
    """

    z: torch.Tensor
    node_attr: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    pos: torch.Tensor | None = None
    smiles: str = ""

    @property
    def num_nodes(self) -> int:
        return int(self.z.shape[0])

    @property
    def bond_mask(self) -> torch.Tensor:
        """[E] bool: edges that are covalent bonds (not 2-/3-hop pairs)."""
        return self.edge_attr[:, :4].sum(-1) > 0

    @property
    def bond_edge_index(self) -> torch.Tensor:
        """[2, B] edges of the bond graph only (both directions)."""
        return self.edge_index[:, self.bond_mask]

    def to_pyg(self):
        """Return a ``torch_geometric.data.Data`` with ``x=node_attr`` and the same fields."""
        from torch_geometric.data import Data

        return Data(x=self.node_attr, z=self.z, edge_index=self.edge_index,
                    edge_attr=self.edge_attr, pos=self.pos, num_nodes=self.num_nodes)


@dataclass
class MolBatch:
    """Several :class:`MolGraph` collated into one disconnected graph (PyG convention).

    Shapes
    ------
    z : [N]; node_attr : [N, F]; edge_index : [2, E] (with node offsets); edge_attr : [E, F_e];
    batch : [N] long, sorted graph index; ptr : [B + 1] node offsets; pos : [N, 3] or None.
    """

    z: torch.Tensor
    node_attr: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    pos: torch.Tensor | None = None
    smiles: list[str] = field(default_factory=list)

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    def to(self, device) -> "MolBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return MolBatch(move(self.z), move(self.node_attr), move(self.edge_index),
                        move(self.edge_attr), move(self.batch), move(self.ptr),
                        move(self.pos), list(self.smiles))


def _mol_name(mol: Chem.Mol) -> str:
    if mol.HasProp("_Name") and mol.GetProp("_Name"):
        return mol.GetProp("_Name")
    try:
        return Chem.MolToSmiles(mol)
    except Exception:  # pragma: no cover - name is only for messages
        return "<unnamed>"


def _ensure_stereo(mol: Chem.Mol) -> Chem.Mol:
    """Copy with legacy CIP codes/ranks (and E/Z bond stereo) assigned."""
    m = Chem.Mol(mol)
    Chem.AssignStereochemistry(m, cleanIt=True, force=True)
    return m


def featurize(mol: Chem.Mol, elements: Sequence[str] = ELEMENTS) -> MolGraph:
    """Featurise a molecule with explicit hydrogens.

    Parameters
    ----------
    mol : rdkit.Chem.Mol
        Sanitised molecule whose hydrogens are explicit atoms (``Chem.AddHs``). Stereo tags
        present on the molecule (e.g. from ``AssignStereochemistryFrom3D``) are used.
    elements : sequence of str
        Element vocabulary for the one-hot block.

    Returns
    -------
    MolGraph

    Raises
    ------
    ImplicitHydrogenError, UnsupportedElementError, FeaturizationError
    """
    name = _mol_name(mol)
    n = mol.GetNumAtoms()
    if n == 0:
        raise FeaturizationError("molecule has no atoms", item=name)
    elem_index = {e: i for i, e in enumerate(elements)}
    ne = len(elements)
    m = _ensure_stereo(mol)

    x = np.zeros((n, node_feature_dim(elements)), dtype=np.float32)
    z = np.empty(n, dtype=np.int64)
    o_charge = ne
    o_arom = o_charge + 3
    o_hyb = o_arom + 1
    o_ring = o_hyb + 4
    o_rsize = o_ring + 1
    o_deg = o_rsize + len(_RING_SIZES)
    o_stereo = o_deg + _MAX_DEGREE + 1
    o_cip = o_stereo + 1
    for atom in m.GetAtoms():
        i = atom.GetIdx()
        if atom.GetNumImplicitHs() or atom.GetNumExplicitHs():
            raise ImplicitHydrogenError(
                f"atom {i} ({atom.GetSymbol()}) has implicit hydrogens; featurize() needs "
                "explicit H atoms: call Chem.AddHs(mol) first", item=name)
        sym = atom.GetSymbol()
        k = elem_index.get(sym)
        if k is None:
            raise UnsupportedElementError(sym, i, elements, name)
        z[i] = atom.GetAtomicNum()
        x[i, k] = 1.0
        charge = atom.GetFormalCharge()
        if charge not in _CHARGES:
            raise FeaturizationError(
                f"atom {i} has formal charge {charge:+d}; supported: -1, 0, +1", item=name)
        x[i, o_charge + charge + 1] = 1.0
        x[i, o_arom] = atom.GetIsAromatic()
        x[i, o_hyb + _HYBRID.get(atom.GetHybridization(), 3)] = 1.0
        x[i, o_deg + min(atom.GetDegree(), _MAX_DEGREE)] = 1.0
        if atom.GetChiralTag() in (Chem.ChiralType.CHI_TETRAHEDRAL_CW,
                                   Chem.ChiralType.CHI_TETRAHEDRAL_CCW):
            x[i, o_stereo] = 1.0
        cip = atom.GetProp("_CIPCode") if atom.HasProp("_CIPCode") else ""
        x[i, o_cip + {"R": 0, "S": 1}.get(cip, 2)] = 1.0

    ring_info = m.GetRingInfo()
    for ring in ring_info.AtomRings():
        idx = np.fromiter(ring, dtype=np.int64)
        x[idx, o_ring] = 1.0
        if len(ring) in _RING_SIZES:
            x[idx, o_rsize + _RING_SIZES.index(len(ring))] = 1.0

    # Extended graph from the topological (shortest-path) distance matrix.
    dist = Chem.GetDistanceMatrix(m)
    src, dst = np.nonzero((dist > 0) & (dist <= 3))
    hop = dist[src, dst].astype(np.int64)
    e_attr = np.zeros((src.size, EDGE_FEATURE_DIM), dtype=np.float32)
    e_attr[hop == 2, _E_HOP2] = 1.0
    e_attr[hop == 3, _E_HOP3] = 1.0
    e_attr[:, _E_STEREO_NONE] = 1.0
    if m.GetNumBonds():
        # Lookup table from (i, j) to edge row, filled for bonded pairs only.
        row = np.full((n, n), -1, dtype=np.int64)
        row[src, dst] = np.arange(src.size)
        for bond in m.GetBonds():
            a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            rows = [row[a, b], row[b, a]]
            bt = _BOND_TYPES.get(bond.GetBondType())
            if bt is None:
                raise FeaturizationError(
                    f"bond {bond.GetIdx()} has unsupported type {bond.GetBondType()}", item=name)
            e_attr[rows, bt] = 1.0
            st = bond.GetStereo()
            if st in (Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOTRANS):
                e_attr[rows, _E_STEREO_E] = 1.0
                e_attr[rows, _E_STEREO_NONE] = 0.0
            elif st in (Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOCIS):
                e_attr[rows, _E_STEREO_Z] = 1.0
                e_attr[rows, _E_STEREO_NONE] = 0.0
            e_attr[rows, _E_RING] = float(bond.IsInRing())

    pos = None
    if mol.GetNumConformers():
        pos = torch.from_numpy(np.asarray(mol.GetConformer().GetPositions(), dtype=np.float32))
    return MolGraph(
        z=torch.from_numpy(z),
        node_attr=torch.from_numpy(x),
        edge_index=torch.from_numpy(np.stack([src, dst]).astype(np.int64)),
        edge_attr=torch.from_numpy(e_attr),
        pos=pos,
        smiles=name,
    )


def collate(graphs: Sequence[MolGraph]) -> MolBatch:
    """Concatenate graphs into a :class:`MolBatch`, offsetting ``edge_index`` by node counts."""
    if not graphs:
        raise ValueError("collate() needs at least one graph")
    sizes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(sizes, 0)
    edge_counts = torch.tensor([g.edge_index.shape[1] for g in graphs], dtype=torch.long)
    offsets = torch.repeat_interleave(ptr[:-1], edge_counts)
    has_pos = all(g.pos is not None for g in graphs)
    return MolBatch(
        z=torch.cat([g.z for g in graphs]),
        node_attr=torch.cat([g.node_attr for g in graphs]),
        edge_index=torch.cat([g.edge_index for g in graphs], dim=1) + offsets,
        edge_attr=torch.cat([g.edge_attr for g in graphs]),
        batch=torch.repeat_interleave(torch.arange(len(graphs)), sizes),
        ptr=ptr,
        pos=torch.cat([g.pos for g in graphs]) if has_pos else None,
        smiles=[g.smiles for g in graphs],
    )


def featurize_batch(mols: Sequence[Chem.Mol], elements: Sequence[str] = ELEMENTS) -> MolBatch:
    """Featurise and collate several molecules (see :func:`featurize`, :func:`collate`)."""
    return collate([featurize(m, elements) for m in mols])
