"""Sharding a conformer job over ``torchrun`` ranks and merging the shards in input order.

Rank ``r`` of ``W`` takes the input records whose index satisfies ``index % W == r`` and writes
them crash-safely to its own shard ``<output>.rank<r>-of-<W>`` (same format as the output).
When every rank is done, rank 0 merges the shards on ``molediff_input_index`` into the output
(atomically) and the per-rank failure journals into one report, then removes the shards. Each
shard keeps its own progress file, so ``--resume`` works per rank after a crash.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
from dataclasses import dataclass

from molediff.chem.io_write import merge_outputs, output_compressed, write_failure_report

__all__ = ["DistContext", "dist_context", "init", "barrier", "shutdown", "shard_path", "merge_shards"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torchrun`` job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_context() -> DistContext:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun``."""
    env = os.environ
    return DistContext(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(ctx: DistContext) -> None:
    """Join the process group (gloo: only barriers are needed; a long timeout for long jobs)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world_size,
                                timeout=datetime.timedelta(days=7))


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard_path(output: str, ctx: DistContext) -> str:
    """The shard file of this rank for ``output``."""
    return f"{output}.rank{ctx.rank}-of-{ctx.world_size}"


def merge_shards(output: str, fmt: str, world_size: int, failures_path: str | None = None) -> list[dict]:
    """Merge every rank's shard and failure journal (rank 0, after a barrier).

    Returns
    -------
    list of dict
        All failure rows, in input order.
    """
    shards = [f"{output}.rank{r}-of-{world_size}" for r in range(world_size)]
    merge_outputs(shards, output, fmt, compressed=output_compressed(output))  # shards are gzip too
    rows = []
    for shard in shards:
        journal = shard + ".failures.jsonl"
        if os.path.exists(journal):
            with open(journal, encoding="utf-8") as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    rows.sort(key=lambda row: row["input_index"])
    if failures_path:
        write_failure_report(failures_path, rows)
    for shard in shards:
        for path in glob.glob(glob.escape(shard) + "*"):
            os.remove(path)
    return rows
