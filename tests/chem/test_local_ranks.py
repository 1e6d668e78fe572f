"""``molediff conformers --workers N``: N local ranks, merged in input order; a dead worker stops the job."""

import os
import sys
import time

import numpy as np
import pytest
from rdkit import Chem

from molediff.chem.io_write import iter_records
from molediff.chem.local_ranks import free_port, run_local_ranks, without_option
from molediff.cli import main

pytestmark = pytest.mark.distributed


def test_without_option_drops_every_form_of_the_option():
    argv = ["CCO", "--workers", "2", "-n", "3", "--workers=4", "--workersX", "1", "-o", "x.sdf"]
    assert without_option(argv, "--workers") == ["CCO", "-n", "3", "--workersX", "1", "-o", "x.sdf"]
    assert 0 < free_port() < 65536


def test_workers_run_the_model_as_ranks_and_merge_in_input_order(tmp_path):
    smiles = ["CCO", "c1ccccc1O", "C1CC", "CC(=O)NC", "OCC(O)CO", "C[C@H](N)C(=O)O", "CC#N"]
    inp, out, rep = tmp_path / "in.smi", tmp_path / "out.sdf", tmp_path / "fail.csv"
    inp.write_text("".join(f"{s} m{k}\n" for k, s in enumerate(smiles)))
    rc = main(["conformers", "-i", str(inp), "-o", str(out), "-n", "2", "--seed", "3", "--steps", "3",
               "--batch-size", "2", "--workers", "2", "--failures", str(rep), "-q"])
    assert rc == 1  # one bad SMILES, no --keep-going
    expected = [k for k in range(len(smiles)) if k != 2]
    assert [i for i, _ in iter_records(out, "sdf")] == [k for k in expected for _ in range(2)]
    mols = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert [m.GetProp("_Name") for m in mols][::2] == [f"m{k}" for k in expected]
    assert all(m.GetProp("molediff_model") == "molediff-qm9-egnn" for m in mols)
    assert rep.read_text().splitlines()[1].startswith("2,3,m2,C1CC,InvalidSmilesError")
    assert sorted(os.listdir(tmp_path)) == ["fail.csv", "in.smi", "out.sdf"]  # shards merged and removed
    # one process, another batch size: the same conformers (each conformer has its own noise stream)
    single = tmp_path / "single.sdf"
    main(["conformers", "-i", str(inp), "-o", str(single), "-n", "2", "--seed", "3", "--steps", "3",
          "--batch-size", "5", "-q"])
    for a, b in zip(mols, Chem.SDMolSupplier(str(single), removeHs=False), strict=True):
        assert a.GetProp("_Name") == b.GetProp("_Name")
        np.testing.assert_allclose(a.GetConformer().GetPositions(), b.GetConformer().GetPositions(), atol=1e-3)


def test_workers_usage_errors_and_etkdg_threads(tmp_path):
    assert main(["conformers", "CCO", "--workers", "2", "-q"]) == 2  # needs -o
    assert main(["conformers", "CCO", "--workers", "2", "--device", "cuda", "-o", str(tmp_path / "a.sdf")]) == 2
    assert main(["conformers", "CCO", "--workers", "0", "--model", "etkdg"]) == 2
    out = tmp_path / "etkdg.sdf"
    assert main(["conformers", "CCO", "CCN", "-n", "2", "--seed", "0", "--model", "etkdg", "--workers", "2",
                 "-o", str(out), "-q"]) == 0
    assert len(list(Chem.SDMolSupplier(str(out)))) == 4


def _program(code: str) -> list[str]:
    return [sys.executable, "-c", "import os, sys, time; rank = int(os.environ['RANK']); " + code]


def test_a_dead_worker_stops_the_others_instead_of_hanging():
    t0 = time.monotonic()
    rc = run_local_ranks([], 2, program=_program("time.sleep(60) if rank == 0 else sys.exit(3)"))
    assert rc == 1 and time.monotonic() - t0 < 30  # rank 0 was stopped, not waited for


def test_exit_status_is_rank_zeros_when_every_worker_ends_normally():
    assert run_local_ranks([], 2, program=_program("sys.exit(1 if rank == 0 else 0)")) == 1
    assert run_local_ranks([], 2, program=_program("sys.exit(0)")) == 0
    assert run_local_ranks([], 2, program=_program("sys.exit(2)")) == 2  # a usage error on every rank
    env = _program("assert os.environ['OMP_NUM_THREADS'] == '1' and os.environ['WORLD_SIZE'] == '2'")
    assert run_local_ranks([], 2, program=env) == 0
