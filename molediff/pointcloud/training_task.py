"""Training task for class-conditional point-cloud diffusion on procedural shapes.

Used by the shared trainer (``molediff train configs/pointcloud_egnn.yaml``) through
``task: molediff.pointcloud.training_task:PointCloudTask``. The loss is EDM denoising score
matching (:func:`molediff.core.losses.edm_loss`) in :class:`~molediff.core.spaces.CenteredSpace`
over a flat graph batch of clouds; each cloud's label is replaced by the null class with
probability ``model.class_dropout`` so one network serves classifier-free guidance. Config::

    task: molediff.pointcloud.training_task:PointCloudTask
    model: {network: egnn, hidden: 64, num_layers: 4, knn: 16, class_dropout: 0.1}
    schedule: {sigma_data: 0.577, p_mean: -1.2, p_std: 1.2}
    data: {num_points: 256, num_per_class: 500, seed: 0, rotate: false}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from molediff.core.losses import edm_loss
from molediff.core.spaces import CenteredSpace
from molediff.data.shapes import SHAPE_CLASSES, make_shapes
from molediff.pointcloud.model import build_point_denoiser, flatten_clouds
from molediff.training.config import ConfigError, parse_section
from molediff.training.distributed import ShardedBatchSampler

__all__ = ["PointCloudTask", "PointModelConfig", "PointScheduleConfig", "PointDataConfig", "parse_point_config"]


@dataclass
class PointModelConfig:
    """``model``: network ``egnn`` (uses ``hidden, num_layers, knn``) or ``pointnet`` (``hidden, num_layers``)."""

    network: str = "egnn"
    hidden: int = 64
    num_layers: int = 4
    knn: int = 16
    class_dropout: float = 0.1


@dataclass
class PointScheduleConfig:
    """``schedule``: EDM preconditioning / loss and the default sampling grid."""

    sigma_data: float = 0.577  # RMS radius ~1 per cloud -> about 1/sqrt(3) per coordinate
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0


@dataclass
class PointDataConfig:
    """``data``: procedural shapes (:mod:`molediff.data.shapes`)."""

    num_points: int = 256
    num_per_class: int = 500
    classes: list = field(default_factory=lambda: list(SHAPE_CLASSES))
    seed: int = 0
    rotate: bool = False
    val_per_class: int = 8


def parse_point_config(
    model: Mapping[str, Any], schedule: Mapping[str, Any], data: Mapping[str, Any]
) -> tuple[PointModelConfig, PointScheduleConfig, PointDataConfig]:
    """Validate the three free-form config sections (unknown keys raise ``ConfigError``)."""
    m = parse_section(PointModelConfig, model, "model.")
    s = parse_section(PointScheduleConfig, schedule, "schedule.")
    d = parse_section(PointDataConfig, data, "data.")
    if not 0.0 <= m.class_dropout < 1.0:
        raise ConfigError(f"model.class_dropout must be in [0, 1), got {m.class_dropout}")
    unknown = [c for c in d.classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ConfigError(f"data.classes: unknown shape class(es) {unknown}; choose from {SHAPE_CLASSES}")
    return m, s, d


def build_from_config(m: PointModelConfig, s: PointScheduleConfig) -> nn.Module:
    """The EDM-preconditioned denoiser described by the ``model`` / ``schedule`` sections."""
    kwargs: dict[str, Any] = {"hidden": m.hidden, "num_layers": m.num_layers}
    if m.network == "egnn":
        kwargs["knn"] = m.knn
    else:
        kwargs = {"hidden": m.hidden, "num_blocks": m.num_layers}
    return build_point_denoiser(m.network, len(SHAPE_CLASSES), s.sigma_data, **kwargs)


class _CloudBatches:
    def __init__(self, points: torch.Tensor, labels: torch.Tensor, sampler: ShardedBatchSampler) -> None:
        self.points, self.labels, self.sampler = points, labels, sampler

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.sampler:
            yield self.points[idx], self.labels[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class PointCloudTask:
    """Trainer task: EDM DSM with class dropout on procedural shapes (see module docstring)."""

    def __init__(self) -> None:
        self.model_cfg = PointModelConfig()
        self.sched_cfg = PointScheduleConfig()
        self._loss = edm_loss()

    def build_model(self, cfg: Any) -> nn.Module:
        self.model_cfg, self.sched_cfg, _ = parse_point_config(cfg.model, cfg.schedule, cfg.data)
        s = self.sched_cfg
        self._loss = edm_loss(s.sigma_data, s.p_mean, s.p_std)
        return build_from_config(self.model_cfg, s)

    def train_loader(self, cfg: Any, rank: int, world_size: int, generator: torch.Generator) -> _CloudBatches:
        d = parse_point_config(cfg.model, cfg.schedule, cfg.data)[2]
        points, labels = make_shapes(d.num_per_class, d.num_points, classes=d.classes, split="train",
                                     seed=d.seed, rotate=d.rotate)
        sampler = ShardedBatchSampler(len(labels), cfg.training.batch_size, rank, world_size, generator)
        return _CloudBatches(points, labels, sampler)

    def _dsm(self, model: nn.Module, points: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
             sigma: torch.Tensor | None = None) -> torch.Tensor:
        x0, batch = flatten_clouds(points)
        space = CenteredSpace(batch, num_graphs=points.shape[0])
        return self._loss(model, x0, space=space, generator=generator, sigma=sigma, batch=batch, label=labels)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        points, labels = batch
        p = self.model_cfg.class_dropout
        if p > 0:
            drop = torch.rand(labels.shape, generator=generator, device=generator.device) < p
            labels = torch.where(drop.to(labels.device), torch.full_like(labels, len(SHAPE_CLASSES)), labels)
        return self._dsm(model, points, labels, generator), {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Any) -> dict[str, float]:
        """Conditional DSM loss on validation shapes at fixed noise levels (fixed noise seed)."""
        d = parse_point_config(cfg.model, cfg.schedule, cfg.data)[2]
        device = next(model.parameters()).device
        points, labels = make_shapes(d.val_per_class, d.num_points, classes=d.classes, split="validation",
                                     seed=d.seed, rotate=d.rotate)
        points, labels = points.to(device), labels.to(device)
        out: dict[str, float] = {}
        total = 0.0
        for sigma in (0.05, 0.2, 0.5, 1.5):
            g = torch.Generator(device=device).manual_seed(1234)
            sig = torch.full((len(labels),), sigma, device=device)
            value = float(self._dsm(model, points, labels, g, sigma=sig))
            out[f"loss_sigma{sigma:g}"] = value
            total += value
        out["loss"] = total / 4
        return out

    def model_card(self, cfg: Any, model: nn.Module) -> dict[str, Any]:
        return {
            "name": f"class-conditional point-cloud denoiser ({self.model_cfg.network})",
            "classes": list(SHAPE_CLASSES),
            "null_class": len(SHAPE_CLASSES),
            "parameters": sum(p.numel() for p in model.parameters()),
            "model": asdict(self.model_cfg),
            "schedule": asdict(self.sched_cfg),
        }
