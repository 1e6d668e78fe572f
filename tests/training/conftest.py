"""Shared fixtures for the trainer tests: single-threaded torch and tiny toy configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from molediff.training.config import Config, config_from_dict


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are ~50x faster single-threaded on a shared 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def toy_raw(out: Path, **training: Any) -> dict[str, Any]:
    """A raw config dict for the built-in toy task with small, fast settings."""
    base = {"steps": 20, "batch_size": 16, "log_every": 5, "eval_every": 0, "ckpt_every": 0,
            "progress": False, "device": "cpu", "seed": 3}
    base.update(training)
    return {
        "task": "toy",
        "output_dir": str(out),
        "model": {"hidden": 16, "layers": 2, "dropout": 0.1},
        "data": {"num_points": 96},
        "optimiser": {"lr": 3e-3, "warmup_steps": 4, "lr_schedule": "cosine", "weight_decay": 0.01},
        "ema": {"decay": 0.9},
        "training": base,
    }


@pytest.fixture
def toy_config() -> Callable[..., Config]:
    def make(out: Path, **training: Any) -> Config:
        return config_from_dict(toy_raw(out, **training))

    return make
