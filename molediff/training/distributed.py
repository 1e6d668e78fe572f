"""Data-parallel training through ``torchrun``: process group, device, sharding, collectives.

Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set), :func:`init_distributed` joins a process group (NCCL on CUDA, gloo on
CPU) and every helper here acts collectively. Without those variables everything is a
no-op on a single process, so the same trainer code serves both cases. Multi-node runs need
a run directory on a shared file system (rank 0 writes checkpoints, every rank reads them).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from molediff.core.device import DeviceUnavailableError, require_device

__all__ = [
    "DistEnv",
    "init_distributed",
    "shutdown_distributed",
    "resolve_device",
    "wrap_model",
    "unwrap_model",
    "barrier",
    "all_reduce_mean",
    "any_flag",
    "all_gather_tensor",
    "ShardedBatchSampler",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs, evaluates and writes files."""
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` if available else CPU; ``"cuda"`` -> ``cuda:<local_rank>``.

    Raises
    ------
    molediff.core.device.DeviceUnavailableError
        A malformed device name, CUDA requested where it is not available, or a device torch cannot use.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    if spec.split(":")[0] == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {spec!r} requested but CUDA is not available")
    return require_device(spec)  # a malformed name or an unusable device: DeviceUnavailableError


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the ``torchrun`` process group if launched by it; otherwise a single-process env."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistEnv(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown_distributed(sync: bool = True) -> None:
    """Leave the process group (if one is active) while the interpreter is still fully alive.

    Parameters
    ----------
    sync
        Wait at a barrier first, so that no rank tears its communicators down while a peer is
        still using them. Pass ``False`` on an error path, where a peer may never arrive.

    Notes
    -----
    Release every :class:`~torch.nn.parallel.DistributedDataParallel` wrapper first
    (:meth:`molediff.training.trainer.Trainer.close`): a process group that is still referenced
    is only destroyed at interpreter finalisation, where gloo's worker threads can abort the
    process (``terminate called without an active exception``, SIGABRT) after all work is done.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # free unreachable DDP reducers before the group goes
    if sync and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """Wrap in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed; else unchanged."""
    if not env.is_distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier() -> None:
    """Synchronise all ranks (no-op on one process)."""
    if _active():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Mean of a Python float over ranks."""
    if not _active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def any_flag(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank if ``flag`` is true on any rank (agree on stopping)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_tensor(t: torch.Tensor, device: torch.device | None = None) -> list[torch.Tensor]:
    """Gather one equally shaped tensor from every rank (CPU copies, in rank order)."""
    if not _active():
        return [t.detach().cpu()]
    x = t.detach().to(device) if device is not None else t.detach()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return [o.cpu() for o in out]


class ShardedBatchSampler:
    """Shuffled index batches, sharded over ranks, redrawn from ``generator`` at every epoch.

    Every rank must pass a generator in the same state (the trainer's data generator is
    seeded identically on all ranks) so the permutation is shared; rank ``r`` then takes
    ``perm[r::world_size]``. Usable directly or as ``DataLoader(..., batch_sampler=...)``.

    Parameters
    ----------
    num_items
        Dataset size.
    batch_size
        Batch size *per rank*.
    rank, world_size
        This process's shard.
    generator
        Source of the shuffles; ``None`` keeps the natural order.
    drop_last
        Drop the last incomplete batch (keeps every rank's batch count equal).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        generator: torch.Generator | None = None,
        drop_last: bool = True,
    ) -> None:
        if num_items < world_size:
            raise ValueError(f"cannot shard {num_items} items over {world_size} ranks")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError("need batch_size >= 1 and 0 <= rank < world_size")
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size = rank, world_size
        self.generator, self.drop_last = generator, drop_last

    def _per_rank(self) -> int:
        return self.num_items // self.world_size

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is None:
            perm = torch.arange(self.num_items)
        else:
            perm = torch.randperm(self.num_items, generator=self.generator)
        mine = perm[: self._per_rank() * self.world_size][self.rank :: self.world_size].tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield mine[start : start + self.batch_size]
