"""Stereo guidance: sign conventions against RDKit, the penalty's terms, and guided sampling of the shipped model."""

import dataclasses

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.stereo import check_coords, stereo_reference
from molediff.chem.stereo_guidance import (CHIRALITY_TERMS, GuidanceConstraints, aromatic_ring_dihedrals,
                                           chirality_cosines, dihedral_cosines,
                                           double_bond_constraints, guidance_constraints, guidance_penalty,
                                           hull_centres, hull_coordinates, signed_volumes)

CHIRAL = ["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "C[C@@H]1C[C@H](O)[C@@H](C)O1", "O[C@H]1CC[C@@H](F)CC1",
          "C[C@]12CC[C@H](C1)C2(C)C", "N[C@@H](CO)[C@H](C)O"]


def _embedded(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    return mol


@pytest.mark.parametrize("smiles", CHIRAL)
def test_sign_of_the_volume_matches_the_chiral_tag(smiles):
    """ETKDG honours chirality tags; T's sign must then equal the tag's sign, and flip in the mirror image."""
    mol = _embedded(smiles)
    cons = guidance_constraints(mol)
    assert len(cons.quads) == sum(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms())
    pos = torch.tensor(mol.GetConformer().GetPositions())
    assert torch.equal(torch.sign(signed_volumes(pos, cons.quads)), cons.signs.double())
    assert torch.equal(torch.sign(signed_volumes(-pos, cons.quads)), -cons.signs.double())
    assert cons.centres.tolist() == [a.GetIdx() for a in mol.GetAtoms() if a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED]
    cos = chirality_cosines(pos, cons.centres, cons.quads)  # RDKit's criterion: negative for CW
    assert torch.equal(torch.sign(cos), -cons.signs.double()) and torch.all(cos.abs() > 0.5)
    assert torch.equal(chirality_cosines(-pos, cons.centres, cons.quads), -cos)


def _inverted_centre() -> Chem.Mol:
    """CFClBrI with the carbon below all four neighbours: outside their tetrahedron, as at a strained
    bridgehead (QM9 has such centres in housanes and propellane-like cages)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("FC(Cl)(Br)I"))
    pos = np.array([[1.4, 0.0, 0.35], [0.0, 0.0, 0.0], [-0.9, 1.5, 0.35], [-0.9, -1.5, 0.35], [0.0, 0.0, 2.0]])
    conf = Chem.Conformer(5)
    conf.SetPositions(pos)
    conf.Set3D(True)
    mol.AddConformer(conf)
    Chem.AssignStereochemistryFrom3D(mol)
    assert mol.GetAtomWithIdx(1).GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED
    return mol


def test_only_centres_fused_into_small_rings_count_as_invertible():
    cage = guidance_constraints(Chem.AddHs(Chem.MolFromSmiles("C1C[C@]23C[C@]2(O1)[C@H]1O[C@H]13")))  # QM9 37121
    assert cage.invertible.tolist() == [True, True, False, False]  # the two cyclopropane/oxetane bridgeheads
    for smiles in CHIRAL:
        assert not guidance_constraints(Chem.AddHs(Chem.MolFromSmiles(smiles))).invertible.any()


def test_at_an_inverted_centre_only_the_centre_criterion_agrees_with_rdkit():
    mol = _inverted_centre()
    cons = guidance_constraints(mol, clash_factor=0.0)
    assert not cons.invertible.any()  # a lone CFClBrI: pretend it is a cage bridgehead
    cons = dataclasses.replace(cons, invertible=torch.ones_like(cons.invertible))
    pos = torch.tensor(mol.GetConformer().GetPositions())
    assert float(cons.signs * signed_volumes(pos, cons.quads)) < 0  # the volume says "wrong"
    assert float(-cons.signs * chirality_cosines(pos, cons.centres, cons.quads)) > 0  # RDKit's reading: right
    assert check_coords(stereo_reference(mol), pos.numpy())
    penalties = {c: float(guidance_penalty(cons, distance_weight=0.0, chirality=c)(pos)) for c in CHIRALITY_TERMS}
    assert penalties["volume"] > 0 and penalties["shape"] == penalties["centre"] == 0
    mirror = -pos  # the wrong configuration of the same inverted shape: every criterion but "volume" sees it
    assert not check_coords(stereo_reference(mol), mirror.numpy())
    wrong = {c: float(guidance_penalty(cons, distance_weight=0.0, chirality=c)(mirror)) for c in CHIRALITY_TERMS}
    assert wrong["volume"] == 0 and wrong["shape"] > 0 and wrong["centre"] > 0


def test_unknown_chirality_term_is_refused():
    with pytest.raises(ValueError, match="chirality"):
        guidance_penalty(guidance_constraints(_embedded("C[C@H](N)O")), chirality="sign")


@pytest.mark.parametrize("smiles, cis", [("C/C=C/C", [-1.0]), ("C/C=C\\C", [1.0]), ("F/C(Cl)=C(/Br)I", [-1.0]),
                                         ("C/N=C1/C=CCCCO1", [-1.0]), ("CCC/N=C(\\N)NC=O", [1.0]),
                                         ("C/C=C/C=C\\C", [-1.0, 1.0])])
def test_double_bond_constraints_agree_with_embedded_geometry(smiles, cis):
    """ETKDG honours E/Z: the cosine of each constrained dihedral has the constraint's sign."""
    mol = _embedded(smiles)
    dihedrals, signs = double_bond_constraints(mol)
    assert signs.tolist() == cis
    cosines = dihedral_cosines(torch.tensor(mol.GetConformer().GetPositions()), dihedrals)
    assert torch.all(cosines * signs.double() > 0.9)
    cons = guidance_constraints(mol)  # every pair across those bonds is signed, and right in the embedding
    planar_cos = dihedral_cosines(torch.tensor(mol.GetConformer().GetPositions()), cons.planar)
    signed = cons.planar_sign != 0
    assert signed.sum() >= len(cis) and torch.all(planar_cos[signed] * cons.planar_sign[signed].double() > 0.9)


def test_molecules_without_specified_stereo_have_no_stereo_constraints():
    # an unspecified centre; a benzene ring (6 unsigned ring dihedrals); an unspecified C=C (4 unsigned)
    for smiles, planar in [("CCO", 0), ("CC(N)C(=O)O", 0), ("c1ccccc1", 6), ("CC=CC", 4)]:
        cons = guidance_constraints(Chem.AddHs(Chem.MolFromSmiles(smiles)))
        assert len(cons.quads) == 0
        assert len(cons.planar) == planar and not cons.planar_sign.any()


def test_aromatic_rings_are_kept_flat():
    """Every aromatic ring contributes its n ring dihedrals; flat in ETKDG's geometry, penalised when puckered."""
    mol = _embedded("Cc1ccc2[nH]ccc2c1")  # indole: a 6- and a 5-membered aromatic ring
    ring = aromatic_ring_dihedrals(mol)
    assert ring.shape == (11, 4)
    assert len(guidance_constraints(mol).planar) - len(guidance_constraints(mol, aromatic_rings=False).planar) == 11
    pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
    assert torch.all(dihedral_cosines(pos, ring).abs() > 0.97)
    cons = guidance_constraints(mol, clash_factor=0.0)
    penalty = guidance_penalty(cons, distance_weight=0.0)
    assert float(penalty(pos)) == 0.0
    puckered = pos.clone()
    puckered[int(ring[0, 1])] += 0.6 * torch.linalg.cross(pos[int(ring[0, 0])] - pos[int(ring[0, 1])],
                                                           pos[int(ring[0, 2])] - pos[int(ring[0, 1])])
    assert float(penalty(puckered)) > 0.0


def test_planarity_signs_follow_the_specified_pair():
    cons = guidance_constraints(Chem.AddHs(Chem.MolFromSmiles("F/C(Cl)=C(/Br)I")))  # F, Br trans
    signs = {(a, d): s for (a, _, _, d), s in zip(cons.planar.tolist(), cons.planar_sign.tolist())}
    assert signs == {(0, 4): -1.0, (0, 5): 1.0, (2, 4): 1.0, (2, 5): -1.0}


@pytest.mark.parametrize("chirality", CHIRALITY_TERMS)
def test_penalty_is_zero_when_right_and_descending_it_repairs_a_mirror_image(chirality):
    mol = _embedded("C[C@@H]1C[C@H](O)[C@@H](C)O1")
    ref, cons = stereo_reference(mol), guidance_constraints(mol)
    # the mirror image keeps every distance
    penalty = guidance_penalty(cons, margin=3.0, distance_weight=0.0, chirality=chirality)
    right = torch.tensor(mol.GetConformer().GetPositions())
    assert float(penalty(right)) == 0.0
    y = -right
    assert not check_coords(ref, y.numpy())
    bound = penalty.bind(y)  # as PenaltyGuidance does: centre shapes read once, at the start
    for _ in range(200):
        y.requires_grad_(True)
        (g,) = torch.autograd.grad(bound(y), y)
        y = (y - 0.05 * g).detach()
    assert float(penalty(y)) == 0.0
    assert check_coords(ref, y.numpy())  # RDKit perceives the specified configuration again


def test_concat_offsets_each_part():
    a = guidance_constraints(Chem.AddHs(Chem.MolFromSmiles("C[C@H](N)O")))
    b = guidance_constraints(Chem.AddHs(Chem.MolFromSmiles("C/C=C/C")))
    n_a = 11
    both = GuidanceConstraints.concat([a, b], [n_a, 12])
    assert both.quads.tolist() == a.quads.tolist() and both.signs.tolist() == a.signs.tolist()
    assert both.centres.tolist() == a.centres.tolist() == [1]
    assert both.planar.tolist() == (b.planar + n_a).tolist() and both.planar_sign.tolist() == b.planar_sign.tolist()
    assert both.pairs.tolist() == a.pairs.tolist() + (b.pairs + n_a).tolist()
    assert len(both) == len(a) + len(b) and len(GuidanceConstraints.concat([], [])) == 0


def test_distance_term_is_zero_inside_the_bounds_and_pulls_a_stretched_bond_back():
    mol = _embedded("CCO")
    cons = guidance_constraints(mol)
    pos = torch.tensor(mol.GetConformer().GetPositions())
    d = (pos[cons.pairs[:, 0]] - pos[cons.pairs[:, 1]]).norm(dim=-1)
    assert torch.all((d >= cons.lower.double() - 0.05) & (d <= cons.upper.double() + 0.05))  # ETKDG obeys them
    penalty = guidance_penalty(cons, distance_weight=1.0)
    stretched = pos.clone()
    stretched[2] = stretched[1] + 2.0 * (stretched[2] - stretched[1])  # C-O bond twice as long
    assert float(penalty(stretched)) > float(penalty(pos)) + 0.1
    y = stretched
    for _ in range(200):
        y.requires_grad_(True)
        (g,) = torch.autograd.grad(penalty(y), y)
        y = (y - 0.1 * g).detach()
    assert abs(float((y[2] - y[1]).norm() - (pos[2] - pos[1]).norm())) < 0.1


def test_guided_sampling_of_the_shipped_model_gets_the_centres_right():
    from molediff.chem.model import load_conformer_model

    torch.set_num_threads(1)
    model = load_conformer_model()
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("C[C@@H]1C[C@H](O)[C@@H](C)O1", "N[C@@H](CO)[C@H](C)O")]
    ok = {}
    for guided in (False, True):
        out = model.sample(mols, 8, seed=0, steps=10, stereo_guidance=guided)
        ok[guided] = np.mean([check_coords(stereo_reference(m), x) for m, c in zip(mols, out) for x in c])
    assert ok[True] >= 0.9
    assert ok[True] > ok[False] + 0.3  # unguided, an E(3) network gets about half of the mirror images


