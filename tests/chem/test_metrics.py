import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem
from scipy.spatial.transform import Rotation

from molediff.chem.metrics import (
    best_rmsd, conformer_metrics, coverage_matching, min_rmsd_to_reference, rmsd_matrix)


def embedded(smiles, n=1, seed=7):
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(m, n, randomSeed=seed)
    return m


def with_positions(mol, pos):
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    for i, p in enumerate(pos):
        conf.SetAtomPosition(i, p.tolist())
    m.AddConformer(conf, assignId=True)
    return m


def test_identity_and_rigid_motion():
    ref = embedded("CC(=O)Nc1ccccc1O")
    assert best_rmsd(ref, ref) < 1e-6
    pos = ref.GetConformer().GetPositions()
    moved = pos @ Rotation.random(random_state=0).as_matrix().T + np.array([3.0, -2.0, 7.0])
    assert best_rmsd(with_positions(ref, moved), ref) < 1e-5
    # Inputs are not modified by the alignment.
    assert np.allclose(with_positions(ref, moved).GetConformer().GetPositions(), moved)


def test_symmetric_permutation_is_zero():
    ref = embedded("CC(C)(C)O")  # tert-butanol: three equivalent methyls
    pos = ref.GetConformer().GetPositions().copy()
    pos[[0, 2]] = pos[[2, 0]]  # swap two methyl carbons (heavy-atom graph automorphism)
    probe = with_positions(ref, pos)
    assert best_rmsd(probe, ref) < 1e-6
    naive = np.sqrt(np.mean(np.sum((pos[:5] - ref.GetConformer().GetPositions()[:5]) ** 2, 1)))
    assert naive > 0.5


def test_carboxylate_oxygens_are_symmetric():
    ref = embedded("CC(=O)[O-]")
    pos = ref.GetConformer().GetPositions().copy()
    pos[[2, 3]] = pos[[3, 2]]
    assert best_rmsd(with_positions(ref, pos), ref) < 1e-6


def test_bond_orders_break_false_symmetry():
    """A =CH2 is not a -CH3 and a ring C=C is not a ring C-C: swapping them is not a symmetry."""
    ref = embedded("C=C(C)C")  # isobutylene: heavy atoms 0 (=CH2), 1, 2 (CH3), 3 (CH3)
    AllChem.MMFFOptimizeMolecule(ref)
    pos = ref.GetConformer().GetPositions().copy()
    pos[[0, 2]] = pos[[2, 0]]  # put the methylene where a methyl was: C=C 1.50 Å, C-C 1.33 Å
    probe = with_positions(ref, pos)
    got = best_rmsd(probe, ref)
    assert got > 0.03  # the two bond lengths differ by ~0.17 Å; element-only maps gave 0
    # Independently: plain Kabsch RMSD over the heavy atoms in the graph's own order, minimised
    # over the true symmetry (the two methyls 2 <-> 3).
    heavy = [0, 1, 2, 3]
    want = min(_kabsch_rmsd(pos[heavy], ref.GetConformer().GetPositions()[perm]) for perm in ([0, 1, 2, 3], [0, 1, 3, 2]))
    assert np.isclose(got, want, atol=1e-6)
    # A ring double bond: two half-chair cyclohexene conformers are not made equal by rotating the ring.
    a, b = embedded("C1=CCCCC1", seed=1), embedded("C1=CCCCC1", seed=2)
    ha = [i for i in range(a.GetNumAtoms()) if a.GetAtomWithIdx(i).GetAtomicNum() > 1]
    pa, pb = a.GetConformer().GetPositions()[ha], b.GetConformer().GetPositions()[ha]
    # the symmetry of cyclohexene's graph with bond orders: identity and the mirror 0<->1, 2<->5, 3<->4
    want = min(_kabsch_rmsd(pb[perm], pa) for perm in ([0, 1, 2, 3, 4, 5], [1, 0, 5, 4, 3, 2]))
    assert np.isclose(best_rmsd(b, a), want, atol=1e-6)


def test_conjugated_terminal_groups_and_atom_order():
    ref = embedded("CC(=O)O")  # carboxylic acid oxygens are symmetrised (RDKit's default)
    pos = ref.GetConformer().GetPositions().copy()
    pos[[2, 3]] = pos[[3, 2]]
    assert best_rmsd(with_positions(ref, pos), ref) < 1e-6
    # a renumbered probe gives the same RMSD as the original order
    ref = embedded("CC(=O)Nc1ccccc1O", seed=1)
    gen = embedded("CC(=O)Nc1ccccc1O", seed=3)
    order = list(range(gen.GetNumAtoms()))[::-1]
    assert np.isclose(best_rmsd(Chem.RenumberAtoms(gen, order), ref), best_rmsd(gen, ref), atol=1e-6)


