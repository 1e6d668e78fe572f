"""The :class:`Task` protocol: everything model-specific the generic trainer needs.

A task is built by a zero-argument factory named in the config (``task: pkg.module:MyTask``
or a name registered in :data:`molediff.training.registry.TASKS`). Required methods:

``build_model(cfg) -> nn.Module``
    The trainable module, built on CPU from ``cfg.model`` / ``cfg.schedule``. The global
    RNGs are seeded identically on every rank before the call.
``train_loader(cfg, rank, world_size, generator) -> Iterable[batch]``
    Re-iterable source of batches for this rank (one pass = one epoch). Draw every shuffle
    from ``generator`` (a CPU :class:`torch.Generator` seeded identically on all ranks, so a
    permutation is shared and each rank takes its shard, e.g. with
    :class:`~molediff.training.distributed.ShardedBatchSampler`). Exact resume replays the
    current epoch from its starting generator state, so iteration must be deterministic given
    the generator. Batches may be tensors, (nested) dicts / lists / tuples of tensors, or
    objects with ``.to(device)`` (PyG ``Batch``); the trainer moves them to the device.
``loss(model, batch, generator) -> (loss, metrics)``
    A scalar loss tensor and a dict of float metrics for the log. ``model`` may be a DDP
    wrapper: call ``model(...)`` (its forward) so gradients synchronise. Draw noise from
    ``generator`` (a per-rank generator on the training device).

Optional methods:

``evaluate(model, cfg) -> dict[str, float]``
    Validation metrics, called on rank 0 with the EMA weights swapped in and the model in
    eval mode; keys without a ``/`` are logged as ``val/<key>``.
``model_card(cfg, model) -> dict``
    JSON-serialisable metadata stored in the exported ``model.json`` under ``"card"``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Task", "move_to_device", "check_task"]


@runtime_checkable
class Task(Protocol):
    """Structural type of a training task (see the module docstring for the contract)."""

    def build_model(self, cfg: Any) -> nn.Module: ...

    def train_loader(self, cfg: Any, rank: int, world_size: int, generator: torch.Generator) -> Iterable[Any]: ...

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, Mapping[str, float]]: ...


def check_task(task: Any) -> Task:
    """Return ``task`` if it implements the required methods; raise :class:`TypeError` naming the missing ones."""
    missing = [m for m in ("build_model", "train_loader", "loss") if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"{type(task).__name__} is not a Task: missing method(s) {', '.join(missing)}")
    return task


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Recursively move tensors (and objects with ``.to``) in ``batch`` to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    return batch
