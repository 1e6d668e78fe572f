"""Load a trained point-cloud denoiser and generate class-conditional clouds with any core sampler.

Generation = prior noise in :class:`~molediff.core.spaces.CenteredSpace` at ``σ_max``, a Karras
σ grid, one of :data:`molediff.core.samplers.SAMPLERS`, and (for ``guidance != 1``)
:class:`~molediff.core.guidance.ClassifierFreeGuidance` against the null class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from molediff.core.guidance import ClassifierFreeGuidance
from molediff.core.samplers import prior_sample, sample
from molediff.core.schedules import karras_sigmas
from molediff.core.spaces import CenteredSpace
from molediff.data.shapes import SHAPE_CLASSES
from molediff.file_pair import file_pair, pair_stem
from molediff.pointcloud.model import flatten_clouds, unflatten_clouds
from molediff.pointcloud.training_task import build_from_config, parse_point_config

__all__ = ["ModelLoadError", "generate_point_clouds", "load_point_model", "parse_labels"]


class ModelLoadError(RuntimeError):
    """A model file is missing, of the wrong kind, or does not match its config."""


def load_point_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a point-cloud denoiser from an exported model or a trainer checkpoint.

    Parameters
    ----------
    path
        A run folder (uses its ``model.json``), an exported ``model.json`` / ``.safetensors``, or a
        checkpoint sidecar ``checkpoints/step_N.json`` (its EMA weights are used when present).
    device
        Where to put the model (returned in eval mode).

    Returns
    -------
    ``(denoiser, info)`` where ``info`` holds ``config`` (the training config dict) and ``step``.
    """
    from molediff.core.device import require_device
    from molediff.training.checkpoint import CheckpointError, load_checkpoint
    from molediff.training.export import FORMAT as EXPORT_FORMAT
    from molediff.training.export import ExportError, load_exported

    require_device(device)  # a clear error (a ValueError) before reading anything
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    stem = pair_stem(path)
    meta_path, weights_path = file_pair(path)
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelLoadError(f"{stem}: need both {meta_path.name} and {weights_path.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model description {meta_path}: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("config") or {}, dict):
        raise ModelLoadError(f"{meta_path}: not a model description (expected a JSON object with a 'config' object)")
    config = meta.get("config") or {}
    try:
        m, s, _ = parse_point_config(config.get("model", {}), config.get("schedule", {}), config.get("data", {}))
    except ValueError as exc:
        raise ModelLoadError(f"{meta_path}: not a point-cloud model config: {exc}") from exc
    if meta.get("format") == EXPORT_FORMAT:  # size and SHA-256 checked against the JSON where recorded
        try:
            tensors, _ = load_exported(meta_path)
        except ExportError as exc:
            raise ModelLoadError(str(exc)) from exc
    else:  # trainer checkpoint (size and SHA-256 checked against its sidecar): prefer the EMA section
        try:
            tensors = load_checkpoint(meta_path).tensors
        except CheckpointError as exc:
            raise ModelLoadError(str(exc)) from exc
        prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model = build_from_config(m, s)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ModelLoadError(f"{weights_path}: weights do not match the config: {exc}") from exc
    return model.to(device).eval(), {"config": config, "step": meta.get("step")}


def parse_labels(spec: str | int | None, count: int) -> Tensor:
    """Labels ``[count]`` for a class name, an index, ``"all"`` (cycle through classes) or ``None`` / ``"none"``
    (the null class: unconditional)."""
    if spec is None or spec == "none":
        return torch.full((count,), len(SHAPE_CLASSES), dtype=torch.long)
    if spec == "all":
        return torch.arange(count, dtype=torch.long) % len(SHAPE_CLASSES)
    if isinstance(spec, str) and not spec.isdigit():
        if spec not in SHAPE_CLASSES:
            raise ValueError(f"unknown class {spec!r}; choose from {SHAPE_CLASSES}, 'all' or 'none'")
        return torch.full((count,), SHAPE_CLASSES.index(spec), dtype=torch.long)
    index = int(spec)
    if not 0 <= index <= len(SHAPE_CLASSES):
        raise ValueError(f"class index {index} outside [0, {len(SHAPE_CLASSES)}]")
    return torch.full((count,), index, dtype=torch.long)


@torch.no_grad()
def generate_point_clouds(
    denoiser: nn.Module,
    labels: Tensor,
    num_points: int,
    *,
    sampler: str = "heun",
    steps: int = 32,
    guidance: float = 1.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **sampler_kwargs: Any,
) -> Tensor:
    """Sample one cloud per label.

    Parameters
    ----------
    denoiser
        ``D(x, sigma, *, batch, label)`` (see :mod:`molediff.pointcloud.model`).
    labels
        Class index per cloud; ``len(SHAPE_CLASSES)`` is the null class.
    num_points
        Points per cloud ``P``.
    sampler, steps
        Name in :data:`molediff.core.samplers.SAMPLERS` and number of σ steps (Karras grid, ρ = 7).
    guidance
        Classifier-free guidance weight ``w`` (1: plain conditional, 0: unconditional, > 1: guided); finite.
    seed
        Seed of the prior draw and of stochastic samplers.

    Shapes
    ------
    ``labels: [B]`` -> ``[B, P, 3]`` (zero mean per cloud).
    """
    if not math.isfinite(guidance):
        raise ValueError(f"guidance weight must be finite, got {guidance}")
    device = torch.device(device)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-d tensor, got shape {list(labels.shape)}")
    num = labels.shape[0]
    batch = flatten_clouds(torch.zeros(num, num_points, 3, device=device))[1]
    space = CenteredSpace(batch, num_graphs=num)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    dtype = next(denoiser.parameters()).dtype
    x = prior_sample(space, (num * num_points, 3), sigma_max, gen, dtype=dtype, device=device)
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, device=device, dtype=dtype)
    if guidance == 1.0:
        fn, cond = denoiser, {"label": labels}
    else:
        null = torch.full_like(labels, len(SHAPE_CLASSES))
        fn, cond = ClassifierFreeGuidance(denoiser, {"label": labels}, {"label": null}, guidance, space=space), {}
    x = sample(sampler, fn, x, sigmas, space=space, generator=gen, batch=batch, **cond, **sampler_kwargs)
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("sampling produced non-finite coordinates")
    return unflatten_clouds(x, num)
