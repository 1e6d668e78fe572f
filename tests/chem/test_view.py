"""molediff view: a PNG grid of conformers."""

import numpy as np

from molediff.cli import main


def test_view_writes_png_grid(tmp_path):
    sdf, png = tmp_path / "c.sdf", tmp_path / "c.png"
    assert main(["conformers", "C[C@H](N)C(=O)O", "c1ccccc1O", "-n", "3", "--seed", "0", "--model", "etkdg",
                 "-o", str(sdf), "-q"]) == 0
    assert main(["view", str(sdf), "-o", str(png), "--per-mol", "2"]) == 0
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 200
    # not blank: CPK colours present (red oxygen)
    rgb = img[..., :3]
    assert np.any((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3))


def test_view_groups_conformers_by_title(tmp_path):
    from molediff.chem.cli_view import read_conformer_groups

    sdf = tmp_path / "c.sdf"
    main(["conformers", "CCO", "CCN", "-n", "4", "--seed", "0", "--model", "etkdg", "-o", str(sdf), "-q"])
    mols = read_conformer_groups(str(sdf), 10)
    assert [m.GetNumConformers() for m in mols] == [4, 4]


def test_view_missing_file_is_an_error(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope.sdf"), "-o", str(tmp_path / "x.png")]) == 1


def _write_sdf(path, smiles_list, title=""):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    writer = Chem.SDWriter(str(path))
    for smi in smiles_list:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        mol.SetProp("_Name", title)
        writer.write(mol)
    writer.close()


def test_view_does_not_merge_isomers_with_the_same_title(tmp_path):
    """Ethanol and dimethyl ether (same title, 9 atoms each) are two molecules, not two conformers of one."""
    from rdkit import Chem

    from molediff.chem.cli_view import read_conformer_groups

    sdf = tmp_path / "iso.sdf"
    _write_sdf(sdf, ["CCO", "COC", "COC"])
    mols = read_conformer_groups(str(sdf), 10)
    assert [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols] == ["CCO", "COC"]
    assert [m.GetNumConformers() for m in mols] == [1, 2]


def test_view_rejects_non_positive_counts(tmp_path, capsys):
    import pytest

    sdf = tmp_path / "c.sdf"
    _write_sdf(sdf, ["CCO", "CCO", "CCO"], title="e")
    for option in ("--per-mol", "--max-mols"):
        with pytest.raises(SystemExit) as exc:  # --per-mol -1 used to draw all but the last conformer
            main(["view", str(sdf), "-o", str(tmp_path / "x.png"), option, "-1"])
        assert exc.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_view_refuses_to_overwrite_its_input(tmp_path, capsys):
    sdf = tmp_path / "c.svg"  # an SDF under a name matplotlib can write to
    _write_sdf(sdf, ["CCO"], title="e")
    before = sdf.read_bytes()
    assert main(["view", str(sdf), "-o", str(sdf)]) == 1
    assert sdf.read_bytes() == before
    assert "input" in capsys.readouterr().err


def test_unreadable_records_are_counted_in_a_warning_not_dropped_silently(tmp_path):
    import pytest

    from molediff.chem.cli_view import read_conformer_groups

    sdf = tmp_path / "c.sdf"
    main(["conformers", "CCO", "-n", "2", "--seed", "0", "--model", "etkdg", "-o", str(sdf), "-q"])
    text = sdf.read_text()
    first, rest = text.split("$$$$\n", 1)
    lines = first.split("\n")
    lines[4] = "       nan" + lines[4][10:]  # first atom's x: RDKit refuses the record
    (tmp_path / "bad.sdf").write_text("\n".join(lines) + "$$$$\n" + rest)
    with pytest.warns(UserWarning, match="skipped 1 record"):
        mols = read_conformer_groups(str(tmp_path / "bad.sdf"), 10)
    assert [m.GetNumConformers() for m in mols] == [1]
