"""Library API: generate_conformers / generate_conformers_batch with fake and ETKDG samplers."""

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.errors import MolediffInputError, NonFiniteCoordinatesError, UnsupportedElementError
from molediff.chem.generate import SINGLE_ATOM_MODEL, generate_conformers, generate_conformers_batch


def test_basic_output_has_hydrogens_conformers_and_props(fake_model):
    mol = generate_conformers("CC(=O)O", num_confs=4, seed=1, model=fake_model)
    assert mol.GetNumAtoms() == 8  # explicit hydrogens
    assert mol.GetNumConformers() == 4
    assert mol.GetProp("molediff_model") == "fake-qm9"
    assert mol.GetProp("molediff_seed") == "1"
    for conf in mol.GetConformers():
        assert np.all(np.isfinite(conf.GetPositions()))
        assert conf.GetProp("molediff_valid") == "1"
        assert conf.GetProp("molediff_stereo_ok") == "1"
    # heavy-atom order of the input is kept, hydrogens appended
    assert [a.GetSymbol() for a in mol.GetAtoms()][:4] == ["C", "C", "O", "O"]


def test_one_sampler_call_per_chunk(fake_model):
    smiles = ["CCO", "CCN", "CCC", "CC=O", "OCCO"]
    results = list(generate_conformers_batch(smiles, 3, 0, model=fake_model, batch_size=5))
    assert [r.index for r in results] == list(range(5))
    assert all(r.ok for r in results)
    assert fake_model.calls == [(5, 3)]


def test_seed_reproducible(fake_model):
    a = generate_conformers("CCOC", 3, seed=7, model=fake_model)
    b = generate_conformers("CCOC", 3, seed=7, model=fake_model)
    np.testing.assert_allclose(a.GetConformer(0).GetPositions(), b.GetConformer(0).GetPositions())


def test_mol_input_keeps_its_stereo_and_atom_order(fake_model):
    src = Chem.AddHs(Chem.MolFromSmiles("N[C@@H](C)C(=O)O"))
    src = Chem.RenumberAtoms(src, list(reversed(range(src.GetNumAtoms()))))
    mol = generate_conformers(src, 3, 0, model=fake_model)
    assert [a.GetSymbol() for a in mol.GetAtoms()] == [a.GetSymbol() for a in src.GetAtoms()]
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.MolToSmiles(Chem.MolFromSmiles("N[C@@H](C)C(=O)O"))


def test_nan_conformers_are_resampled_never_kept(make_fake):
    model = make_fake(nan=0.5)
    mol = generate_conformers("CCCO", 6, seed=3, model=model, max_resample_rounds=10)
    assert mol.GetNumConformers() == 6
    assert all(np.all(np.isfinite(c.GetPositions())) for c in mol.GetConformers())
    assert len(model.calls) > 1  # re-sampling happened


def test_all_nan_is_a_typed_error(make_fake):
    with pytest.raises(NonFiniteCoordinatesError, match="NaN"):
        generate_conformers("CCO", 3, 0, model=make_fake(nan_always={"CCO"}))


def test_model_crash_on_one_molecule_spares_the_chunk(make_fake):
    model = make_fake(raise_for={"CCN"})
    results = list(generate_conformers_batch(["CCO", "CCN", "CCC"], 2, 0, model=model, batch_size=3))
    assert [r.ok for r in results] == [True, False, True]
    assert "model failed" in results[1].error.reason


def test_unsupported_element_names_element_and_model(fake_model):
    with pytest.raises(UnsupportedElementError) as info:
        generate_conformers("CCS", 2, 0, model=fake_model)
    assert info.value.element == "S" and info.value.model == "fake-qm9"
    assert "S" in str(info.value) and "fake-qm9" in str(info.value)


def test_single_atom_is_at_origin(fake_model):
    mol = generate_conformers("[Cl-]", 2, 0, model=fake_model)
    assert mol.GetNumConformers() == 2
    assert np.allclose(mol.GetConformer(0).GetPositions(), 0.0)
    assert fake_model.calls == []


def test_single_atom_provenance_does_not_depend_on_its_batch(fake_model):
    alone, = generate_conformers_batch(["[Cl-]"], 1, 0, model=fake_model)
    ion, ethanol = generate_conformers_batch(["[Cl-]", "CCO"], 1, 0, model=fake_model)
    assert alone.mol.GetProp("molediff_model") == ion.mol.GetProp("molediff_model") == SINGLE_ATOM_MODEL
    assert not ion.mol.HasProp("molediff_sampler") and not ion.mol.HasProp("molediff_precision")
    assert ethanol.mol.GetProp("molediff_model") == fake_model.name


