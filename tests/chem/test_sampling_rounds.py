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


class _CrashesAfterFirstCall:
    """A sampler whose first call works (half the conformers NaN) and every later one raises."""

    def __init__(self, make_fake):
        self.inner, self.calls = make_fake(nan=0.5), 0
        self.name, self.elements, self.max_atoms = "crashes-later", self.inner.elements, self.inner.max_atoms

    def check_supported(self, mol):
        self.inner.check_supported(mol)

    def sample(self, mols, num_confs, **kw):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("out of memory in a re-sampling round")
        return self.inner.sample(mols, num_confs, **kw)


def test_a_model_failure_in_a_later_round_keeps_the_conformers_already_accepted(make_fake):
    from molediff.chem.generate import generate_conformers_batch

    model = _CrashesAfterFirstCall(make_fake)
    res, = generate_conformers_batch(["CCCO"], 6, 3, model=model)
    assert model.calls >= 2  # round 0 left conformers to re-sample, and round 1 crashed
    assert res.ok, res.error
    assert 1 <= res.mol.GetNumConformers() < 6
    assert all(c.GetProp("molediff_round") == "0" for c in res.mol.GetConformers())
    assert any("model failed" in w and "RuntimeError" in w for w in res.warnings)


def test_draws_for_divides_the_missing_conformers_by_the_pass_rate_within_a_bound():
    from molediff.chem.sampling_rounds import MAX_OVERSAMPLING, draws_for

    assert draws_for(10, 0, 0) == 10  # round 0: nothing known
    assert draws_for(0, 10, 10) == 0
    assert draws_for(2, 8, 10) == 3  # 80 % passed: ceil(2 / 0.8)
    assert draws_for(5, 5, 10) == 10
    assert draws_for(10, 0, 10) == 10 * MAX_OVERSAMPLING  # nothing passed: the bound
    assert draws_for(9, 1, 40) == 9 * MAX_OVERSAMPLING  # 2.5 % is below the floor of 1 / MAX_OVERSAMPLING


def test_a_molecule_whose_draws_mostly_fail_still_gets_its_conformers(make_fake):
    """85 % of the fake's draws are NaN: four rounds of only the missing conformers would leave it short."""
    from molediff.chem.generate import generate_conformers_batch

    fake = make_fake(nan=0.85)
    (res,) = generate_conformers_batch(["CCCO"], 10, 3, model=fake)
    assert res.ok and res.mol.GetNumConformers() == 10
    assert max(k for _, k in fake.calls) > 10  # a later round drew more than it missed
    assert all(np.isfinite(c.GetPositions()).all() for c in res.mol.GetConformers())
    draws = [int(c.GetProp("molediff_draw")) for c in res.mol.GetConformers()]
    rounds = [int(c.GetProp("molediff_round")) for c in res.mol.GetConformers()]
    assert len(set(zip(rounds, draws))) == 10  # each kept conformer names its own draw


def test_flag_mode_still_considers_every_conformer_of_its_single_round(make_fake):
    from molediff.chem.generate import generate_conformers_batch

    fake = make_fake(scramble_double_bonds=0.5)
    (res,) = generate_conformers_batch(["C/C=C/C"], 8, 0, model=fake, on_invalid="flag")
    assert res.mol.GetNumConformers() == 8 and fake.calls == [(1, 8)]


def test_draw_numbers_that_do_not_match_the_conformers_are_a_sampler_error():
    """A ``sample_with_draws`` whose draw numbers do not match its conformers silently lost conformers (zip) or
    was reported as a wrong number of arrays."""
    import pytest
    from rdkit import Chem

    from molediff.chem.sampling_rounds import _checked

    class Job:
        mol = Chem.AddHs(Chem.MolFromSmiles("CO"))

    coords = np.zeros((3, 6, 3))
    with pytest.raises(RuntimeError, match=r"draw numbers of shape \(2,\), expected \(3,\)"):
        _checked(([coords], [np.arange(2)]), [Job()], 3)
    with pytest.raises(RuntimeError, match="sampler returned 0 draw-number arrays for 1 molecules"):
        _checked(([coords], []), [Job()], 3)
    (out,) = _checked(([coords], [[4, 0, 2]]), [Job()], 3)
    assert out[1].tolist() == [4, 0, 2]