def test_heavy_atom_rmsd_ignores_stereo_defining_hydrogens():
    """RDKit's RemoveHs keeps the H of an imine with E/Z set; a heavy-atom RMSD must not see it."""
    ref = embedded("CC(=N)N")
    Chem.AssignStereochemistryFrom3D(ref)  # as the QM9 loader does: the C=N-H configuration is set
    imine_h = [a.GetIdx() for a in ref.GetAtoms()
               if a.GetAtomicNum() == 1 and a.GetNeighbors()[0].GetIdx() == 2]
    assert len(imine_h) == 1
    pos = ref.GetConformer().GetPositions().copy()
    pos[imine_h[0]] += [1.0, 0.5, -0.5]  # only a hydrogen moves
    assert best_rmsd(with_positions(ref, pos), ref) < 1e-6
    assert rmsd_matrix(with_positions(ref, pos), ref, heavy_atoms_only=False)[0, 0] > 0.05


def _kabsch_rmsd(p, q):
    """RMSD of p onto q after optimal rotation + translation (no reflection)."""
    p, q = p - p.mean(0), q - q.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((p @ rot - q) ** 2, 1))))


def test_known_perturbation():
    ref = embedded("C#CC#N")  # linear, no symmetry among heavy atoms
    pos = ref.GetConformer().GetPositions().copy()
    heavy = [a.GetIdx() for a in ref.GetAtoms() if a.GetAtomicNum() > 1]
    pos[heavy[0]] += [0.0, 0.0, 0.0]
    rng = np.random.default_rng(0)
    delta = rng.normal(size=(len(heavy), 3))
    delta -= delta.mean(0)
    pert = pos.copy()
    pert[heavy] += 0.05 * delta
    got = best_rmsd(with_positions(ref, pert), ref)
    upper = np.sqrt(np.mean(np.sum((0.05 * delta) ** 2, 1)))  # alignment can only lower it
    assert 0.3 * upper < got <= upper + 1e-9


def test_matrix_and_min():
    ref = embedded("CCCCO", n=1, seed=1)
    gen = embedded("CCCCO", n=4, seed=2)
    d = rmsd_matrix(gen, ref)
    assert d.shape == (4, 1) and (d >= 0).all()
    best, all_ = min_rmsd_to_reference(gen, ref)
    assert np.isclose(best, d.min()) and np.allclose(all_, d[:, 0])
    assert min_rmsd_to_reference(Chem.AddHs(Chem.MolFromSmiles("CCCCO")), ref)[0] == np.inf
    with pytest.raises(ValueError, match="same molecular graph"):
        rmsd_matrix(embedded("CCOCC"), ref)


def test_an_isotope_label_mismatch_is_named_as_such():
    """[13CH3]CO against CCO was reported as a bond-order or charge mismatch."""
    with pytest.raises(ValueError, match="isotope labels.*13C") as info:
        rmsd_matrix(embedded("[13CH3]CO"), embedded("CCO"))
    assert "bond orders" not in str(info.value)
    assert rmsd_matrix(embedded("[13CH3]CO"), embedded("[13CH3]CO", seed=3)).shape == (1, 1)


def test_aggregates():
    m = conformer_metrics([np.array([0.05, 0.3]), np.array([0.4, 0.2]), np.array([])])
    assert m["num_molecules"] == 3 and m["failed_molecules"] == 1
    assert np.isclose(m["mean_min_rmsd"], 0.125) and np.isclose(m["mean_rmsd"], 0.2375)
    assert np.isclose(m["coverage@0.1"], 1 / 3) and np.isclose(m["coverage@0.25"], 2 / 3)
    d = np.array([[0.1, 0.9], [0.3, 2.0], [1.5, 1.6]])  # 3 generated x 2 references
    out = coverage_matching([d], thresholds=[0.5, 1.0])
    assert np.allclose(out["cov_r_mean"], [0.5, 1.0]) and np.allclose(out["cov_p_mean"], [2 / 3, 2 / 3])
    assert np.isclose(out["amr_r_mean"], (0.1 + 0.9) / 2)
    assert np.isclose(out["amr_p_mean"], (0.1 + 0.3 + 1.5) / 3)
    missing = coverage_matching([d, np.zeros((0, 2))], thresholds=[0.5, 1.0])  # one molecule without conformers
    assert missing["molecules"] == 2 and missing["molecules_with_conformers"] == 1
    assert np.allclose(missing["cov_r_mean"], [0.25, 0.5]) and np.isinf(missing["amr_r_mean"])
    assert np.allclose(missing["cov_p_mean"], out["cov_p_mean"])  # precision: over the molecule with conformers


def test_non_finite_coordinates_are_an_error_not_a_huge_rmsd():
    ref = embedded("CCO")
    pos = ref.GetConformer().GetPositions()
    pos[1, 0] = np.nan
    bad = with_positions(ref, pos)
    with pytest.raises(ValueError, match="probe conformer 0.*non-finite"):  # was 1.3e154 Å, silently
        rmsd_matrix(bad, ref)
    with pytest.raises(ValueError, match="reference conformer 0.*non-finite"):
        best_rmsd(ref, bad)
