"""``molediff conformers --workers N``: the whole job as N local processes, the way ``torchrun`` runs it.

Each worker is a fresh ``python -m molediff conformers`` with the same arguments (less ``--workers``),
one torch/OpenMP thread, and the environment ``torchrun --standalone`` would give it (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). So every worker takes every N-th
input record through the whole pipeline (featurisation, sampling, stereo and validity checks,
re-sampling, writing its shard crash-safely), and rank 0 merges the shards in input order
(:mod:`molediff.chem.distributed_run`). On QM9-sized molecules two single-thread processes used 2
cores better than one process with 2 threads (benchmarks/RESULTS.md, "Worker processes").

The launcher watches the workers: when one stops abnormally (a crash, a kill, a usage error), the
others would wait for it at the final barrier, so they are stopped too; the shards keep every
completed molecule, and ``--resume`` with the same options finishes the job.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

__all__ = ["without_option", "free_port", "run_local_ranks"]

_GRACE_S = 10.0  # how long the others may take to finish after one worker stopped abnormally


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (every occurrence)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the workers' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: Sequence[subprocess.Popen], sig: int = signal.SIGTERM, wait_s: float = _GRACE_S) -> None:
    """Send ``sig`` to the workers still running and wait for them (killing what is left)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + wait_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_local_ranks(argv: Sequence[str], workers: int, *, threads_per_worker: int = 1,
                    command: Sequence[str] = ("conformers",), program: Sequence[str] | None = None,
                    poll_s: float = 0.2) -> int:
    """Run ``python -m molediff COMMAND ARGV`` as ``workers`` local ranks; returns rank 0's exit status.

    Parameters
    ----------
    argv : sequence of str
        The sub-command's arguments (without ``--workers``).
    workers : int
        Processes (ranks).
    threads_per_worker : int
        ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` of each worker.
    command : sequence of str
        The ``molediff`` sub-command.
    program : sequence of str, optional
        Run this instead of ``python -m molediff COMMAND ARGV`` (tests).
    poll_s : float
        How often the workers are checked.

    Returns
    -------
    int
        Rank 0's status when every worker ended normally (it reports the job: 0, or 1 when an input
        failed); 130 on Ctrl-C; otherwise the first abnormal status (2 for a usage error, 1 for
        anything else), after stopping the other workers.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    base = {**os.environ, "WORLD_SIZE": str(workers), "LOCAL_WORLD_SIZE": str(workers),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "OMP_NUM_THREADS": str(threads_per_worker), "MKL_NUM_THREADS": str(threads_per_worker)}
    cmd = list(program) if program is not None else [sys.executable, "-m", "molediff", *command, *argv]
    procs = [subprocess.Popen(cmd, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(workers)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            abnormal = [(r, c) for r, c in enumerate(codes) if c is not None and c != 0 and not (r == 0 and c == 1)]
            if abnormal:
                rank, code = abnormal[0]
                _stop(procs)
                reason = f"signal {-code}" if code < 0 else f"status {code}"
                print(f"molediff {' '.join(command)}: worker {rank} of {workers} stopped ({reason}); the others "
                      "were stopped too. Completed molecules are kept: rerun with --resume to finish.",
                      file=sys.stderr)
                return 2 if code == 2 else 1
            if all(c is not None for c in codes):
                return int(codes[0])
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop(procs, signal.SIGINT)
        return 130