def test_etkdg_baseline_model_and_mmff_relax_and_prune():
    mol = generate_conformers("CCCCO", 6, 0, model="etkdg", relax="mmff", prune_rms=0.5)
    assert 1 <= mol.GetNumConformers() <= 6
    conf = mol.GetConformer(mol.GetConformers()[0].GetId())
    assert conf.GetProp("molediff_relaxed") == "mmff"
    assert np.isfinite(float(conf.GetProp("molediff_energy_kcal")))


def test_flag_mode_keeps_invalid_with_flag(make_fake):
    mol = generate_conformers("C[C@H](O)/C=C/C", 8, 0, model=make_fake(scramble_double_bonds=0.5),
                              on_invalid="flag")
    flags = [c.GetProp("molediff_stereo_ok") for c in mol.GetConformers()]
    assert mol.GetNumConformers() == 8 and "0" in flags
    assert all(c.GetProp("molediff_valid") == c.GetProp("molediff_stereo_ok") for c in mol.GetConformers())


def test_errors_are_input_errors(fake_model):
    results = list(generate_conformers_batch(["xyz", ""], 1, 0, model=fake_model))
    assert all(isinstance(r.error, MolediffInputError) for r in results)
    assert results[0].error.item == "input 1"


def test_shipped_model_generates_valid_stereo_correct_conformers():
    """The default model ships inside the package and works with no download."""
    from molediff.chem.model import load_conformer_model

    model = load_conformer_model()
    assert model.name == "molediff-qm9-egnn" and model.elements == ("H", "C", "N", "O", "F")
    assert model.card["step"] > 0  # the training step of the export, read from its JSON
    mol = generate_conformers("C[C@H](N)C(=O)O", 4, seed=0, model=model)
    assert mol.GetNumConformers() >= 1
    assert all(c.GetProp("molediff_stereo_ok") == "1" for c in mol.GetConformers())
    assert all(c.GetProp("molediff_valid") == "1" for c in mol.GetConformers())
    assert all(np.isfinite(c.GetPositions()).all() for c in mol.GetConformers())


def test_shipped_model_conformers_do_not_depend_on_batch_size_or_position():
    """A molecule's conformers depend on the seed and the molecule, and record how to draw them again."""
    from molediff.chem.model import load_conformer_model

    model = load_conformer_model()
    smiles = ["CCO", "C[C@H](N)C(=O)O", "c1ccoc1", "OCC(F)C#N"]
    one_call = list(generate_conformers_batch(smiles, 3, 9, model=model, batch_size=4))
    one_each = list(generate_conformers_batch(smiles[::-1], 3, 9, model=model, batch_size=1))[::-1]
    for a, b in zip(one_call, one_each):
        assert a.mol.GetNumConformers() == b.mol.GetNumConformers() == 3
        for ca, cb in zip(a.mol.GetConformers(), b.mol.GetConformers()):
            np.testing.assert_allclose(ca.GetPositions(), cb.GetPositions(), atol=1e-3)
            assert ca.GetProp("molediff_call_seed") == cb.GetProp("molediff_call_seed")
    ala = one_call[1].mol
    conf = ala.GetConformer(ala.GetConformers()[2].GetId())
    draw, call_seed = int(conf.GetProp("molediff_draw")), int(conf.GetProp("molediff_call_seed"))
    raw = model.sample([Chem.Mol(ala)], draw + 1, seed=call_seed)[0][draw]
    if conf.GetProp("molediff_stereo_fix") == "none":
        np.testing.assert_allclose(conf.GetPositions(), raw - raw.mean(axis=0), atol=1e-3)


def test_oversize_etkdg_embeds_only_the_molecules_beyond_the_training_size(make_fake):
    model = make_fake(max_atoms=20)
    small, large = "CCO", "O=C(N[C@@H](Cc1ccccc1)C(=O)O)c1ccccn1"  # 9 atoms; 35 with hydrogens
    results = list(generate_conformers_batch([small, large, small], 3, 0, model=model, oversize="etkdg"))
    assert [r.ok for r in results] == [True, True, True]
    assert model.calls == [(2, 3)]  # the fake saw only the two small ones
    assert [r.mol.GetProp("molediff_model") for r in results] == ["fake-qm9", "etkdg", "fake-qm9"]
    assert any("embedded with ETKDGv3" in w for w in results[1].warnings)
    assert results[1].mol.GetNumConformers() == 3
    assert all(c.GetProp("molediff_stereo_ok") == "1" for c in results[1].mol.GetConformers())
    (default,) = generate_conformers_batch([large], 1, 0, model=model)  # default: the model, with a warning
    assert default.mol.GetProp("molediff_model") == "fake-qm9"
    assert any("oversize='etkdg'" in w for w in default.warnings)
    with pytest.raises(ValueError, match="oversize"):
        next(generate_conformers_batch([small], 1, 0, model=model, oversize="bogus"))