def test_descending_the_penalty_repairs_a_twisted_double_bond():
    mol = _embedded("C/C=C/C(C)O")
    cons = guidance_constraints(mol)
    penalty = guidance_penalty(cons, distance_weight=0.0)
    pos = torch.tensor(mol.GetConformer().GetPositions())
    a, b, c, d = double_bond_constraints(mol)[0][0].tolist()
    other = [n.GetIdx() for n in mol.GetAtomWithIdx(c).GetNeighbors() if n.GetIdx() not in (b, d)][0]
    twisted = pos.clone()  # swap the two substituents of c: cis <-> trans
    twisted[d], twisted[other] = pos[other], pos[d]
    assert float(penalty(pos)) == 0.0 and float(penalty(twisted)) > 0.0
    y = twisted
    for _ in range(300):
        y.requires_grad_(True)
        (g,) = torch.autograd.grad(penalty(y), y)
        y = (y - 0.05 * g).detach()
    assert float(penalty(y)) == 0.0


def test_guidance_options_per_call_replace_the_defaults():
    from molediff.chem.model import load_conformer_model

    model, mol = load_conformer_model(), Chem.AddHs(Chem.MolFromSmiles("C[C@H](O)c1ccccc1"))
    default = model.sample([mol], 2, seed=0)[0]
    assert np.array_equal(model.sample([mol], 2, seed=0, stereo_guidance={})[0], default)
    assert not np.array_equal(model.sample([mol], 2, seed=0, stereo_guidance={"iters": 1})[0], default)
    with pytest.raises(ValueError, match="bogus"):
        model.sample([mol], 1, seed=0, stereo_guidance={"bogus": 1})


