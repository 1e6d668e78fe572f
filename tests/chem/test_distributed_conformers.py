"""torchrun with 2 CPU processes: shards by record index, rank 0 merges in input order."""

import os
import shutil
import subprocess

import pytest
from rdkit import Chem

from molediff.chem.io_write import iter_records

from tests.chem.conftest import REPO

pytestmark = pytest.mark.distributed


def _torchrun(*args, timeout=90):
    exe = shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun not found")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([exe, "--standalone", "--nproc-per-node", "2", "-m", "molediff", "conformers", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_merge_in_input_order(tmp_path):
    smiles = ["CCO", "CCN", "C1CC", "c1ccccc1", "CC(=O)O", "C[Si](C)(C)C", "OCCO", "CC#N", "C[C@H](N)C(=O)O"]
    inp, out, rep = tmp_path / "in.smi", tmp_path / "out.sdf", tmp_path / "fail.csv"
    inp.write_text("".join(f"{s} m{k}\n" for k, s in enumerate(smiles)))
    res = _torchrun("-i", str(inp), "-o", str(out), "-n", "2", "--seed", "3", "--model", "etkdg", "--batch-size", "2",
                    "--failures", str(rep), "-q")
    assert res.returncode == 1, res.stderr  # one bad SMILES, no --keep-going
    indices = [i for i, _ in iter_records(out, "sdf")]
    expected = [k for k in range(len(smiles)) if k != 2]
    assert indices == [k for k in expected for _ in range(2)]
    titles = [m.GetProp("_Name") for m in Chem.SDMolSupplier(str(out), removeHs=False)][::2]
    assert titles == [f"m{k}" for k in expected]
    assert rep.read_text().splitlines()[1].startswith("2,3,m2,C1CC,InvalidSmilesError")
    assert sorted(os.listdir(tmp_path)) == ["fail.csv", "in.smi", "out.sdf"]  # shards cleaned up
