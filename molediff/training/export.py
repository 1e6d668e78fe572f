"""Shipping format: EMA weights alone as ``model.safetensors`` plus ``model.json``.

``model.json`` holds ``{"format": "molediff-model", "format_version": 1, "task": ...,
"config": {...}, "step": ..., "metrics": {...}, "card": {...}}``. Loading needs
safetensors and json only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file

from molediff.training.checkpoint import _atomic_save_tensors, _require_finite, atomic_write_bytes

__all__ = ["export_model", "load_exported"]


def export_model(
    directory: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    step: int,
    metrics: Mapping[str, Any] | None = None,
    card: Mapping[str, Any] | None = None,
    name: str = "model",
    require_finite: Iterable[str] = (),
) -> Path:
    """Write ``<directory>/<name>.safetensors`` and ``<name>.json`` atomically; return the weights path.

    Raises
    ------
    ~molediff.training.checkpoint.NonFiniteTensorError
        If a tensor named in ``require_finite`` holds NaN or inf (checked before anything is written).
    """
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    _require_finite(state_dict, require_finite, weights)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_save_tensors(state_dict, weights)
    meta = {
        "format": "molediff-model",
        "format_version": 1,
        "task": config.get("task"),
        "config": dict(config),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "card": dict(card or {}),
    }
    atomic_write_bytes(directory / f"{name}.json", json.dumps(meta, indent=2, sort_keys=True).encode())
    return weights


def load_exported(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an exported model (a run folder, or either file): ``(state_dict, meta)``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    meta = json.loads(stem.with_suffix(".json").read_text())
    return load_file(str(stem.with_suffix(".safetensors"))), meta
