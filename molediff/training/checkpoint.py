"""Atomic, pickle-free checkpoints: a safetensors file of tensors plus a JSON sidecar.

A checkpoint ``<dir>/step_00001000`` is two files:

* ``step_00001000.safetensors`` - every tensor, under stable keys: ``model.<name>``,
  ``ema.<name>``, ``optim.state.<param index>.<field>``, ``rng.rank<r>.<name>``;
* ``step_00001000.json`` - everything else: config, step, epoch, optimiser ``param_groups`` and
  non-tensor state, EMA counters, metrics, wall time, hardware and versions, and the size and
  SHA-256 of the tensor file.

Each file is written to a temporary name, flushed, fsynced and moved into place with
:func:`os.replace`; the JSON is written *last* and is the commit marker, so a crash at any
point leaves the previous checkpoint intact and never a half one. Loading uses
``safetensors.torch.load_file`` and :mod:`json` only - no pickle, no ``torch.load``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file

from molediff.file_pair import file_pair, pair_stem
from molediff.temp_files import reserve_temp_path, set_default_mode

__all__ = [
    "CheckpointError",
    "NonFiniteTensorError",
    "Checkpoint",
    "CheckpointManager",
    "atomic_write_bytes",
    "non_finite_keys",
    "save_checkpoint",
    "load_checkpoint",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or does not match the model."""


class NonFiniteTensorError(CheckpointError):
    """Tensors that must be finite (parameters, EMA, optimiser moments) hold NaN or inf; nothing is written."""


def non_finite_keys(tensors: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None) -> list[str]:
    """The keys (of ``keys``, default all) whose floating-point tensor holds a NaN or an infinity, sorted."""
    names = tensors.keys() if keys is None else keys
    return sorted(k for k in names if tensors[k].is_floating_point() and not bool(torch.isfinite(tensors[k]).all()))


def _require_finite(tensors: Mapping[str, torch.Tensor], keys: Iterable[str], target: Path) -> None:
    bad = non_finite_keys(tensors, keys)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteTensorError(f"refusing to write {target}: NaN or inf in {len(bad)} tensor(s): {shown}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` (flat, CPU) and ``meta`` (the JSON sidecar)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix.`` with the prefix stripped (e.g. ``"model"``)."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = reserve_temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _atomic_save_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    tmp = reserve_temp_path(path)
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp)
        set_default_mode(tmp)  # safetensors writes 0600 files
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(stem: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], *,
                    require_finite: Iterable[str] = ()) -> Path:
    """Write ``<stem>.safetensors`` then ``<stem>.json`` atomically; return the JSON path.

    ``meta`` must be JSON-serialisable; ``format_version`` and the tensor file's size and
    SHA-256 are added.

    Raises
    ------
    NonFiniteTensorError
        If a tensor named in ``require_finite`` holds NaN or inf (checked before anything is written).
    """
    stem = Path(stem)
    tensor_path = stem.with_name(stem.name + ".safetensors")
    json_path = stem.with_name(stem.name + ".json")
    _require_finite(tensors, require_finite, tensor_path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save_tensors(tensors, tensor_path)
    sidecar = dict(meta)
    sidecar.update(
        format_version=FORMAT_VERSION,
        tensors_file=tensor_path.name,
        tensors_bytes=tensor_path.stat().st_size,
        tensors_sha256=_sha256(tensor_path),
    )
    atomic_write_bytes(json_path, json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=True).encode())
    return json_path


def load_checkpoint(path: str | Path, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint from its ``.json`` sidecar, ``.safetensors`` file or common stem.

    Raises
    ------
    CheckpointError
        If either file is missing, the JSON is unreadable or not an object, its ``tensors_file`` is not a plain
        file name beside it, or the tensor file does not match the size / SHA-256 recorded in the sidecar.
    """
    path = Path(path)
    stem = pair_stem(path)
    json_path, _ = file_pair(path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint sidecar {json_path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint sidecar {json_path} is not a JSON object")
    name = meta.get("tensors_file", stem.name + ".safetensors")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise CheckpointError(f"checkpoint sidecar {json_path}: tensors_file must name a file beside it, got {name!r}")
    tensor_path = json_path.with_name(name)
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint tensors {tensor_path} are missing")
    if verify:
        if tensor_path.stat().st_size != meta.get("tensors_bytes") or _sha256(tensor_path) != meta.get("tensors_sha256"):
            raise CheckpointError(f"checkpoint tensors {tensor_path} do not match the checksum in {json_path.name}")
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {tensor_path}: {exc}") from exc
    return Checkpoint(tensors=tensors, meta=meta, path=json_path)


def flatten_optimizer_state(state_dict: Mapping[str, Any], prefix: str = "optim") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON.

    Returns
    -------
    tensors
        ``{f"{prefix}.state.{param_index}.{field}": tensor}``.
    meta
        ``{"param_groups": [...], "state": {param_index: {field: json value}}}`` for the
        non-tensor entries.
    """
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, fields in state_dict["state"].items():
        for name, value in fields.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{idx}.{name}"] = value
            else:
                plain.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "state": plain}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], prefix: str = "optim") -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (``tensors`` may hold other prefixes too)."""
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for key, value in tensors.items():
        if key.startswith(head):
            idx, _, name = key[len(head) :].partition(".")
            state.setdefault(int(idx), {})[name] = value
    for idx, fields in meta.get("state", {}).items():
        state.setdefault(int(idx), {}).update(fields)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


class CheckpointManager:
    """The checkpoints of one run: ``step_<N>`` files, the last ``keep_last`` kept, plus ``best``.

    Parameters
    ----------
    directory
        Folder holding the checkpoints (created on first save).
    keep_last
        How many ``step_*`` checkpoints to keep; older ones are deleted after each save
        (sidecar first, so a half-deleted checkpoint is never listed).
    """

    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Steps of the committed checkpoints (those with a sidecar), ascending."""
        if not self.directory.is_dir():
            return []
        found = (_STEP_RE.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def stem(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def save(self, step: int, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], *, best: bool = False,
             require_finite: Iterable[str] = ()) -> Path:
        """Save ``step_<step>`` (and ``best`` if requested), then prune old checkpoints.

        ``require_finite`` names tensors that must hold no NaN / inf (see :func:`save_checkpoint`).
        """
        path = save_checkpoint(self.stem(step), tensors, meta, require_finite=require_finite)
        if best:
            save_checkpoint(self.directory / "best", tensors, meta, require_finite=require_finite)
        self._prune()
        return path

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep_last]:
            stem = self.stem(step)
            for suffix in (".json", ".safetensors"):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """Sidecar path of the newest checkpoint that loads and verifies, or ``None``."""
        for step in reversed(self.steps()):
            path = self.stem(step).with_suffix(".json")
            try:
                load_checkpoint(path, verify=True)
            except CheckpointError:
                continue
            return path
        return None

    def best(self) -> Path | None:
        path = self.directory / "best.json"
        return path if path.is_file() else None
