import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.validity import ValidityChecker, check_conformer


def embedded(smiles, seed=3):
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    return m


@pytest.mark.parametrize("smiles", ["CC(=O)Nc1ccccc1O", "C/C=C/[C@H](N)C(=O)O", "C1CC2CC1C2"])
def test_good_conformer_passes(smiles):
    res = check_conformer(embedded(smiles))
    assert res.ok, res.failed
    assert res.bond_ratio_worst < 0.1 and res.clash_ratio_min > 0.7


def test_nonfinite():
    m = embedded("CCO")
    pos = m.GetConformer().GetPositions()
    pos[2, 1] = np.nan
    res = ValidityChecker(m)(pos)
    assert not res.finite and not res.ok and "finite" in res.failed


def test_stretched_bond_and_clash():
    m = embedded("CCCCCC")
    checker = ValidityChecker(m)
    pos = m.GetConformer().GetPositions()
    stretched = pos.copy()
    stretched[0] = pos[1] + 1.6 * (pos[0] - pos[1])  # C-C 1.53 -> 2.45 Å
    res = checker(stretched)
    assert not res.bond_lengths and res.bond_ratio_worst > 0.3
    clash = pos.copy()
    clash[5] = pos[0] + 0.3 * (pos[5] - pos[0]) / np.linalg.norm(pos[5] - pos[0])
    res = checker(clash)
    assert not res.no_clash and res.clash_ratio_min < 0.7


def test_bent_angle():
    m = embedded("C#CC")
    pos = m.GetConformer().GetPositions()
    bent = pos.copy()
    # Fold the terminal alkyne carbon back by 90 degrees around atom 1.
    v = pos[0] - pos[1]
    perp = np.cross(v, [0.0, 0.0, 1.0])
    bent[0] = pos[1] + np.linalg.norm(v) * perp / np.linalg.norm(perp)
    assert not ValidityChecker(m)(bent).bond_angles


def test_planarity():
    m = embedded("c1ccccc1")
    pos = m.GetConformer().GetPositions()
    pos[0] += 0.8 * np.cross(pos[1] - pos[0], pos[2] - pos[0]) / np.linalg.norm(
        np.cross(pos[1] - pos[0], pos[2] - pos[0]))
    res = ValidityChecker(m, bond_tolerance=10.0)(pos)
    assert not res.aromatic_planar and res.aromatic_deviation > 0.25
    e = embedded("CC=CC")
    p = e.GetConformer().GetPositions()
    normal = np.cross(p[2] - p[1], p[3] - p[1])
    p[0] += 1.2 * normal / np.linalg.norm(normal)
    res = ValidityChecker(e, bond_tolerance=10.0, clash_factor=0.0)(p)
    assert not res.double_bond_planar and isinstance(res.double_bond_planar, bool)


def test_seven_membered_aromatic_ring_is_not_held_flat():
    """QM9 21770's DFT geometry: RDKit calls its triazepinone ring aromatic, yet it is puckered."""
    mol = Chem.AddHs(Chem.MolFromSmiles("O=c1ncnncn1"))
    assert [a.GetSymbol() for a in mol.GetAtoms()] == ["O", "C", "N", "C", "N", "N", "C", "N", "H", "H"]
    dft = np.array([[-0.0122, 0.2709, -0.7878], [-0.0155, 1.2218, -0.0647], [-1.1886, 1.7991, 0.4815],
                    [-1.4187, 3.0211, 0.2047], [-0.6896, 3.8723, -0.6706], [0.5697, 3.8895, -0.6874],
                    [1.3448, 3.0588, 0.168], [1.1554, 1.831, 0.4503], [-2.3274, 3.4994, 0.569],
                    [2.2494, 3.5618, 0.5082]])
    res = ValidityChecker(mol)(dft)
    assert res.ok, res.failed
    # 5- and 6-membered aromatic rings are still checked (see test_planarity for benzene)
    furan = embedded("c1ccoc1")
    pos = furan.GetConformer().GetPositions()
    normal = np.cross(pos[1] - pos[0], pos[4] - pos[0])
    pos[0] += 0.9 * normal / np.linalg.norm(normal)  # lift one ring atom out of the plane
    assert not ValidityChecker(furan, bond_tolerance=10.0, clash_factor=0.0)(pos).aromatic_planar


