"""Sampling conformers in several worker processes on one CPU machine.

On a CPU the network's work is matrix products over the atom pairs of small molecules, too small
for one process's threads to share well. Worker processes with one thread each, every one sampling
its own share of the molecules, use the cores better (2 EPYC cores without AVX512, QM9 test split:
benchmarks/RESULTS.md, "Worker processes"). :class:`ParallelConformerSampler` wraps a
:class:`~molediff.chem.model.ConformerModel` behind the same
:class:`~molediff.chem.sampler_protocol.ConformerSampler` interface, so the product
(:func:`molediff.chem.generate.generate_conformers_batch`, ``molediff conformers --workers N``) and
the benchmarks use it unchanged.

Each call splits the molecules into one shard per worker with about equal network work (the sum
of squared atom counts), samples every shard in its worker with the call's seed and returns the
conformers in input order. Every conformer draws its noise from its own stream
(:mod:`molediff.chem.conformer_noise`), so the result does not depend on the number of workers: it is the
single-process model's draw for the same seed, up to the last bits of batched arithmetic.

The workers are started with the ``spawn`` method (no fork of a process that runs OpenMP threads);
the weights reach them as safetensors bytes, not pickle.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem

from molediff.chem.sampler_protocol import ModelWrapper

__all__ = ["ParallelConformerSampler", "balanced_shards"]

_READY_TIMEOUT_S = 600.0  # spawning a worker imports torch and RDKit: seconds, more on a loaded machine

_worker_model: Any = None  # the worker process's ConformerModel (set by _init_worker)
_worker_barrier: Any = None


def balanced_shards(costs: Sequence[float], num_shards: int) -> list[list[int]]:
    """Split items ``0 .. len(costs) - 1`` into at most ``num_shards`` groups of about equal total cost.

    Greedy longest-processing-time first: the most expensive item goes to the least-loaded group
    (ties to the lower index), which is deterministic and within 4/3 of the best split.

    Returns
    -------
    list of list of int
        The non-empty groups, each in increasing item order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    loads = [0.0] * num_shards
    groups: list[list[int]] = [[] for _ in range(num_shards)]
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(num_shards), key=lambda s: (loads[s], s))
        groups[target].append(item)
        loads[target] += float(costs[item])
    return [sorted(group) for group in groups if group]


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this worker when the process that started it is gone (killed parents leave no orphans)."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)


def _init_worker(config: dict[str, Any], weights: bytes, threads: int, barrier: Any) -> None:
    """Build the worker's model from the config and safetensors bytes; one torch thread pool of ``threads``."""
    global _worker_model, _worker_barrier
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    from safetensors.torch import load as load_safetensors

    from molediff.chem.model import ConformerModel, ConformerModelConfig

    torch.set_num_threads(threads)
    model = ConformerModel(ConformerModelConfig.from_dict(config))
    model.load_state_dict(load_safetensors(weights))
    _worker_model = model.eval()
    _worker_barrier = barrier


def _wait_for_all_workers() -> None:
    """Block until every worker runs this (so that all of them have started and loaded the model)."""
    _worker_barrier.wait(timeout=_READY_TIMEOUT_S)


def _sample_shard(mols: list[bytes], num_confs: int, options: dict[str, Any]) -> list[np.ndarray]:
    """``ConformerModel.sample`` in the worker on molecules sent as RDKit binaries."""
    return _worker_model.sample([Chem.Mol(m) for m in mols], num_confs, **options)