def test_diatomics_smaller_than_any_training_molecule_are_embedded_with_etkdg():
    """The shipped network never saw a 2-atom graph (QM9's smallest has 3 atoms); it collapsed [C-]#N to NaN."""
    from molediff.chem.model import load_conformer_model

    model = load_conformer_model()
    assert model.min_atoms == 3
    results = list(generate_conformers_batch(["[C-]#N", "N#N", "F", "CCO"], 2, 0, model=model))
    assert all(r.ok for r in results)
    for r, bond in zip(results[:3], (1.17, 1.10, 0.92)):
        assert r.mol.GetProp("molediff_model") == "etkdg"
        assert any("smaller than any molecule the model molediff-qm9-egnn was trained on (3)" in w
                   for w in r.warnings)
        for conf in r.mol.GetConformers():
            x = conf.GetPositions()
            assert np.isfinite(x).all() and abs(np.linalg.norm(x[0] - x[1]) - bond) < 0.1
    assert results[3].mol.GetProp("molediff_model") == "molediff-qm9-egnn" and not results[3].warnings


def test_unsupported_etkdg_embeds_molecules_with_elements_the_model_does_not_know(make_fake):
    from molediff.chem.errors import UnsupportedElementError

    model = make_fake()
    small, sulfur, chloro = "CCO", "CSC", "ClCC(=O)O"
    (refused,) = generate_conformers_batch([sulfur], 2, 0, model=model)  # default: a typed error naming it
    assert isinstance(refused.error, UnsupportedElementError) and refused.error.element == "S"
    results = list(generate_conformers_batch([small, sulfur, chloro], 2, 0, model=model, unsupported="etkdg"))
    assert [r.ok for r in results] == [True, True, True]
    assert model.calls[-1] == (1, 2)  # the fake saw only ethanol
    assert [r.mol.GetProp("molediff_model") for r in results] == ["fake-qm9", "etkdg", "etkdg"]
    assert any(w.startswith("element S (atom 1) is not supported by model fake-qm9") and
               w.endswith("embedded with ETKDGv3 instead (unsupported='etkdg')") for w in results[1].warnings)
    assert any(w.startswith("element Cl (atom 0)") for w in results[2].warnings)
    assert all(c.GetProp("molediff_valid") == "1" for r in results[1:] for c in r.mol.GetConformers())
    with pytest.raises(ValueError, match="unsupported"):
        next(generate_conformers_batch([small], 1, 0, model=model, unsupported="bogus"))


@pytest.mark.parametrize("option, message", [({"steps": 0}, "steps must be >= 1, got 0"),
                                             ({"max_resample_rounds": -1}, "max_resample_rounds must be >= 0")])
def test_out_of_range_options_raise_before_any_molecule_is_sampled(make_fake, option, message):
    model = make_fake()
    with pytest.raises(ValueError, match=message):
        next(generate_conformers_batch(["CCO"], 1, 0, model=model, **option))
    assert model.calls == []


def test_an_oversize_molecule_the_model_fails_on_gets_the_oversize_hint(make_fake):
    from molediff.chem.errors import NonFiniteCoordinatesError

    large = "O=C(N[C@@H](Cc1ccccc1)C(=O)O)c1ccccn1"  # 35 atoms with hydrogens
    model = make_fake(max_atoms=20, nan_always={large, "CC(C)O"})
    big, small = generate_conformers_batch([large, "CC(C)O"], 2, 0, model=model, max_resample_rounds=1)
    assert isinstance(big.error, NonFiniteCoordinatesError)
    assert big.error.reason.endswith("oversize='etkdg' (--oversize etkdg) embeds such molecules with ETKDGv3")
    assert "larger than any molecule the model fake-qm9 was trained on" in str(big.error)
    assert isinstance(small.error, NonFiniteCoordinatesError) and "oversize" not in str(small.error)


def test_a_previous_runs_molediff_properties_do_not_leak_into_the_new_output(fake_model):
    mol = Chem.MolFromSmiles("CCO")
    mol.SetProp("activity", "5.0")
    for key, val in (("molediff_warnings", "a warning of the old run"), ("molediff_energy_kcal", "-3.2"),
                     ("molediff_stereo_raw_fraction", "0.5")):
        mol.SetProp(key, val)  # as read back from an earlier (relaxed) output
    out = generate_conformers(mol, 1, 0, model=fake_model)
    props = out.GetPropsAsDict()
    assert props["activity"] == 5.0 and props["molediff_model"] == "fake-qm9"
    assert not {"molediff_warnings", "molediff_energy_kcal", "molediff_stereo_raw_fraction"} & set(props)
    assert mol.HasProp("molediff_warnings")  # the caller's molecule is untouched