def test_stereo_mirror_image_fails():
    m = embedded("N[C@@H](C)C(=O)O")
    checker = ValidityChecker(m)
    pos = m.GetConformer().GetPositions()
    assert checker(pos).stereo
    assert not checker(pos * np.array([-1.0, 1.0, 1.0])).stereo
    # Unspecified input stereo: either enantiomer is fine.
    free = Chem.AddHs(Chem.MolFromSmiles("NC(C)C(=O)O"))
    assert ValidityChecker(free)(pos * np.array([-1.0, 1.0, 1.0])).stereo


def test_double_bond_stereo_fails_when_flipped():
    m = embedded("C/C=C/C")
    z = embedded("C/C=C\\C")
    assert ValidityChecker(m)(m.GetConformer().GetPositions()).stereo
    assert not ValidityChecker(m)(z.GetConformer().GetPositions()).stereo


def test_check_many_shapes():
    m = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMultipleConfs(m, 5, randomSeed=1)
    pos = np.stack([c.GetPositions() for c in m.GetConformers()])
    res = ValidityChecker(m).check_many(pos)
    assert len(res) == 5 and all(r.ok for r in res)
    assert set(res[0].as_dict()) >= {"ok", "stereo", "clash_ratio_min"}
    with pytest.raises(ValueError, match="atoms"):
        ValidityChecker(m).check_many(pos[:, :3])


@pytest.mark.parametrize("index", [129410, 131780])  # N-H...N- at 1.59 A, O-H...O at 1.77 A
def test_short_intramolecular_hydrogen_bonds_of_dft_references_are_not_clashes(index):
    from molediff.data.qm9 import iter_qm9_raw, process_record, qm9pack_data_dir

    try:
        qm9pack_data_dir()
    except FileNotFoundError:  # pragma: no cover
        pytest.skip("qm9pack not installed")
    out = process_record(next(r for r in iter_qm9_raw("test") if r.index == index))
    mol = Chem.Mol(out["mol"].tobytes())
    res = ValidityChecker(mol)(mol.GetConformer().GetPositions())
    assert res.no_clash and res.ok, res.failed


def test_hydrogen_bond_pairs_get_the_hydrogen_bond_contact_distance_and_others_keep_theirs():
    from molediff.chem.validity import HYDROGEN_BOND_CONTACT, contact_bounds, pair_bounds

    mol = embedded("OCCCO")
    atoms = list(mol.GetAtoms())
    iu, ju, lower, _, hops = pair_bounds(mol)
    far = hops >= 4
    vdw = np.array([Chem.GetPeriodicTable().GetRvdw(a.GetAtomicNum()) for a in atoms])
    base = np.minimum(lower[far], vdw[iu[far]] + vdw[ju[far]])  # the contact distance without the rule
    i, j, contact, _ = contact_bounds(mol)

    def polar_h(k):
        return atoms[k].GetAtomicNum() == 1 and atoms[k].GetNeighbors()[0].GetAtomicNum() == 8

    hbond = np.array([(polar_h(int(a)) and atoms[int(b)].GetAtomicNum() == 8)
                      or (polar_h(int(b)) and atoms[int(a)].GetAtomicNum() == 8) for a, b in zip(i, j)])
    assert hbond.any() and (base[hbond] > HYDROGEN_BOND_CONTACT).any()  # the rule changes something here
    np.testing.assert_allclose(contact[hbond], np.minimum(base[hbond], HYDROGEN_BOND_CONTACT))
    np.testing.assert_allclose(contact[~hbond], base[~hbond])  # C-H...O and the rest keep theirs
    pos = mol.GetConformer().GetPositions()
    checker = ValidityChecker(mol)
    assert checker(pos).no_clash
    a, b = int(i[hbond][0]), int(j[hbond][0])
    h, o = (a, b) if polar_h(a) else (b, a)
    pos[h] = pos[o] + 1.3 * (pos[h] - pos[o]) / np.linalg.norm(pos[h] - pos[o])  # 1.3 A from the other O
    assert not checker(pos).no_clash  # still a clash below 0.7 x 2.0 A
