"""Readers, writers, conversion and crash-safe checkpointing."""

import io
import os

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.convert import to_ase_atoms, to_pyg_data, with_conformers
from molediff.chem.errors import EmptyInputError, InputFileError, InvalidMoleculeError, MolediffInputError
from molediff.chem.generate import generate_conformers, generate_conformers_batch
from molediff.chem.io_read import read_csv, read_inputs, read_sdf, read_smi
from molediff.chem.io_write import CheckpointedWriter, format_result, iter_records


def test_smi_ids_header_comments_and_blank_lines():
    recs = list(read_smi(io.StringIO("smiles name\nCCO ethanol\n# comment\n\nc1ccccc1 benzene ring\nCC\n")))
    assert [r.id for r in recs] == ["ethanol", "line 4", "benzene ring", "line 6"]
    assert [r.line for r in recs] == [2, 4, 5, 6]
    assert isinstance(recs[1].error, EmptyInputError)


def test_csv_autodetects_columns_case_insensitively():
    recs = list(read_csv(io.StringIO("Name,Canonical_SMILES,MW\naspirin,CC(=O)Oc1ccccc1C(=O)O,180\n")))
    assert recs[0].id == "aspirin" and recs[0].source.startswith("CC(=O)O")
    with pytest.raises(ValueError, match="--smiles-column"):
        list(read_csv(io.StringIO("a,b\n1,2\n")))
    recs = list(read_csv(io.StringIO("a,b\nx,CCO\n"), smiles_column="B", id_column="A"))
    assert recs[0].id == "x" and recs[0].source == "CCO"


def test_csv_column_problems_are_file_level_typed_errors():
    with pytest.raises(InputFileError, match="SMILES column 'smi' not found among \\['smiles', 'id'\\]"):
        list(read_csv(io.StringIO("smiles,id\nCCO,a\n"), smiles_column="smi"))
    with pytest.raises(InputFileError, match="ID column 'nope' not found"):
        list(read_csv(io.StringIO("smiles,id\nCCO,a\n"), id_column="nope"))
    assert issubclass(InputFileError, ValueError) and not issubclass(InputFileError, MolediffInputError)


def test_stdin_reads_smiles_lines_with_line_numbers(monkeypatch):
    from molediff.chem.io_read import STDIN, count_records, input_format

    stdin = io.TextIOWrapper(io.BytesIO("\ufeffCCO a\n\nC1CC\nCC\xff\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff")))
    monkeypatch.setattr("sys.stdin", stdin)
    recs = list(read_inputs(STDIN))
    assert [(r.line, r.id, r.smiles) for r in recs] == [(1, "a", "CCO"), (2, "line 2", ""), (3, "line 3", "C1CC"),
                                                        (4, "line 4", "CC\ufffd")]
    assert isinstance(recs[1].error, EmptyInputError) and not stdin.closed  # stdin is not ours to close
    assert input_format(STDIN) == "smi" and count_records(STDIN) is None
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"# only a comment\n")))
    with pytest.raises(EmptyInputError, match="standard input"):
        list(read_inputs(STDIN))


def test_sdf_titles_and_unreadable_block(tmp_path):
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    good = "ethanol" + good[good.index("\n"):]
    bad = "broken\n  junk\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\n"
    text = good + "$$$$\n" + bad + "$$$$\n" + good.replace("ethanol", "") + "$$$$\n"
    recs = list(read_sdf(io.StringIO(text)))
    assert [r.id for r in recs][:2] == ["ethanol", "broken"]
    assert recs[2].id.startswith("line ")
    assert isinstance(recs[1].error, InvalidMoleculeError) and recs[0].error is None


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.smi"
    path.write_text("")
    with pytest.raises(EmptyInputError):
        list(read_inputs(path))


def test_sdf_output_roundtrip_carries_props(fake_model):
    res = list(generate_conformers_batch(["C[C@H](N)C(=O)O"], 3, 0, model=fake_model))
    text = format_result(res[0])
    mols = [m for m in Chem.ForwardSDMolSupplier(io.BytesIO(text.encode()), removeHs=False)]
    assert len(mols) == 3 and all(m is not None for m in mols)
    assert mols[1].GetProp("molediff_conf_index") == "1" and mols[0].GetProp("molediff_model") == "fake-qm9"
    assert Chem.MolToSmiles(Chem.RemoveHs(mols[0])) == "C[C@H](N)C(=O)O"  # stereo from 3D survives
    assert "nan" not in text.lower()