def test_bridgeheads_are_the_four_neighbour_atoms_in_two_rings_that_cannot_invert():
    norbornane = Chem.AddHs(Chem.MolFromSmiles("C1C[C@H]2CC[C@@H]1C2"))
    centres, quads, signs = hull_centres(norbornane)
    # the two bridgeheads and the one-carbon bridge (in both SSSR rings); no chain or one-ring atom
    ring_info = norbornane.GetRingInfo()
    assert centres.tolist() == [a.GetIdx() for a in norbornane.GetAtoms() if ring_info.NumAtomRings(a.GetIdx()) >= 2]
    assert sorted(quads[0].tolist()) == sorted(n.GetIdx() for n in norbornane.GetAtomWithIdx(int(centres[0])).GetNeighbors())
    assert [s != 0 for s in signs.tolist()] == [norbornane.GetAtomWithIdx(int(c)).GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED
                                               for c in centres.tolist()]
    cage = Chem.AddHs(Chem.MolFromSmiles("C1C[C@]23C[C@]2(O1)[C@H]1O[C@H]13"))  # invertible centres are left out
    inverted = set(guidance_constraints(cage).centres[guidance_constraints(cage).invertible].tolist())
    assert inverted and not inverted & set(hull_centres(cage)[0].tolist())
    assert len(hull_centres(Chem.AddHs(Chem.MolFromSmiles("CC(C)(C)O")))[0]) == 0


