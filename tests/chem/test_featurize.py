import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.errors import MolediffInputError
from molediff.chem.featurize import (
    EDGE_FEATURE_DIM, ELEMENTS, FEATURIZER_VERSION, NODE_FEATURE_DIM, ImplicitHydrogenError,
    UnsupportedElementError, collate, featurize, featurize_batch, node_feature_dim)

E = len(ELEMENTS)
O_CHARGE, O_AROM, O_HYB, O_RING, O_RSIZE = E, E + 3, E + 4, E + 8, E + 9
O_DEG, O_STEREO, O_CIP = E + 15, E + 20, E + 21


def mol(smiles):
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def test_dims_and_dtypes():
    g = featurize(mol("CCO"))
    assert NODE_FEATURE_DIM == node_feature_dim() == 29 and EDGE_FEATURE_DIM == 10
    assert isinstance(FEATURIZER_VERSION, str)
    assert g.z.dtype == torch.long and g.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert g.node_attr.shape == (9, NODE_FEATURE_DIM) and g.node_attr.dtype == torch.float32
    assert g.edge_attr.shape == (g.edge_index.shape[1], EDGE_FEATURE_DIM)
    assert set(g.node_attr.unique().tolist()) <= {0.0, 1.0}
    assert set(g.edge_attr.unique().tolist()) <= {0.0, 1.0}
    assert g.pos is None


def test_extended_graph_matches_topological_distance():
    m = mol("CC(=O)Nc1ccccc1")
    g = featurize(m)
    dist = Chem.GetDistanceMatrix(m)
    src, dst = g.edge_index.numpy()
    assert (src != dst).all()
    expected = {(i, j) for i, j in zip(*np.nonzero((dist > 0) & (dist <= 3)))}
    assert set(zip(src.tolist(), dst.tolist())) == expected
    hop = dist[src, dst]
    ea = g.edge_attr.numpy()
    assert (ea[:, :4].sum(1) == (hop == 1)).all()
    assert (ea[:, 4] == (hop == 2)).all() and (ea[:, 5] == (hop == 3)).all()
    # Undirected: every edge has its reverse with the same features.
    rev = {(i, j): k for k, (i, j) in enumerate(zip(src, dst))}
    for k, (i, j) in enumerate(zip(src, dst)):
        assert (ea[rev[(j, i)]] == ea[k]).all()
    aromatic = [k for k in range(len(src)) if ea[k, 3]]
    assert len(aromatic) == 12 and all(ea[k, 9] for k in aromatic)


def test_atom_flags():
    g = featurize(mol("C[NH3+].[O-]C(=O)c1ccccc1"))
    x = g.node_attr
    assert x[1, O_CHARGE + 2] == 1 and x[2, O_CHARGE] == 1 and x[0, O_CHARGE + 1] == 1
    assert x[5, O_AROM] == 1 and x[5, O_HYB + 1] == 1 and x[5, O_RSIZE + 3] == 1
    assert x[0, O_HYB + 2] == 1 and x[0, O_RING] == 0 and x[0, O_DEG + 4] == 1
    g3 = featurize(mol("C1CC1"))
    assert (g3.node_attr[:3, O_RSIZE] == 1).all()


def test_cip_and_double_bond_stereo():
    r = featurize(mol("N[C@@H](C)C(=O)O")).node_attr  # L-alanine: S
    s = featurize(mol("N[C@H](C)C(=O)O")).node_attr
    assert r[1, O_STEREO] == 1 and r[1, O_CIP + 1] == 1 and s[1, O_CIP] == 1
    assert featurize(mol("NC(C)C(=O)O")).node_attr[1, O_CIP + 2] == 1
    e = featurize(mol("C/C=C/C"))
    z = featurize(mol("C/C=C\\C"))
    dbl = e.edge_attr[:, 1] == 1
    assert (e.edge_attr[dbl, 6] == 1).all() and (z.edge_attr[z.edge_attr[:, 1] == 1, 7] == 1).all()
    assert (e.edge_attr[~dbl, 8] == 1).all()


def test_cip_label_invariant_to_renumbering():
    m = mol("N[C@@H](C)C(=O)O")
    g = featurize(m)
    perm = list(range(m.GetNumAtoms()))[::-1]
    g2 = featurize(Chem.RenumberAtoms(m, perm))
    assert torch.equal(g2.node_attr, g.node_attr[perm])


def test_errors():
    with pytest.raises(ImplicitHydrogenError, match="AddHs"):
        featurize(Chem.MolFromSmiles("CCO"))
    with pytest.raises(UnsupportedElementError) as info:
        featurize(mol("CCCl"))
    err = info.value
    assert err.element == "Cl" and err.atom_index == 2 and "H, C, N, O, F" in str(err)
    assert isinstance(err, (ValueError, MolediffInputError))
    g = featurize(mol("CCCl"), elements=ELEMENTS + ("Cl",))
    assert g.node_attr.shape[1] == NODE_FEATURE_DIM + 1


def test_positions_and_batch():
    m = mol("CCO")
    AllChem.EmbedMolecule(m, randomSeed=1)
    g = featurize(m)
    assert torch.allclose(g.pos.double(), torch.from_numpy(m.GetConformer().GetPositions()), atol=1e-6)
    b = featurize_batch([m, mol("C#N"), m])
    assert b.num_graphs == 3 and b.ptr.tolist() == [0, 9, 12, 21]
    assert b.batch.tolist() == [0] * 9 + [1] * 3 + [2] * 9
    assert b.pos is None  # one graph without conformer
    n = b.edge_index.shape[1]
    e1 = g.edge_index.shape[1]
    assert torch.equal(b.edge_index[:, n - e1:], g.edge_index + 12)
    assert (b.batch[b.edge_index[0]] == b.batch[b.edge_index[1]]).all()
    with pytest.raises(ValueError):
        collate([])
    data = g.to_pyg()
    assert data.num_nodes == 9 and data.x.shape == (9, NODE_FEATURE_DIM)
    assert g.bond_edge_index.shape[1] == 2 * m.GetNumBonds()
