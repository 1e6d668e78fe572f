import numpy as np
import pytest
import torch
from rdkit import Chem, rdBase

from molediff.chem.featurize import EDGE_FEATURE_DIM, NODE_FEATURE_DIM
from molediff.data.qm9 import (
    DropReport, RawQM9, iter_qm9_raw, load_qm9, prepare_qm9, process_record, split_of)

pytest.importorskip("rdkit")
try:
    from molediff.data.qm9 import qm9pack_data_dir
    qm9pack_data_dir()
except FileNotFoundError:  # pragma: no cover
    pytest.skip("qm9pack not installed", allow_module_level=True)


def test_split_rule():
    assert [split_of(i) for i in (10, 20, 1, 11, 2, 9, 133885)] == [
        "test", "test", "valid", "valid", "train", "train", "train"]
    raws = list(iter_qm9_raw("valid", limit=5))
    assert [r.index for r in raws] == [1, 11, 21, 31, 41]


def test_raw_rows():
    first = next(iter_qm9_raw())
    assert first.index == 1 and first.smiles == "C" and first.symbols == ("C", "H", "H", "H", "H")
    assert first.pos.shape == (5, 3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("qm9cache")
    ds = load_qm9("train", limit=200, cache_dir=cache, num_workers=1)
    return cache, ds


def test_load_small_split(small):
    cache, ds = small
    assert ds.drop_report.total == 200 and len(ds) == ds.drop_report.kept >= 195
    assert all(split_of(int(i)) == "train" for i in ds.indices)
    rec = ds[0]
    assert rec.index == 2 and rec.smiles == "N"
    for i in (0, 57, len(ds) - 1):
        rec = ds[i]
        mol = rec.mol
        assert mol.GetNumAtoms() == rec.pos.shape[0] == rec.graph.num_nodes
        assert all(a.GetNumImplicitHs() == 0 for a in mol.GetAtoms())
        assert np.allclose(mol.GetConformer().GetPositions(), rec.pos.numpy(), atol=1e-5)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == rec.graph.z.tolist()
        assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == rec.smiles
    g = ds.graph(10)
    assert g.node_attr.shape[1] == NODE_FEATURE_DIM and g.edge_attr.shape[1] == EDGE_FEATURE_DIM


def test_bonds_have_dft_lengths(small):
    _, ds = small
    for i in range(0, len(ds), 7):
        mol = ds[i].mol
        pos = mol.GetConformer().GetPositions()
        for b in mol.GetBonds():
            d = np.linalg.norm(pos[b.GetBeginAtomIdx()] - pos[b.GetEndAtomIdx()])
            assert 0.9 < d < 1.8, (ds[i].smiles, d)


def test_stereo_from_3d():
    # QM9 SMILES carry no stereo; a chiral molecule gets '@' from its DFT geometry.
    raws = [r for r in iter_qm9_raw("train", limit=400) if r.smiles == "CC(O)C#C"]
    out = process_record(raws[0])
    assert isinstance(out, dict) and "@" in out["smiles"]


def test_cache_roundtrip_and_truncate(small, tmp_path):
    cache, ds = small
    again = load_qm9("train", limit=200, cache_dir=cache)
    assert again.smiles == ds.smiles and torch.equal(again.pos, ds.pos)
    # A "full" split cached under the plain stem serves smaller limits by truncation.
    prepare_qm9(["valid"], limit=30, cache_dir=tmp_path, num_workers=1)
    full = tmp_path / next(p.name for p in tmp_path.iterdir() if p.is_dir())
    for ext in ("safetensors", "json"):
        (full / f"valid_first30.{ext}").rename(full / f"valid.{ext}")
    sub = load_qm9("valid", limit=10, cache_dir=tmp_path)
    assert sub.drop_report.total == 10 and sub.smiles == load_qm9(
        "valid", cache_dir=tmp_path).smiles[: len(sub)]
    packed = sub.to_packed()
    assert len(packed) == len(sub) and packed.node_attr.dtype == torch.uint8


def test_another_rdkit_or_qm9pack_version_never_reads_this_ones_cache(small, monkeypatch):
    import molediff.data.qm9 as qm9

    cache, ds = small
    here = qm9.cache_folder(cache)
    assert (here / "train_first200.json").exists()
    assert rdBase.rdkitVersion in here.name and qm9.load_qm9("train", limit=5, cache_dir=cache).meta["sources"] == {
        "rdkit": rdBase.rdkitVersion, "qm9pack": qm9.source_versions()["qm9pack"]}
    monkeypatch.setattr(qm9, "source_versions", lambda: {"rdkit": "2099.01.1", "qm9pack": "9.9"})
    assert qm9.cache_folder(cache) != here and not (qm9.cache_folder(cache) / "train_first200.json").exists()
    other = qm9.load_qm9("train", limit=3, cache_dir=cache, num_workers=1)  # processed again, not truncated
    assert (qm9.cache_folder(cache) / "train_first3.json").exists() and other.meta["sources"]["rdkit"] == "2099.01.1"


def test_drop_report_json_roundtrip():
    r = DropReport(total=3, kept=1)
    r.add(5, "connectivity")
    r.add(7, "connectivity")
    assert DropReport.from_json(r.to_json()) == r and "connectivity: 2" in str(r)


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_qm9("training")


@pytest.mark.parametrize("index", [17954, 75032])  # cyclooctatetraene, methylcyclooctatetraene
def test_double_bonds_land_on_short_bonds_whatever_the_xyz_order(index):
    # The bond graph without bond orders has more symmetries than the molecule: COT's ring can be
    # rotated by one atom, which maps every C=C onto a C-C. A mapping that finds the graph but
    # puts the double bonds on the 1.47 A bonds passes the element and bond-length checks, so
    # the result must not depend on the (arbitrary) atom order of the XYZ block.
    raw = next(r for r in iter_qm9_raw("train") if r.index == index)
    rng = np.random.default_rng(0)
    for _ in range(8):
        perm = rng.permutation(len(raw.symbols))
        shuffled = RawQM9(raw.index, raw.smiles, tuple(raw.symbols[i] for i in perm), raw.pos[perm])
        out = process_record(shuffled)
        mol = Chem.Mol(out["mol"].tobytes())
        pos = mol.GetConformer().GetPositions()
        length = {b.GetBondType(): [] for b in mol.GetBonds()}
        for b in mol.GetBonds():
            if b.GetBeginAtom().GetAtomicNum() == b.GetEndAtom().GetAtomicNum() == 6:
                d = np.linalg.norm(pos[b.GetBeginAtomIdx()] - pos[b.GetEndAtomIdx()])
                length[b.GetBondType()].append(d)
        assert max(length[Chem.BondType.DOUBLE]) < min(length[Chem.BondType.SINGLE]), length


def test_limit_must_be_a_non_negative_integer(small):
    # With the full split cached, limit=-1 sliced off the last molecule (13,097 of 13,098 valid
    # molecules); with a cold cache it processed none. Both must refuse it.
    cache, _ = small
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="limit"):
            load_qm9("train", limit=bad, cache_dir=cache)
        with pytest.raises(ValueError, match="limit"):
            next(iter_qm9_raw("train", limit=bad))
        with pytest.raises(ValueError, match="limit"):
            prepare_qm9(["train"], limit=bad, cache_dir=cache)
