"""ParallelConformerSampler: worker processes return exactly the in-process model's draw per shard, which is
the single-process draw of the whole call (per-conformer noise)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from rdkit import Chem

from molediff.chem.model import load_conformer_model
from molediff.chem.parallel_sampler import ParallelConformerSampler, balanced_shards
from molediff.chem.polish import (DEFAULT_POLISH_GUIDANCE, DEFAULT_POLISH_SIGMA, PolishedSampler,
                                  broken_by_relaxation, polish_seed)
from molediff.chem.relax import mmff_relaxed_coordinates
from molediff.chem.sampler_protocol import ConformerSampler

SMILES = ["CCO", "c1ccccc1O", "CC(=O)NC", "C1CC1C#N", "OCC(O)CO", "C[C@H](N)C(=O)O"]
STEPS = 4  # a short grid: the test is about plumbing, not accuracy


def _mols():
    return [Chem.AddHs(Chem.MolFromSmiles(s)) for s in SMILES]


def test_balanced_shards_cover_every_item_once_and_balance_the_cost():
    costs = [9, 8, 7, 6, 5, 4]
    shards = balanced_shards(costs, 2)
    assert sorted(i for s in shards for i in s) == list(range(6))
    assert all(s == sorted(s) for s in shards)
    assert sorted(sum(costs[i] for i in s) for s in shards) == [19, 20]
    assert balanced_shards(costs, 2) == shards  # deterministic
    assert balanced_shards([1.0, 1.0], 4) == [[0], [1]]  # fewer items than shards: no empty shard
    assert balanced_shards([], 3) == []
    assert balanced_shards([3, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    with pytest.raises(ValueError):
        balanced_shards([1], 0)


@pytest.fixture(scope="module")
def model():
    return load_conformer_model()


@pytest.fixture(scope="module")
def parallel(model):
    with ParallelConformerSampler(model, workers=2) as sampler:
        yield sampler


def _in_process(model, mols, k, seed, shards, **options):
    """What each worker should return: the model's own draw on its shard with the call's seed."""
    expected = [None] * len(mols)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count (bit-for-bit equal reductions)
    try:
        for items in shards:
            extra = dict(options)
            if "init_conformers" in extra:
                extra["init_conformers"] = [extra["init_conformers"][i] for i in items]
            out = model.sample([mols[i] for i in items], k, seed=seed, **extra)
            for i, coords in zip(items, out):
                expected[i] = coords
    finally:
        torch.set_num_threads(threads)
    return expected


def test_workers_return_the_in_process_draw_of_each_shard_in_input_order(model, parallel):
    mols = _mols()
    assert isinstance(parallel, ConformerSampler)
    assert (parallel.name, parallel.elements, parallel.max_atoms) == (model.name, model.elements, model.max_atoms)
    out = parallel.sample(mols, 3, seed=11, steps=STEPS)
    shards = balanced_shards([m.GetNumAtoms() ** 2 for m in mols], 2)
    assert len(shards) == 2
    expected = _in_process(model, mols, 3, 11, shards, steps=STEPS)
    for mol, got, want in zip(mols, out, expected):
        assert got.shape == (3, mol.GetNumAtoms(), 3) and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(parallel.sample(mols, 3, seed=11, steps=STEPS)[2], out[2])  # reproducible
    whole = model.sample(mols, 3, seed=11, steps=STEPS)  # one process, one batch: the same conformers
    for got, want in zip(out, whole):
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert not np.array_equal(parallel.sample(mols, 3, seed=12, steps=STEPS)[2], out[2])


def test_start_conformers_travel_with_their_molecules(model, parallel):
    mols = _mols()[:4]
    rng = np.random.default_rng(0)
    starts = [rng.normal(size=(2, m.GetNumAtoms(), 3)) for m in mols]
    options = {"steps": 2, "init_conformers": starts, "sigma_start": 0.3}
    out = parallel.sample(mols, 2, seed=3, **options)
    expected = _in_process(model, mols, 2, 3, balanced_shards([m.GetNumAtoms() ** 2 for m in mols], 2), **options)
    for got, want in zip(out, expected):
        np.testing.assert_array_equal(got, want)


def test_polished_sampler_draws_and_polishes_in_the_workers(model, parallel):
    """``PolishedSampler(parallel)``: both model stages run in the workers, MMFF94 in the calling process."""
    mols = _mols()[:4]
    out = PolishedSampler(parallel, steps=2).sample(mols, 2, seed=5, steps=STEPS)
    shards = balanced_shards([m.GetNumAtoms() ** 2 for m in mols], 2)
    drawn = _in_process(model, mols, 2, 5, shards, steps=STEPS)
    relaxed = [mmff_relaxed_coordinates(m, c) for m, c in zip(mols, drawn)]
    polished = _in_process(model, mols, 2, polish_seed(5), shards, steps=2, init_conformers=relaxed,
                           sigma_start=DEFAULT_POLISH_SIGMA,
                           stereo_guidance=DEFAULT_POLISH_GUIDANCE)
    for mol, d, r, got, want in zip(mols, drawn, relaxed, out, polished):
        spoilt = broken_by_relaxation(mol, d, r)[:, None, None]  # those come back as drawn
        np.testing.assert_array_equal(got, np.where(spoilt, d, want))
        assert not np.array_equal(got, r) and not np.array_equal(got, d)


def test_bad_calls_raise_before_any_work(parallel):
    mols = _mols()[:2]
    assert parallel.sample([], 3, seed=0) == []
    with pytest.raises(ValueError, match="num_confs"):
        parallel.sample(mols, 0)
    with pytest.raises(ValueError, match="CPU"):
        parallel.sample(mols, 1, device="cuda")
    with pytest.raises(ValueError, match="init_conformers"):
        parallel.sample(mols, 1, init_conformers=[np.zeros((1, 9, 3))], sigma_start=0.3)


def test_a_dead_worker_fails_that_call_and_the_next_call_starts_fresh_workers(model):
    sampler = ParallelConformerSampler(model, workers=2)
    try:
        mols = _mols()[:2]
        first = sampler.sample(mols, 1, seed=0, steps=2)
        pool = sampler._pool  # noqa: SLF001 - the test kills a worker on purpose
        pid = next(iter(pool._processes))  # noqa: SLF001
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # let the pool see the death first, or the other worker may take all
        while not pool._broken and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match="worker process died"):
            sampler.sample(mols, 1, seed=0, steps=2)
        again = sampler.sample(mols, 1, seed=0, steps=2)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    finally:
        sampler.close()


_PARENT = """
import sys
from molediff.chem.model import load_conformer_model
from molediff.chem.parallel_sampler import ParallelConformerSampler

if __name__ == "__main__":
    sampler = ParallelConformerSampler(load_conformer_model(), workers=2).start()
    print(" ".join(str(pid) for pid in sampler._pool._processes), flush=True)
    sys.stdin.read()  # wait to be killed
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)
    finally:
        parent.kill()
        for pid in pids:  # no orphan even when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
