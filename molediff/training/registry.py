"""Task registry: map short task names to lazily imported ``"module:attribute"`` factories.

A config names its task either by a registered short name (``task: toy``) or by a full
import path (``task: molediff.chem.training_task:ConformerTask``). Nothing is imported until
:func:`resolve_task` is called, so the trainer stays generic and cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["TASKS", "TaskResolutionError", "register_task", "resolve_task", "build_task"]

#: Registered task name -> ``"module:attribute"`` path of a zero-argument factory (often a class).
TASKS: dict[str, str | Callable[[], Any]] = {
    "toy": "molediff.training.toy_task:ToyTask",
    "conformer": "molediff.chem.training_task:ConformerTask",
    "pointcloud": "molediff.pointcloud.training_task:PointCloudTask",
}


class TaskResolutionError(ValueError):
    """A task name or ``module:attribute`` path could not be resolved."""


def register_task(name: str, target: str | Callable[[], Any], *, overwrite: bool = False) -> None:
    """Register ``name`` -> ``target`` (a ``"module:attribute"`` string or a callable).

    Raises
    ------
    TaskResolutionError
        If ``name`` is already registered to another target and ``overwrite`` is false.
    """
    if not overwrite and name in TASKS and TASKS[name] != target:
        raise TaskResolutionError(f"task {name!r} is already registered to {TASKS[name]!r}")
    TASKS[name] = target


def _import_path(path: str) -> Callable[[], Any]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise TaskResolutionError(
            f"task {path!r} is neither a registered name ({sorted(TASKS)}) nor a 'module:attribute' path"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskResolutionError(f"cannot import module {module_name!r} for task {path!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise TaskResolutionError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise TaskResolutionError(f"task target {path!r} is not callable")
    return obj


def resolve_task(spec: str) -> Callable[[], Any]:
    """Return the task factory for a registered name or a ``"module:attribute"`` path."""
    target = TASKS.get(spec, spec)
    if callable(target):
        return target
    return _import_path(str(target))


def build_task(spec: str) -> Any:
    """Resolve ``spec`` and call the factory with no arguments."""
    return resolve_task(spec)()
