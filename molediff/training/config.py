"""YAML training configs parsed into dataclasses, with strict validation.

The trainer owns the ``optimiser``, ``ema`` and ``training`` sections and validates them here;
``model``, ``schedule`` and ``data`` are free-form mappings that the task interprets (it can
reuse :func:`parse_section` to turn them into its own dataclasses with the same strict errors).
See ``configs/README.md`` for the schema and an example.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from molediff.training.registry import TASKS, TaskResolutionError, register_task, resolve_task

__all__ = [
    "ConfigError",
    "OptimConfig",
    "EMAConfig",
    "TrainingConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "parse_section",
    "TASKS",
    "TaskResolutionError",
    "register_task",
    "resolve_task",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type or out-of-range value."""


@dataclass
class OptimConfig:
    """AdamW and learning-rate schedule (linear warmup, then constant or cosine decay).

    A step whose gradient norm is NaN or infinite (with a finite loss) is skipped: no optimiser or EMA
    update. ``max_skipped_steps`` such steps in a row are allowed; the next one stops training with
    :class:`~molediff.training.trainer.NonFiniteGradientError` (0: stop at the first).

    ``restart_step`` > 0 restarts the schedule there (a warm restart for a resumed run whose cosine has
    already decayed): from that step on, linear warm-up over ``warmup_steps`` back to ``lr``, then the
    cosine down to ``min_lr_ratio * lr`` at ``training.steps``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    max_skipped_steps: int = 10
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    restart_step: int = 0

    def validate(self) -> None:
        _check(self.lr > 0, "optimiser.lr must be > 0")
        _check(self.weight_decay >= 0, "optimiser.weight_decay must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optimiser.betas must be two numbers in [0, 1)")
        _check(self.eps > 0, "optimiser.eps must be > 0")
        _check(self.grad_clip is None or self.grad_clip > 0, "optimiser.grad_clip must be > 0 or null")
        _check(self.max_skipped_steps >= 0, "optimiser.max_skipped_steps must be >= 0")
        _check(self.warmup_steps >= 0, "optimiser.warmup_steps must be >= 0")
        _check(self.lr_schedule in ("constant", "cosine"), "optimiser.lr_schedule must be 'constant' or 'cosine'")
        _check(0 <= self.min_lr_ratio <= 1, "optimiser.min_lr_ratio must be in [0, 1]")
        _check(self.restart_step >= 0, "optimiser.restart_step must be >= 0")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights; ``decay: null`` disables it."""

    decay: float | None = 0.999
    warmup: bool = True

    def validate(self) -> None:
        _check(self.decay is None or 0 <= self.decay < 1, "ema.decay must be in [0, 1) or null")


@dataclass
class TrainingConfig:
    """Loop length, intervals, seeding, device and precision."""

    steps: int = 1000
    batch_size: int = 32
    log_every: int = 10
    eval_every: int = 0
    ckpt_every: int = 500
    keep_last: int = 3
    best_metric: str | None = None
    best_mode: str = "min"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    max_minutes: float | None = None
    progress: bool = True

    def validate(self) -> None:
        _check(self.steps >= 1, "training.steps must be >= 1")
        _check(self.batch_size >= 1, "training.batch_size must be >= 1")
        for name in ("log_every", "eval_every", "ckpt_every"):
            _check(getattr(self, name) >= 0, f"training.{name} must be >= 0 (0 disables)")
        _check(self.keep_last >= 1, "training.keep_last must be >= 1")
        _check(self.best_mode in ("min", "max"), "training.best_mode must be 'min' or 'max'")
        _check(self.best_metric is None or self.eval_every > 0,
               "training.best_metric needs training.eval_every > 0 (without evaluation no best checkpoint is kept)")
        _check(self.precision in ("fp32", "bf16"), "training.precision must be 'fp32' or 'bf16'")
        _check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "training.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        _check(self.max_minutes is None or self.max_minutes > 0, "training.max_minutes must be > 0 or null")


@dataclass
class Config:
    """A whole training config. ``model``, ``schedule`` and ``data`` belong to the task."""

    task: str
    output_dir: str = "runs/default"
    name: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    optimiser: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> None:
        _check(isinstance(self.task, str) and bool(self.task), "task must be a non-empty string")
        self.optimiser.validate()
        self.ema.validate()
        self.training.validate()
        _check(self.optimiser.restart_step < self.training.steps,
               f"optimiser.restart_step must be < training.steps ({self.training.steps}): a restart at "
               f"{self.optimiser.restart_step} would never happen")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable plain dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


_ALIASES = {"network": "model", "diffusion": "schedule", "optimizer": "optimiser"}
_TYPED = {"optimiser": OptimConfig, "ema": EMAConfig, "training": TrainingConfig}
_FREEFORM = ("model", "schedule", "data")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _unknown(key: str, known: Iterable[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(known)}"
    return ConfigError(f"unknown key {where + key!r}{hint}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML scalar to the dataclass field type (int -> float, list -> tuple)."""
    text = str(annotation)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be null")
    if text.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, "float", where) for v in value)
    base = text.replace(" | None", "").strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def parse_section(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and coercing scalar types.

    Parameters
    ----------
    cls
        A dataclass whose field annotations are simple (``int``, ``float``, ``str``, ``bool``,
        ``X | None``, ``tuple[float, ...]``); other annotations are passed through unchanged.
    data
        The mapping read from YAML (``None`` means "all defaults").
    where
        Prefix for error messages, e.g. ``"model."``.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"section {where.rstrip('.') or cls.__name__} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(str(key), fields, where)
        kwargs[key] = _coerce(value, fields[key].type, f"{where}{key}")
    return cls(**kwargs)


def _canonical(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Rename alias sections (``network`` -> ``model``, ...), rejecting a section given twice."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        canon = _ALIASES.get(key, key)
        if canon in data:
            raise ConfigError(f"section {canon!r} given twice (as {key!r} and under another name)")
        data[canon] = value
    return data


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a raw mapping (as loaded from YAML) into a :class:`Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping at top level, got {type(raw).__name__}")
    data = _canonical(raw)
    known = {f.name for f in dataclasses.fields(Config)}
    for key in data:
        if key not in known:
            raise _unknown(str(key), known | set(_ALIASES), "")
    if "task" not in data:
        raise ConfigError("missing required key 'task' (a registered name or 'module:attribute')")
    kwargs: dict[str, Any] = {"task": data["task"]}
    if "output_dir" in data:
        _check(data["output_dir"] is not None and str(data["output_dir"]) != "", "output_dir must be a non-empty path")
        kwargs["output_dir"] = str(data["output_dir"])
    if "name" in data:
        kwargs["name"] = data["name"] if data["name"] is None else str(data["name"])
    for key in _FREEFORM:
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"section {key!r} must be a mapping, got {type(value).__name__}")
        kwargs[key] = dict(value)
    for key, cls in _TYPED.items():
        kwargs[key] = parse_section(cls, data.get(key), f"{key}.")
    cfg = Config(**kwargs)
    cfg.validate()
    return cfg


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides in place; values are parsed as YAML (``1e-4``, ``[1, 2]``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = [p for p in key.strip().split(".")]
        parts[0] = _ALIASES.get(parts[0], parts[0])
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
    return raw


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides and validate.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return config_from_dict(apply_overrides(_canonical(raw), overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