def test_hull_coordinates_are_barycentric_and_follow_the_tag():
    mol = _embedded("C1C[C@H]2CC[C@@H]1C2")
    centres, quads, signs = hull_centres(mol)
    pos = torch.tensor(mol.GetConformer().GetPositions())
    lam = hull_coordinates(pos, centres, quads, signs)
    assert torch.allclose(lam.sum(1), torch.ones(len(centres), dtype=lam.dtype)) and torch.all(lam > 0.05)
    pushed = pos.clone()  # a bridgehead reflected through the face of three of its neighbours: outside
    c, q = int(centres[0]), quads[0]
    pushed[c] = 2 * pos[q[:3]].mean(0) - pos[c]
    assert float(hull_coordinates(pushed, centres, quads, signs)[0].min()) < 0
    # the mirror image: inside its neighbours' tetrahedron, but tagged atoms now have every coordinate negative
    mirror = hull_coordinates(-pos, centres, quads, signs)
    tagged = signs != 0
    assert tagged.any() and (~tagged).any()  # both bridgeheads tagged, the bridge carbon not
    assert torch.all(mirror[tagged] < 0) and torch.allclose(mirror[~tagged], lam[~tagged])
    assert torch.allclose(hull_coordinates(-pos, centres, quads), lam)  # without tags the current orientation counts


