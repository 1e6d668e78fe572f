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
