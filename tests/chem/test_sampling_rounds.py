"""The per-chunk engine of conformer generation: geometry checks and the final assembly."""

import numpy as np

from molediff.chem.generate import generate_conformers
from molediff.chem.sampling_rounds import geometry_check, prune_conformers


def test_geometry_check_catches_broken_geometry():
    mol = generate_conformers("CCO", 1, 0, model="etkdg")
    xyz = mol.GetConformer().GetPositions()
    assert geometry_check(mol, xyz) == (True, "")
    stretched = xyz.copy()
    stretched[1] += 2.0  # pull one carbon away
    assert not geometry_check(mol, stretched)[0]
    clash = xyz.copy()
    clash[:] = xyz[0] + np.random.default_rng(0).normal(scale=0.05, size=xyz.shape)
    assert not geometry_check(mol, clash)[0]


def test_pruning_keeps_the_first_of_near_duplicates():
    mol = generate_conformers("CCCCO", 6, 0, model="etkdg")
    first = mol.GetConformer(0).GetPositions()
    for conf in list(mol.GetConformers())[1:3]:  # make conformers 1 and 2 copies of conformer 0
        conf.SetPositions(first + 0.01)
    ids_before = [c.GetId() for c in mol.GetConformers()]
    prune_conformers(mol, 0.1)
    ids_after = [c.GetId() for c in mol.GetConformers()]
    assert ids_after[0] == ids_before[0]
    assert ids_before[1] not in ids_after and ids_before[2] not in ids_after


def test_pruning_also_applies_to_one_and_two_heavy_atoms():
    for smiles in ("C", "O", "CC"):  # heavy-atom RMSD of copies is ~0: one conformer is left
        mol = generate_conformers(smiles, 5, 0, model="etkdg")
        first = mol.GetConformer(0).GetPositions()
        for conf in list(mol.GetConformers())[1:]:
            conf.SetPositions(first + 0.01)
        prune_conformers(mol, 0.1)
        assert mol.GetNumConformers() == 1, smiles