def test_bridgehead_term_is_zero_on_a_sane_cage_and_holds_only_below_its_sigma():
    mol = _embedded("C1C[C@H]2CC[C@@H]1C2")
    cons = guidance_constraints(mol, clash_factor=0.0)
    pos = torch.tensor(mol.GetConformer().GetPositions())
    c, q = int(cons.hull[0]), cons.hull_quads[0]
    pushed = pos.clone()
    pushed[c] = 2 * pos[q[:3]].mean(0) - pos[c]
    penalty = guidance_penalty(cons, distance_weight=0.0, hull_margin=0.01, hull_sigma_max=1.0)
    off = guidance_penalty(cons, distance_weight=0.0, hull_margin=None)
    assert float(penalty(pos)) == pytest.approx(float(off(pos))) == pytest.approx(0.0, abs=1e-6)
    assert float(penalty(pushed)) > float(off(pushed)) + 1.0
    assert float(penalty.bind(pushed, 0.5)(pushed)) == pytest.approx(float(penalty(pushed)))
    assert float(penalty.bind(pushed, 2.0)(pushed)) == pytest.approx(float(off(pushed)))


def test_bound_slack_widens_only_the_bond_and_angle_windows():
    mol = _embedded("CC(=O)NC1CC1")
    tight = guidance_constraints(mol)
    loose = guidance_constraints(mol, bound_slack=(0.02, 0.07))
    assert torch.equal(tight.pairs, loose.pairs)
    topological = Chem.GetDistanceMatrix(mol)
    hops = torch.tensor([topological[i, j] for i, j in tight.pairs.tolist()])
    for hop, slack in ((1, 0.02), (2, 0.07)):
        rows = hops == hop
        assert rows.any()
        torch.testing.assert_close(loose.lower[rows], (tight.lower[rows] - slack).clamp_min(0.0))
        torch.testing.assert_close(loose.upper[rows], tight.upper[rows] + slack)
    far = hops >= 4
    assert far.any() and torch.equal(loose.lower[far], tight.lower[far]) and torch.equal(loose.upper[far], tight.upper[far])
    assert torch.equal(guidance_constraints(mol, bound_slack=(0.0, 0.0)).lower, tight.lower)


def test_final_clean_up_lowers_the_penalty_of_the_finished_sample():
    from molediff.chem.model import load_conformer_model
    from molediff.chem.stereo_guidance import guidance_penalty

    torch.set_num_threads(1)
    model = load_conformer_model()
    mol = Chem.AddHs(Chem.MolFromSmiles("O=C(N[C@@H](Cc1ccccc1)C(=O)O)c1ccccn1"))
    penalty = guidance_penalty(guidance_constraints(mol))
    totals = {}
    for iters in (0, 50):
        coords = model.sample([mol], 4, seed=0, steps=8, stereo_guidance={"final_iters": iters})[0]
        assert np.isfinite(coords).all() and np.abs(coords.mean(axis=1)).max() < 1e-4  # still centred
        totals[iters] = sum(float(penalty(torch.tensor(c, dtype=torch.float32))) for c in coords)
    assert totals[0] > 0.0 and totals[50] < 0.5 * totals[0]
