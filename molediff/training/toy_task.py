"""A tiny built-in task: denoise 2-D points from a ring of Gaussians with a small MLP.

It exercises every trainer feature (shuffled sharded batches, noise from the task's
generator, validation, model card) in milliseconds, for tests, examples and smoke runs::

    task: toy
    model: {hidden: 32, layers: 2}
    schedule: {sigma_min: 0.05, sigma_max: 2.0}
    data: {num_points: 256, modes: 6, seed: 0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from molediff.training.config import Config, parse_section
from molediff.training.distributed import ShardedBatchSampler

__all__ = ["ToyTask", "ToyModelConfig", "ToyScheduleConfig", "ToyDataConfig", "ToyDenoiser", "ring_of_gaussians"]


@dataclass
class ToyModelConfig:
    hidden: int = 32
    layers: int = 2
    dropout: float = 0.0


@dataclass
class ToyScheduleConfig:
    sigma_min: float = 0.05
    sigma_max: float = 2.0


@dataclass
class ToyDataConfig:
    num_points: int = 256
    modes: int = 6
    radius: float = 2.0
    std: float = 0.1
    seed: int = 0


def ring_of_gaussians(cfg: ToyDataConfig, seed_offset: int = 0) -> torch.Tensor:
    """``[num_points, 2]`` samples of ``modes`` Gaussians evenly spaced on a circle (deterministic)."""
    g = torch.Generator().manual_seed(cfg.seed + seed_offset)
    k = torch.randint(cfg.modes, (cfg.num_points,), generator=g)
    angle = 2 * math.pi * k.double() / cfg.modes
    centres = cfg.radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return (centres + cfg.std * torch.randn(cfg.num_points, 2, generator=g, dtype=torch.float64)).float()


class ToyDenoiser(nn.Module):
    """MLP ``(x [B, 2], log sigma [B]) -> eps_hat [B, 2]``."""

    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.SiLU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, sigma.log()[:, None]], dim=1))


class _Batches:
    def __init__(self, points: torch.Tensor, sampler: ShardedBatchSampler) -> None:
        self.points, self.sampler = points, sampler

    def __iter__(self) -> Iterator[torch.Tensor]:
        for idx in self.sampler:
            yield self.points[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class ToyTask:
    """ε-prediction denoising score matching on 2-D toy data (see module docstring)."""

    def _parts(self, cfg: Config) -> tuple[ToyModelConfig, ToyScheduleConfig, ToyDataConfig]:
        return (parse_section(ToyModelConfig, cfg.model, "model."),
                parse_section(ToyScheduleConfig, cfg.schedule, "schedule."),
                parse_section(ToyDataConfig, cfg.data, "data."))

    def __init__(self) -> None:
        self.schedule = ToyScheduleConfig()

    def build_model(self, cfg: Config) -> nn.Module:
        model_cfg, self.schedule, _ = self._parts(cfg)  # loss() gets no cfg: keep what it needs
        return ToyDenoiser(model_cfg)

    def train_loader(self, cfg: Config, rank: int, world_size: int, generator: torch.Generator) -> _Batches:
        data = ring_of_gaussians(self._parts(cfg)[2])
        sampler = ShardedBatchSampler(len(data), cfg.training.batch_size, rank, world_size, generator)
        return _Batches(data, sampler)

    def _dsm(self, model: nn.Module, x: torch.Tensor, sched: ToyScheduleConfig, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(x.shape[0], generator=generator, device=x.device)
        sigma = sched.sigma_min * (sched.sigma_max / sched.sigma_min) ** u
        eps = torch.randn(x.shape, generator=generator, device=x.device)
        return (model(x + sigma[:, None] * eps, sigma) - eps).square().mean()

    def loss(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self._dsm(model, batch, self.schedule, generator)
        return loss, {"batch_mean_norm": float(batch.norm(dim=1).mean())}

    def evaluate(self, model: nn.Module, cfg: Config) -> dict[str, float]:
        _, sched, data = self._parts(cfg)
        device = next(model.parameters()).device
        x = ring_of_gaussians(data, seed_offset=1).to(device)
        g = torch.Generator(device=device).manual_seed(1234)
        with torch.no_grad():
            return {"loss": float(self._dsm(model, x, sched, g))}

    def model_card(self, cfg: Config, model: nn.Module) -> dict[str, Any]:
        return {"name": "toy ring-of-Gaussians denoiser", "parameters": sum(p.numel() for p in model.parameters())}
