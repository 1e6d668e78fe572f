"""Training task for the conformer model (plugs into :class:`molediff.training.trainer.Trainer`).

Config sections (``configs/conformer_*.yaml``)::

    task: conformer
    model:    {network: egnn, network_kwargs: {...}, sigma_data: 1.4, sigma_max: 10.0, ...}  # ConformerModelConfig
    schedule: {p_mean: -1.8, p_std: 1.5}        # EDM log-normal σ sampling, EDM loss weighting
    data:     {source: qm9, limit: null, val_limit: 512}   # or {packed_train: f.safetensors, packed_val: ...}

Data come as :class:`~molediff.data.packed.PackedGraphs`, so a job can run from packed files on a
machine without RDKit. Noise is drawn in the model's prior (``model.prior``: isotropic or harmonic, zero
centre of mass per molecule; :mod:`molediff.chem.prior`), the loss is :func:`molediff.core.losses.edm_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from molediff.chem.model import ConformerModel, ConformerModelConfig
from molediff.core.losses import edm_loss
from molediff.data.packed import GraphBatch, PackedGraphs
from molediff.training.config import Config, parse_section
from molediff.training.distributed import ShardedBatchSampler

__all__ = ["ConformerTask", "ConformerScheduleConfig", "ConformerDataConfig", "EVAL_SIGMAS"]

#: fixed noise levels (Å) at which validation losses are reported
EVAL_SIGMAS = (0.05, 0.2, 1.0, 5.0)


@dataclass
class ConformerScheduleConfig:
    p_mean: float = -1.8
    p_std: float = 1.5


@dataclass
class ConformerDataConfig:
    source: str = "qm9"
    limit: int | None = None
    val_limit: int = 512
    packed_train: str | None = None
    packed_val: str | None = None
    cache_dir: str | None = None


def load_split(data: ConformerDataConfig, split: str) -> PackedGraphs:
    """The packed graphs of a split, from a packed file or the QM9 cache."""
    packed = data.packed_train if split == "train" else data.packed_val
    if packed:
        store = PackedGraphs.load(packed)
    elif data.source == "qm9":
        from molediff.data.qm9 import load_qm9

        store = load_qm9(split, cache_dir=data.cache_dir).to_packed()
    else:
        raise ValueError(f"data.source must be 'qm9' or packed files must be given, got {data.source!r}")
    limit = data.limit if split == "train" else data.val_limit
    if limit is not None and limit < len(store):
        store = store.subset(torch.arange(limit))
    return store


class _Batches:
    def __init__(self, store: PackedGraphs, sampler: ShardedBatchSampler) -> None:
        self.store, self.sampler = store, sampler

    def __iter__(self) -> Iterator[GraphBatch]:
        for idx in self.sampler:
            yield self.store.batch(torch.as_tensor(idx))

    def __len__(self) -> int:
        return len(self.sampler)


def graph_loss(model: nn.Module, batch: GraphBatch, loss_fn, generator: torch.Generator, sigma=None) -> torch.Tensor:
    """Per-molecule EDM denoising loss ``[B]`` of one batch, noised in the model's prior (zero CoM)."""
    inner = model.module if hasattr(model, "module") else model
    space = inner.noise_space(batch.batch, batch.edge_index, batch.edge_attr, batch.num_graphs)
    x0 = space.project(batch.pos)  # data live in the zero-centre-of-mass subspace
    return loss_fn(model, x0, space=space, generator=generator, reduction="none", sigma=sigma, **batch.cond())


class ConformerTask:
    """EDM denoising score matching of molecular geometries given the molecular graph."""

    def __init__(self) -> None:
        self.loss_fn = edm_loss()
        self._train: PackedGraphs | None = None
        self._val: PackedGraphs | None = None

    def _parts(self, cfg: Config) -> tuple[ConformerModelConfig, ConformerScheduleConfig, ConformerDataConfig]:
        return (
            ConformerModelConfig.from_dict(cfg.model),
            parse_section(ConformerScheduleConfig, cfg.schedule, "schedule."),
            parse_section(ConformerDataConfig, cfg.data, "data."),
        )

    def build_model(self, cfg: Config) -> nn.Module:
        model_cfg, sched, _ = self._parts(cfg)
        self.loss_fn = edm_loss(model_cfg.sigma_data, sched.p_mean, sched.p_std)
        return ConformerModel(model_cfg)

    def train_loader(self, cfg: Config, rank: int, world_size: int, generator: torch.Generator) -> _Batches:
        if self._train is None:
            self._train = load_split(self._parts(cfg)[2], "train")
        sampler = ShardedBatchSampler(len(self._train), cfg.training.batch_size, rank, world_size, generator)
        return _Batches(self._train, sampler)

    def loss(self, model: nn.Module, batch: GraphBatch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        per_mol = graph_loss(model, batch, self.loss_fn, generator)
        return per_mol.mean(), {"atoms": float(batch.pos.shape[0])}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, cfg: Config) -> dict[str, float]:
        """Validation loss at fixed σ levels on a fixed subset (seeded, so runs are comparable)."""
        if self._val is None:
            self._val = load_split(self._parts(cfg)[2], "valid")
        device = next(model.parameters()).device
        out: dict[str, float] = {}
        for s in EVAL_SIGMAS:
            g = torch.Generator(device=device).manual_seed(1234)
            total, count = 0.0, 0
            for start in range(0, len(self._val), 256):
                b = self._val.batch(torch.arange(start, min(start + 256, len(self._val)))).to(device)
                sigma = torch.full((b.num_graphs,), s, device=device)
                per_mol = graph_loss(model, b, self.loss_fn, g, sigma=sigma)
                total, count = total + float(per_mol.sum()), count + b.num_graphs
            out[f"loss_sigma_{s:g}"] = total / count
        out["loss"] = sum(out.values()) / len(EVAL_SIGMAS)
        return out

    def model_card(self, cfg: Config, model: nn.Module) -> dict[str, Any]:
        inner = model.module if hasattr(model, "module") else model
        return {
            "name": inner.config.name,
            "parameters": sum(p.numel() for p in inner.parameters()),
            "data": dict(cfg.data),
            "split_rule": "QM9 Index % 10 == 0 test, == 1 validation, else train",
        }
