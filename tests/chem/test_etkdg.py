import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.errors import RelaxationError
from molediff.chem.etkdg import etkdg_conformers, mmff_relax
from molediff.chem.validity import ValidityChecker


def test_embeds_requested_conformers_deterministically():
    mol = Chem.MolFromSmiles("C/C=C/[C@H](N)C(=O)O")  # implicit Hs: added for us
    a = etkdg_conformers(mol, 4, seed=11)
    b = etkdg_conformers(mol, 4, seed=11)
    assert a.num_failed == 0 and len(a.conf_ids) == 4 and a.mol.GetNumConformers() == 4
    assert a.mol.GetNumAtoms() == Chem.AddHs(mol).GetNumAtoms() and mol.GetNumConformers() == 0
    assert np.allclose(a.mol.GetConformer(a.conf_ids[2]).GetPositions(),
                       b.mol.GetConformer(b.conf_ids[2]).GetPositions())
    checker = ValidityChecker(a.mol)
    assert all(checker(a.mol.GetConformer(c).GetPositions()).stereo for c in a.conf_ids)


def test_mmff_option_lowers_energy():
    raw = etkdg_conformers(Chem.MolFromSmiles("CCCCO"), 3, seed=1)
    before = mmff_relax(Chem.Mol(raw.mol), raw.conf_ids, max_iters=0)
    relaxed = etkdg_conformers(Chem.MolFromSmiles("CCCCO"), 3, seed=1, mmff=True)
    assert len(relaxed.energies) == 3 and relaxed.mmff_not_converged == 0
    assert all(e1 <= e0 + 1e-6 for (_, e0), e1 in zip(before, relaxed.energies))


def test_relax_subset_only():
    res = etkdg_conformers(Chem.MolFromSmiles("CCOC"), 2, seed=3)
    keep = res.mol.GetConformer(res.conf_ids[1]).GetPositions().copy()
    out = mmff_relax(res.mol, [res.conf_ids[0]])
    assert len(out) == 1 and out[0][0] == 0
    assert np.allclose(res.mol.GetConformer(res.conf_ids[1]).GetPositions(), keep)


def test_failures_are_reported_not_raised():
    res = etkdg_conformers(Chem.MolFromSmiles("CC"), 0)
    assert res.num_failed == 0 and res.conf_ids == []
    with pytest.raises(ValueError):
        etkdg_conformers(Chem.MolFromSmiles("CC"), -1)
    boron = Chem.AddHs(Chem.MolFromSmiles("B(C)(C)C"))
    emb = etkdg_conformers(boron, 1, seed=0)
    assert emb.num_failed == 0
    with pytest.raises(RelaxationError, match="MMFF94"):
        mmff_relax(emb.mol)


def test_seed_zero_gives_distinct_conformers():
    """RDKit multiplies the seed by the conformer number; seed 0 must not collapse the ensemble."""
    import numpy as np
    from rdkit import Chem

    from molediff.chem.etkdg import etkdg_conformers

    res = etkdg_conformers(Chem.AddHs(Chem.MolFromSmiles("CCCCO")), 3, seed=0)
    pos = [c.GetPositions() for c in res.mol.GetConformers()]
    assert len(pos) == 3 and np.abs(pos[0] - pos[1]).max() > 1e-3
