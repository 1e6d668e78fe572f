import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.bonds import GeometryMismatchError, check_bond_lengths, map_geometry_to_mol


def embedded(smiles, seed=0):
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(m, randomSeed=seed)
    return m


def shuffled_xyz(m, seed=0):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(m.GetNumAtoms())
    pos = m.GetConformer().GetPositions()[perm]
    symbols = [m.GetAtomWithIdx(int(i)).GetSymbol() for i in perm]
    return symbols, pos


@pytest.mark.parametrize("smiles", ["CC(=O)Nc1ccccc1", "OC1CC1OC1COC1", "C[NH3+]"])
def test_recovers_permutation(smiles):
    m = embedded(smiles)
    symbols, pos = shuffled_xyz(m)
    out, _ = map_geometry_to_mol(Chem.Mol(m), symbols, pos, name=smiles)
    ref = m.GetConformer().GetPositions()
    # The mapping may differ by a graph automorphism (e.g. equivalent H), never in geometry.
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    d_out = np.linalg.norm(out[:, None] - out[None], axis=-1)
    for b in m.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        assert abs(d_out[i, j] - d_ref[i, j]) < 0.05
    heavy = [a.GetIdx() for a in m.GetAtoms() if a.GetAtomicNum() > 1]
    assert np.allclose(np.sort(d_out[np.ix_(heavy, heavy)].ravel()),
                       np.sort(d_ref[np.ix_(heavy, heavy)].ravel()), atol=1e-6)
    assert not check_bond_lengths(m, out)


def test_rejects_swapped_heavy_atoms():
    m = embedded("CC(=O)NC")
    symbols, pos = shuffled_xyz(m)
    i, j = symbols.index("O"), symbols.index("N")
    pos[[i, j]] = pos[[j, i]]
    with pytest.raises(GeometryMismatchError) as info:
        map_geometry_to_mol(m, symbols, pos, name="swap")
    assert info.value.reason == "connectivity" and "swap" in str(info.value)


def test_rejects_other_molecule_same_formula():
    propanol, methoxyethane = embedded("CCCO"), embedded("CCOC")
    symbols, pos = shuffled_xyz(methoxyethane)
    with pytest.raises(GeometryMismatchError, match="not isomorphic"):
        map_geometry_to_mol(propanol, symbols, pos)


def test_rejects_count_composition_nonfinite():
    m = embedded("CCO")
    symbols, pos = shuffled_xyz(m)
    with pytest.raises(GeometryMismatchError) as e1:
        map_geometry_to_mol(Chem.RemoveHs(m), symbols, pos)
    assert e1.value.reason == "atom_count"
    bad = ["N" if s == "O" else s for s in symbols]
    with pytest.raises(GeometryMismatchError) as e2:
        map_geometry_to_mol(m, bad, pos)
    assert e2.value.reason == "composition"
    pos[0, 0] = np.nan
    with pytest.raises(GeometryMismatchError) as e3:
        map_geometry_to_mol(m, symbols, pos)
    assert e3.value.reason == "nonfinite"


def test_stretched_bond_is_rejected():
    m = embedded("C#C")
    pos = m.GetConformer().GetPositions()
    assert not check_bond_lengths(m, pos)
    pos[1] += 3 * (pos[1] - pos[0])
    assert check_bond_lengths(m, pos)