def test_xyz_output_is_extended_xyz(tmp_path, fake_model):
    import ase.io

    res = list(generate_conformers_batch(["CCO"], 2, 0, model=fake_model))
    path = tmp_path / "o.xyz"
    path.write_text(format_result(res[0], "xyz"))
    frames = ase.io.read(path, index=":")
    assert len(frames) == 2 and frames[0].get_chemical_formula() == "C2H6O"
    assert frames[0].info["molediff_model"] == "fake-qm9"


def test_convert_ase_and_pyg(fake_model):
    mol = generate_conformers("CC=O", 1, 0, model=fake_model)
    atoms = to_ase_atoms(mol)
    np.testing.assert_allclose(atoms.get_positions(), mol.GetConformer().GetPositions())
    data = to_pyg_data(mol)
    assert data.pos.shape == (7, 3) and data.edge_index.shape == (2, 12) and data.z[0] == 6
    assert data.edge_attr.max() == 2.0


def test_with_conformers_replaces_the_templates_conformers():
    template = Chem.AddHs(Chem.MolFromSmiles("CO"))
    template.AddConformer(Chem.Conformer(template.GetNumAtoms()))
    coords = np.arange(2 * 6 * 3, dtype=float).reshape(2, 6, 3)
    mol = with_conformers(template, coords)
    assert template.GetNumConformers() == 1 and mol.GetNumConformers() == 2
    assert [c.GetId() for c in mol.GetConformers()] == [0, 1] and mol.GetConformer(1).Is3D()
    np.testing.assert_array_equal(mol.GetConformer(1).GetPositions(), coords[1])


def test_writer_resume_truncates_partial_chunk_and_refuses_other_options(tmp_path, fake_model):
    res = list(generate_conformers_batch(["CCO", "C1CC", "CCN", "CCC"], 2, 0, model=fake_model))
    out = str(tmp_path / "o.sdf")
    w = CheckpointedWriter(out, "sdf", options={"n": 2})
    w.commit(res[:2])
    with open(out, "a") as f:  # a crash in the middle of the next chunk
        f.write(format_result(res[2])[:100])
    with pytest.raises(ValueError, match="different options"):
        CheckpointedWriter(out, "sdf", resume=True, options={"n": 3})
    w = CheckpointedWriter(out, "sdf", resume=True, options={"n": 2})
    assert w.done(1) and not w.done(2)
    w.commit(res[2:])
    rows = w.close()
    assert [r["input_index"] for r in rows] == [1]
    assert [i for i, _ in iter_records(out, "sdf")] == [0, 0, 2, 2, 3, 3]
    assert all(m is not None for m in Chem.SDMolSupplier(out, removeHs=False))
    assert not (tmp_path / "o.sdf.progress.json").exists()
    # resume of a finished output (no state): nothing is redone
    w = CheckpointedWriter(out, "sdf", resume=True, options={"n": 2})
    assert w.done(0) and w.done(3) and not w.done(1)
    w.discard_state()


def test_gzip_writer_resume_truncates_a_partial_member_with_and_without_state(tmp_path, fake_model):
    import gzip

    res = list(generate_conformers_batch(["CCO", "C1CC", "CCN", "CCC"], 2, 0, model=fake_model))
    out = str(tmp_path / "o.sdf.gz")
    w = CheckpointedWriter(out, "sdf", options={"n": 2})
    w.commit(res[:2])
    committed = os.path.getsize(out)
    half_member = gzip.compress(format_result(res[2]).encode())[:-20]
    with open(out, "ab") as f:  # a crash in the middle of the next chunk's member
        f.write(half_member)
    assert [i for i, _ in iter_records(out, "sdf")] == [0, 0]  # the truncated member is not read
    w = CheckpointedWriter(out, "sdf", resume=True, options={"n": 2})
    assert os.path.getsize(out) == committed and w.done(1) and not w.done(2)
    w.commit(res[2:3])
    os.remove(w.state_path)  # resume from the output alone (state lost), again after a crash mid-member
    with open(out, "ab") as f:
        f.write(half_member)
    w = CheckpointedWriter(out, "sdf", resume=True, options={"n": 2})
    assert w.done(0) and w.done(2) and not w.done(3)
    w.commit(res[3:])
    w.close()
    text = gzip.decompress(open(out, "rb").read()).decode()  # valid multi-member gzip, no leftover bytes
    assert [int(m.GetProp("molediff_input_index")) for m in Chem.ForwardSDMolSupplier(io.BytesIO(text.encode()))] \
        == [0, 0, 2, 2, 3, 3]