class ParallelConformerSampler(ModelWrapper):
    """A conformer model sampled by ``workers`` CPU processes of ``threads_per_worker`` torch threads.

    Parameters
    ----------
    model : ConformerModel
        The model to sample (its weights are copied to the workers when they start; later changes
        to the weights do not reach running workers, :meth:`close` and sample again to restart them).
        Its ``precision`` is read at every call.
    workers : int
        Worker processes (e.g. the number of cores).
    threads_per_worker : int
        Torch threads of each worker (default 1).

    Notes
    -----
    The workers start on the first :meth:`sample` (or :meth:`start`) and run until :meth:`close`
    (also on leaving a ``with`` block, and at interpreter exit). If a worker dies, that call raises
    :class:`RuntimeError` and the next call starts fresh workers. CPU only: ``device`` must be
    ``None`` or a CPU device.
    """

    def __init__(self, model: Any, workers: int = 2, threads_per_worker: int = 1) -> None:
        if workers < 1 or threads_per_worker < 1:
            raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers} and {threads_per_worker}")
        super().__init__(model)
        self.workers = int(workers)
        self.threads_per_worker = int(threads_per_worker)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        """The wrapped model's ``precision``, read at every call."""
        return self.model.precision

    # -- the worker pool
    def start(self) -> "ParallelConformerSampler":
        """Start the workers (if not running) and wait until each has loaded the model."""
        with self._lock:
            if self._pool is not None:
                return self
            from safetensors.torch import save as save_safetensors

            context = mp.get_context("spawn")
            barrier = context.Barrier(self.workers)
            state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
            initargs = (self.model.config.to_dict(), save_safetensors(state), self.threads_per_worker, barrier)
            pool = cf.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=initargs)
            try:
                for ready in [pool.submit(_wait_for_all_workers) for _ in range(self.workers)]:
                    ready.result(timeout=_READY_TIMEOUT_S + 60)
            except Exception as err:
                pool.shutdown(wait=False, cancel_futures=True)
                raise RuntimeError(f"ParallelConformerSampler: {self.workers} worker processes did not start: "
                                   f"{err!r}") from err
            self._pool = pool
            return self

    def close(self) -> None:
        """Stop the workers (a later :meth:`sample` starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ParallelConformerSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(self, mols: Sequence[Chem.Mol], num_confs: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int | None = None, device: str | torch.device | None = None,
               init_conformers: Sequence[np.ndarray] | None = None, **model_options: Any) -> list[np.ndarray]:
        """``num_confs`` conformers per molecule, sampled by the workers; as ``ConformerModel.sample``.

        ``init_conformers`` (one array per molecule) travel with their molecules; ``model_options``
        (``stereo_guidance``, ``precision``, ``sigma_start``, ...) go to every worker's ``model.sample``.
        ``seed=None`` draws one.

        Returns
        -------
        list of numpy.ndarray
            One float64 array ``[num_confs, N_i, 3]`` (Å, RDKit atom order) per molecule, in input order.

        Raises
        ------
        ValueError
            ``num_confs < 1``, a non-CPU ``device``, or ``init_conformers`` of the wrong length.
        RuntimeError
            A worker process died since the last call or during this one (the next call starts new workers).
        """
        if num_confs < 1:
            raise ValueError(f"num_confs must be >= 1, got {num_confs}")
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"ParallelConformerSampler samples on CPU worker processes, not on {device}")
        if init_conformers is not None and len(init_conformers) != len(mols):
            raise ValueError(f"init_conformers: {len(init_conformers)} entries for {len(mols)} molecules")
        if not len(mols):
            return []
        seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF) if seed is None else int(seed)
        options = {"sampler": sampler, "steps": steps, "precision": self.model.precision, "seed": seed,
                   **model_options}
        shards = balanced_shards([m.GetNumAtoms() ** 2 for m in mols], self.workers)
        pool = self.start()._pool
        assert pool is not None
        futures = []
        out: list[np.ndarray | None] = [None] * len(mols)
        try:  # a worker that died since the last call breaks the pool already at submission
            for items in shards:
                shard_options = dict(options)
                if init_conformers is not None:
                    shard_options["init_conformers"] = [np.asarray(init_conformers[i]) for i in items]
                binaries = [mols[i].ToBinary(Chem.PropertyPickleOptions.AllProps) for i in items]
                futures.append(pool.submit(_sample_shard, binaries, num_confs, shard_options))
            for items, future in zip(shards, futures):
                for i, coords in zip(items, future.result()):
                    out[i] = np.asarray(coords, dtype=np.float64)
        except BrokenProcessPool as err:
            self.close()
            raise RuntimeError("ParallelConformerSampler: a worker process died before or while sampling "
                               f"{len(mols)} molecule(s); the next call starts new workers") from err
        finally:
            for future in futures:
                future.cancel()
        return out  # type: ignore[return-value]
