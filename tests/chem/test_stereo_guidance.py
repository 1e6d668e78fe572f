"""Chirality guidance: sign convention against RDKit, penalty, and guided sampling of the shipped model."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.chem.stereo import check_coords, stereo_reference
from molediff.chem.stereo_guidance import (TetrahedralConstraints, chirality_penalty, signed_volumes,
                                           tetrahedral_constraints)

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
    cons = tetrahedral_constraints(mol)
    assert len(cons) == sum(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms())
    pos = torch.tensor(mol.GetConformer().GetPositions())
    assert torch.equal(torch.sign(signed_volumes(pos, cons.quads)), cons.signs.double())
    assert torch.equal(torch.sign(signed_volumes(-pos, cons.quads)), -cons.signs.double())


def test_molecules_without_specified_centres_have_no_constraints():
    for smiles in ["CCO", "CC(N)C(=O)O", "c1ccccc1"]:  # the second has an unspecified centre
        assert len(tetrahedral_constraints(Chem.AddHs(Chem.MolFromSmiles(smiles)))) == 0


def test_penalty_is_zero_when_right_and_descending_it_repairs_a_mirror_image():
    mol = _embedded("C[C@@H]1C[C@H](O)[C@@H](C)O1")
    ref, cons = stereo_reference(mol), tetrahedral_constraints(mol)
    penalty = chirality_penalty(cons, margin=3.0)
    right = torch.tensor(mol.GetConformer().GetPositions())
    assert float(penalty(right)) == 0.0
    y = -right
    assert not check_coords(ref, y.numpy())
    for _ in range(200):
        y.requires_grad_(True)
        (g,) = torch.autograd.grad(penalty(y), y)
        y = (y - 0.05 * g).detach()
    assert float(penalty(y)) == 0.0
    assert check_coords(ref, y.numpy())  # RDKit perceives the specified configuration again


def test_concat_offsets_each_part():
    a = TetrahedralConstraints(torch.tensor([[0, 1, 2, 3]]), torch.tensor([1.0]))
    b = TetrahedralConstraints(torch.tensor([[1, 2, 3, 4]]), torch.tensor([-1.0]))
    both = TetrahedralConstraints.concat([a, b], [5, 7])
    assert both.quads.tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]] and both.signs.tolist() == [1.0, -1.0]
    assert len(TetrahedralConstraints.concat([], [])) == 0


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