def test_merge_outputs_of_gzip_shards(tmp_path, fake_model):
    import gzip

    from molediff.chem.io_write import merge_outputs

    res = list(generate_conformers_batch(["CCO", "CCN", "CCC"], 1, 0, model=fake_model))
    shards = [str(tmp_path / f"o.sdf.gz.rank{r}-of-2") for r in range(2)]
    for r, shard in enumerate(shards):
        w = CheckpointedWriter(shard, "sdf", compressed=True)
        w.commit(res[r::2])
        w.close()
    merge_outputs(shards, str(tmp_path / "o.sdf.gz"), "sdf", compressed=True)
    text = gzip.decompress((tmp_path / "o.sdf.gz").read_bytes()).decode()
    assert [int(m.GetProp("molediff_input_index")) for m in Chem.ForwardSDMolSupplier(io.BytesIO(text.encode()))] \
        == [0, 1, 2]


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz"])
def test_a_byte_order_mark_before_a_quoted_csv_header_keeps_the_columns(tmp_path, name):
    import gzip

    data = '\ufeff"ID","Name, full","smi"\r\n"m1","ethanol, abs","CCO"\r\nm2,"x ""y""",CCN\r\n'.encode("utf-8")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    recs = list(read_inputs(path))
    assert [(r.id, r.smiles, r.line) for r in recs] == [("m1", "CCO", 2), ("m2", "CCN", 3)]


def test_sdf_input_data_fields_reach_every_output_record(fake_model):
    block = Chem.MolToMolBlock(Chem.MolFromSmiles("C[C@H](N)C(=O)O"))
    text = ("ala" + block[block.index("\n"):] + ">  <activity>\n7.50\n\n>  <vendor id> (1)\nABC-0012\n\n$$$$\n"
            + block + "stray line\n> <note>\nx\n\n$$$$\n")  # a stray line before the fields: still read
    recs = list(read_sdf(io.StringIO(text)))
    assert recs[0].source.GetProp("activity") == "7.50" and recs[0].source.GetProp("vendor id") == "ABC-0012"
    assert recs[1].source.GetProp("note") == "x"
    res = list(generate_conformers_batch(recs, 2, 0, model=fake_model))
    mols = list(Chem.ForwardSDMolSupplier(io.BytesIO(format_result(res[0]).encode()), removeHs=False))
    assert [(m.GetProp("_Name"), m.GetProp("activity"), m.GetProp("vendor id")) for m in mols] \
        == [("ala", "7.50", "ABC-0012")] * 2


def test_cxsmiles_extension_stays_with_the_smiles_not_the_name(fake_model):
    text = "C[C@H](O)CC |&1:1| racemic 2-butanol\nCC(=O)O |$;;;$| acid\nCCO |&1:1 broken\n"
    recs = list(read_smi(io.StringIO(text)))
    assert [(r.smiles, r.id) for r in recs[:2]] == [("C[C@H](O)CC |&1:1|", "racemic 2-butanol"),
                                                     ("CC(=O)O |$;;;$|", "acid")]
    assert recs[2].smiles == "CCO" and recs[2].id == "|&1:1 broken"  # unterminated: not an extension
    res = list(generate_conformers_batch(recs[:2], 1, 0, model=fake_model))
    assert [r.ok for r in res] == [True, True] and res[0].mol.GetProp("_Name") == "racemic 2-butanol"


