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
