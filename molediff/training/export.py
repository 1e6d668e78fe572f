"""Shipping format: EMA weights alone as ``model.safetensors`` plus ``model.json``.

``model.json`` holds ``{"format": "molediff-model", "format_version": 1, "task": ...,
"config": {...}, "step": ..., "metrics": {...}, "card": {...}, "weights_bytes": ...,
"weights_sha256": ...}``. Loading needs safetensors and json only; :func:`load_exported` checks the
weights against the size and SHA-256 recorded in ``model.json`` (exports written before these two
fields existed load unchecked, with a warning) and turns every failure into an :class:`ExportError` naming the
file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file

from molediff.file_pair import file_pair
from molediff.training.checkpoint import (
    CheckpointError,
    _atomic_save_tensors,
    _require_finite,
    _sha256,
    atomic_write_bytes,
)

__all__ = ["ExportError", "export_model", "load_exported"]

FORMAT = "molediff-model"


class ExportError(CheckpointError):
    """An exported model is missing, unreadable, truncated, corrupted or does not match its ``model.json``."""


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
        "format": FORMAT,
        "format_version": 1,
        "task": config.get("task"),
        "config": dict(config),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "card": dict(card or {}),
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": _sha256(weights),
    }
    atomic_write_bytes(directory / f"{name}.json", json.dumps(meta, indent=2, sort_keys=True).encode())
    return weights


def load_exported(path: str | Path, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an exported model (a run folder, or either file): ``(state_dict, meta)``.

    Parameters
    ----------
    path
        A run folder (its ``model.json``), ``<name>.json``, ``<name>.safetensors`` or their stem.
    verify
        Check the weights' size and SHA-256 against ``model.json`` (a warning when it records none).

    Raises
    ------
    ExportError
        If the JSON is missing, unreadable or not a molediff model, or the weights are missing,
        do not match the recorded size / checksum, or cannot be read as safetensors.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    json_path, weights = file_pair(path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the model description {json_path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{json_path} is not an exported molediff model (no \"format\": \"{FORMAT}\")")
    if not weights.is_file():
        raise ExportError(f"the weights {weights} of {json_path.name} are missing")
    if verify and "weights_sha256" not in meta:
        warnings.warn(f"{json_path.name} records no SHA-256 of its weights (an export older than the checksum, "
                      f"or an edited one): {weights} is loaded but not verified", stacklevel=2)
    elif verify:
        size = weights.stat().st_size
        if size != meta.get("weights_bytes"):
            raise ExportError(f"the weights {weights} are {size} bytes, {json_path.name} records "
                              f"{meta.get('weights_bytes')} (truncated or replaced)")
        if _sha256(weights) != meta["weights_sha256"]:
            raise ExportError(f"the weights {weights} do not match the SHA-256 in {json_path.name} "
                              "(corrupted or replaced)")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise ExportError(f"cannot read the weights {weights} (truncated or not safetensors?): {exc}") from exc
    return state, meta
