import threading

import numpy as np

from molediff.data import cache
from molediff.data.cache import cache_complete, load_arrays, save_arrays


def test_roundtrip(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.zeros((0, 4), np.uint8)}
    save_arrays(tmp_path / "x" / "train", arrays, {"smiles": ["C", "N"]})
    assert cache_complete(tmp_path / "x" / "train")
    back, meta = load_arrays(tmp_path / "x" / "train")
    assert meta == {"smiles": ["C", "N"]} and back["a"].dtype == np.int16
    assert np.array_equal(back["a"], arrays["a"]) and back["b"].shape == (0, 4)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["train.json", "train.safetensors"]


def test_concurrent_writers_with_the_same_pid(tmp_path, monkeypatch):
    # Ranks of a multi-node job (containers: same pids) warm a shared cache at the same time.
    # Temporary names made from the pid collided: the second writer's rename found its file
    # already moved away (FileNotFoundError), or both wrote into one file.
    monkeypatch.setattr(cache.os, "getpid", lambda: 4242)
    barrier, real_save, errors = threading.Barrier(2, timeout=10), cache.save_file, []

    def save_then_wait(tensors, path):
        real_save(tensors, path)
        barrier.wait()

    monkeypatch.setattr(cache, "save_file", save_then_wait)

    def writer(k):
        try:
            save_arrays(tmp_path / "train", {"a": np.full(1000, 7, np.int64)}, {"writer": k})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    arrays, meta = load_arrays(tmp_path / "train")
    assert np.array_equal(arrays["a"], np.full(1000, 7)) and meta["writer"] in (0, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json", "train.safetensors"]