def test_input_property_values_keep_their_lines_and_spacing(fake_model):
    mol = Chem.MolFromSmiles("CCO")
    mol.SetProp("comment", "first line\n\nsecond  line  \n")  # a blank line would end the SDF value early
    mol.SetProp("code", "AB  12")
    (res,) = generate_conformers_batch([mol], 1, 0, model=fake_model)
    (back,) = Chem.ForwardSDMolSupplier(io.BytesIO(format_result(res).encode()))
    assert back.GetProp("comment") == "first line\nsecond  line" and back.GetProp("code") == "AB  12"
    assert back.GetProp("molediff_model") == "fake-qm9"


def test_ase_info_keeps_string_properties_as_strings(fake_model):
    mol = generate_conformers("CCO", 1, 0, model=fake_model)
    mol.SetProp("compound_id", "000123")
    mol.SetProp("note", "nan")
    info = to_ase_atoms(mol).info
    assert info["compound_id"] == "000123" and info["note"] == "nan"  # were 123 and float nan
    assert info["molediff_valid"] == 1  # molediff's own numeric properties stay numbers
    assert info["molediff_model"] == "fake-qm9" and info["charge"] == 0


def test_isotopes_reach_ase_masses_and_extended_xyz(tmp_path, fake_model):
    import ase.io

    mol = generate_conformers("[2H]C([2H])([2H])[13CH2]O", 1, 0, model=fake_model)
    atoms = to_ase_atoms(mol)
    masses = {a.GetIdx(): a.GetMass() for a in mol.GetAtoms()}
    np.testing.assert_allclose(atoms.get_masses(), [masses[i] for i in range(len(atoms))])
    assert atoms.get_masses()[[0, 4]] == pytest.approx([2.014, 13.003], abs=1e-3)
    (res,) = generate_conformers_batch(["[2H]O[2H]"], 1, 0, model=fake_model)
    path = tmp_path / "d2o.xyz"
    path.write_text(format_result(res, "xyz"))
    assert ase.io.read(path).get_masses()[0] == pytest.approx(2.014, abs=1e-3)
    plain = to_ase_atoms(generate_conformers("CO", 1, 0, model=fake_model))
    assert "masses" not in plain.arrays  # only isotopes make a masses column


def test_sdf_record_separator_with_trailing_whitespace_still_separates():
    block = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    text = "a" + block + "$$$$ \r\n" + "b" + block + "$$$$\t\n" + "c" + block + "$$$$"
    recs = list(read_sdf(io.StringIO(text, newline="")))
    assert [(r.id, r.error) for r in recs] == [("a", None), ("b", None), ("c", None)]  # b and c vanished


def test_csv_fields_beyond_the_csv_modules_default_limit(monkeypatch):
    import csv

    limit = csv.field_size_limit()
    recs = list(read_csv(io.StringIO("id,smiles,notes\na,CCO," + "x" * 200_000 + "\nb,CCN,short\n")))
    assert [(r.id, r.smiles) for r in recs] == [("a", "CCO"), ("b", "CCN")]  # was a _csv.Error traceback
    assert csv.field_size_limit() == limit  # the process-wide setting is left as it was
    monkeypatch.setattr("molediff.chem.io_read._CSV_FIELD_LIMIT", 1000)
    with pytest.raises(InputFileError, match="line 3.*1000 characters.*unclosed quote"):
        list(read_csv(io.StringIO('id,smiles\na,CCO\nb,"CCN\n' + "c,CCC\n" * 300)))
    assert csv.field_size_limit() == limit


def test_with_conformers_rejects_positions_that_are_not_n_by_3():
    template = Chem.AddHs(Chem.MolFromSmiles("CO"))
    with pytest.raises(ValueError, match=r"conformer 0.*\(6, 3\)"):  # [N, 2] became z = 0, silently
        with_conformers(template, np.zeros((1, 6, 2)))
    with pytest.raises(ValueError, match=r"conformer 1.*\(6, 3\)"):
        with_conformers(template, [np.zeros((6, 3)), np.zeros((5, 3))])


def test_ase_atoms_refuses_implicit_hydrogens():
    """A heavy-atom-only molecule (RDKit's default SDF read) would become the wrong species for xTB / DFT."""
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CO"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    mol = Chem.RemoveHs(mol)
    with pytest.raises(ValueError, match="implicit hydrogen"):
        to_ase_atoms(mol)
