import json
import pickle

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.data.geom import GeomFormatError, iter_geom, load_geom_pickle


def write_geom(root, smiles, n, weights):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = list(AllChem.EmbedMultipleConfs(mol, n, randomSeed=0))
    confs = []
    for cid, w in zip(ids, weights):
        rd = Chem.Mol(mol, confId=cid)
        confs.append({"rd_mol": rd, "boltzmannweight": w, "totalenergy": -100.0 - w})
    name = f"drugs/{abs(hash(smiles))}.pickle"
    (root / "drugs").mkdir(exist_ok=True)
    with open(root / name, "wb") as fh:
        pickle.dump({"smiles": smiles, "conformers": confs}, fh)
    return name, mol


def test_roundtrip(tmp_path):
    name, mol = write_geom(tmp_path, "CCOC(=O)C", 3, [0.2, 0.5, 0.3])
    rec = load_geom_pickle(tmp_path / name)
    assert rec.num_conformers == 3 and np.isclose(rec.weights.sum(), 1)
    assert np.allclose(rec.weights, [0.2, 0.5, 0.3]) and np.allclose(rec.energies, [-100.2, -100.5, -100.3])
    assert np.allclose(rec.mol.GetConformer(1).GetPositions(), mol.GetConformer(1).GetPositions())
    top = load_geom_pickle(tmp_path / name, max_conformers=2)
    assert np.allclose(top.weights, np.array([0.5, 0.3]) / 0.8)
    assert np.allclose(top.mol.GetConformer(0).GetPositions(), mol.GetConformer(1).GetPositions())


def test_iter_summary_and_errors(tmp_path):
    a, _ = write_geom(tmp_path, "CCO", 2, [0.6, 0.4])
    b, _ = write_geom(tmp_path, "CCN", 1, [1.0])
    (tmp_path / "drugs" / "bad.pickle").write_bytes(pickle.dumps({"smiles": "C"}))
    summary = {"CCO": {"pickle_path": a}, "CCN": {"pickle_path": b},
               "C": {"pickle_path": "drugs/bad.pickle"}, "CC": {}}
    (tmp_path / "summary_drugs.json").write_text(json.dumps(summary))
    out = list(iter_geom(tmp_path))
    assert [type(x).__name__ for x in out] == ["GeomFormatError", "GeomRecord", "GeomRecord"]
    assert [x.smiles for x in out[1:]] == ["CCN", "CCO"]
    assert len(list(iter_geom(tmp_path, limit=1))) == 1
    with pytest.raises(GeomFormatError):
        load_geom_pickle(tmp_path / "drugs" / "bad.pickle")


def _dump(root, data, name="drugs/x.pickle"):
    (root / "drugs").mkdir(exist_ok=True)
    with open(root / name, "wb") as fh:
        pickle.dump(data, fh)
    return root / name


def test_bad_entries_are_format_errors_naming_the_file(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    no_conf = Chem.Mol(mol)
    no_conf.RemoveAllConformers()
    cases = {
        "zero_conformers": {"conformers": [{"rd_mol": no_conf, "boltzmannweight": 1.0}]},
        "not_a_dict": {"conformers": [mol]},
        "zero_weights": {"conformers": [{"rd_mol": mol, "boltzmannweight": 0.0}] * 2},
        "negative_weight": {"conformers": [{"rd_mol": mol, "boltzmannweight": w} for w in (1.5, -0.5)]},
        "weight_none": {"conformers": [{"rd_mol": mol, "boltzmannweight": None}]},
        "conformers_dict": {"conformers": {"a": 1}},
    }
    for name, data in cases.items():
        path = _dump(tmp_path, data, f"drugs/{name}.pickle")
        with pytest.raises(GeomFormatError, match=name):
            load_geom_pickle(path)
    (tmp_path / "drugs" / "trunc.pickle").write_bytes(pickle.dumps(cases["not_a_dict"])[:40])
    summary = {name: {"pickle_path": f"drugs/{name}.pickle"} for name in [*cases, "trunc"]}
    (tmp_path / "summary_drugs.json").write_text(json.dumps(summary))
    out = list(iter_geom(tmp_path))  # a broken file is reported, the iteration goes on
    assert len(out) == len(summary) and all(isinstance(x, GeomFormatError) for x in out)


def test_max_conformers_must_be_positive(tmp_path):
    name, _ = write_geom(tmp_path, "CCO", 2, [0.6, 0.4])
    with pytest.raises(ValueError, match="max_conformers"):
        load_geom_pickle(tmp_path / name, max_conformers=0)
