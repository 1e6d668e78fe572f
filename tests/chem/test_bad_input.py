"""Every kind of bad input gets a typed error naming the molecule and the reason; the batch goes on."""

import numpy as np
import pytest

from molediff.chem import errors as E
from molediff.chem.generate import generate_conformers, generate_conformers_batch
from molediff.chem.prepare import prepare_molecule
from molediff.cli import main


@pytest.mark.parametrize("smiles,error,reason", [
    ("C1CC", E.InvalidSmilesError, "syntax"),
    ("C(C)(C)(C)(C)C", E.InvalidSmilesError, "valence"),
    ("c1cccc1", E.InvalidSmilesError, "kekulize"),
    ("", E.EmptyInputError, "empty"),
    ("   ", E.EmptyInputError, "empty"),
    ("[CH3]", E.RadicalError, "unpaired"),
    ("C[NH3+].[Cl-]", None, None),
])
def test_prepare_errors(smiles, error, reason):
    if error is None:
        assert prepare_molecule(smiles).smiles == "C[NH3+]"
        return
    with pytest.raises(error, match=f"(?i){reason}"):
        prepare_molecule(smiles)


def test_error_hierarchy_is_valueerror():
    assert issubclass(E.UnsupportedElementError, E.MolediffInputError)
    assert issubclass(E.MolediffInputError, ValueError)


def test_charged_and_zwitterions_are_fine(fake_model):
    for smi in ["[NH3+]CC(=O)[O-]", "C[N+](C)(C)C", "CC(=O)[O-]"]:
        mol = generate_conformers(smi, 2, 0, model=fake_model)
        assert mol.GetNumConformers() == 2


def test_fragments_keep_largest_or_fail(fake_model):
    mol = generate_conformers("CC(=O)[O-].[Na+]", 1, 0, model=fake_model)
    assert mol.GetProp("molediff_smiles") == "CC(=O)[O-]" and "removed [Na+]" in mol.GetProp("molediff_warnings")
    with pytest.raises(E.FragmentError, match="2 disconnected fragments"):
        generate_conformers("CC(=O)[O-].[Na+]", 1, 0, model=fake_model, fragments="fail")
    assert prepare_molecule("CCO.CCO").warnings == ["kept largest fragment, removed CCO"]  # a duplicate


def test_radicals_can_be_allowed_with_warning():
    with pytest.warns(UserWarning, match="unpaired"):
        mol = generate_conformers("C[CH2]", 1, 0, model="etkdg", allow_radicals=True)
    assert mol.GetNumConformers() == 1


def test_single_atoms(fake_model):
    for smi in ["[Na+]", "[He]", "[O-2]"]:
        mol = generate_conformers(smi, 3, 0, model=fake_model)
        assert mol.GetNumAtoms() == 1 and np.allclose(mol.GetConformer().GetPositions(), 0)


def test_far_larger_than_training_warns_and_max_atoms_caps(fake_model):
    big = "C" * 40  # 122 atoms with hydrogens; the fake was "trained" up to 29
    (res,) = generate_conformers_batch([big], 1, 0, model=fake_model)
    assert res.ok and any("larger than any molecule" in w for w in res.warnings)
    (res,) = generate_conformers_batch([big], 1, 0, model=fake_model, max_atoms=50)
    assert isinstance(res.error, E.TooLargeMoleculeError) and "122 atoms" in res.error.reason


def test_unsupported_element_in_batch_names_line(tmp_path, capsys):
    inp = tmp_path / "x.smi"
    inp.write_text("CCO ok\nCC[Se]C selenide\n")
    from molediff.chem import generate as g
    from molediff.chem.io_read import read_inputs
    from tests.chem.conftest import FakeSampler

    results = list(g.generate_conformers_batch(read_inputs(inp), 1, 0, model=FakeSampler()))
    assert results[0].ok and isinstance(results[1].error, E.UnsupportedElementError)
    assert str(results[1].error).startswith("line 2 (selenide): element Se")


def test_nan_model_output_is_never_written(tmp_path, make_fake):
    from molediff.chem.io_write import CheckpointedWriter

    model = make_fake(nan=0.7)
    results = list(generate_conformers_batch(["CCO", "CCCC", "CC=O"], 3, 1, model=model, max_resample_rounds=1))
    out = tmp_path / "o.sdf"
    w = CheckpointedWriter(str(out), "sdf")
    w.commit(results)
    w.close()
    assert "nan" not in out.read_text().lower()
    for r in results:
        assert r.ok or isinstance(r.error, (E.NonFiniteCoordinatesError, E.NoValidConformerError))


def test_empty_file_and_unreadable_sdf_via_cli(tmp_path, capsys):
    empty = tmp_path / "e.smi"
    empty.write_text("")
    assert main(["conformers", "-i", str(empty), "-o", str(tmp_path / "o.sdf"), "--model", "etkdg", "-q"]) == 1
    assert "contains no molecules; nothing to do, no file was created or changed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [empty]  # no output, progress file or failure journal
    sdf, rep = tmp_path / "in.sdf", tmp_path / "f.csv"
    sdf.write_text("broken\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\ngarbage\nM  END\n$$$$\n")
    assert main(["conformers", "-i", str(sdf), "-o", str(tmp_path / "o.sdf"), "--model", "etkdg", "-q",
                 "--failures", str(rep)]) == 1
    assert "unreadable SDF block" in rep.read_text()


def test_a_negative_seed_is_a_value_error_before_any_molecule(fake_model):
    with pytest.raises(ValueError, match="seed must be >= 0, got -5"):
        next(generate_conformers_batch(["CCO"], 1, -5, model=fake_model))


@pytest.mark.parametrize("num_confs", [2.5, 3.0, "3", True])
def test_a_non_integer_num_confs_is_a_type_error_not_a_per_molecule_failure(fake_model, num_confs):
    with pytest.raises(TypeError, match="num_confs must be an integer"):
        generate_conformers("CCO", num_confs, 0, model=fake_model)


def test_a_numpy_integer_num_confs_works_with_etkdg():
    assert generate_conformers("CCO", np.int64(2), 0, model="etkdg").GetNumConformers() == 2


def test_cxsmiles_is_parsed_with_its_extension_and_whitespace_elsewhere_is_refused():
    from rdkit import Chem

    from molediff.chem.prepare import parse_smiles

    mol = parse_smiles("C[C@H](O)CC |&1:1|")
    (group,) = mol.GetStereoGroups()
    assert group.GetGroupType() == Chem.StereoGroupType.STEREO_AND
    assert parse_smiles("  CCO |$;;$|  ").GetNumAtoms() == 3
    for bad in ("C C", "CCO |&1:1", "CCO |$;;$| x", "CC |a| |b|"):
        with pytest.raises(E.InvalidSmilesError):
            parse_smiles(bad)


@pytest.mark.parametrize("unsupported", ["error", "etkdg"])
def test_dummy_query_and_r_group_atoms_are_named_as_such(fake_model, unsupported):
    from rdkit import Chem

    query = Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmarts("[#6]-[#6]-[#8,#7]")))  # an atom list
    res = list(generate_conformers_batch(["*CCO", "[*:1]c1ccccc1", query, "CCO"], 1, 0, model=fake_model,
                                         unsupported=unsupported))
    for r in res[:3]:  # ETKDG embedded '*' as an 'R' atom 0.7 A from its neighbour; the message said 'element *'
        assert isinstance(r.error, E.InvalidMoleculeError) and "dummy" in r.error.reason, r.error
    assert "atom 0" in res[0].error.reason and "atom 2" in res[2].error.reason and res[3].ok
