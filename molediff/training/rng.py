"""Random-number-generator states as ``uint8`` tensors (safetensors-friendly, no pickle).

Covers torch's CPU generator, every CUDA device's generator, numpy's legacy global
``RandomState``, Python's :mod:`random` and any extra :class:`torch.Generator` objects
(e.g. the data-order and noise generators owned by the trainer).
"""

from __future__ import annotations

import random
import struct
import warnings
from typing import Mapping

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]

_NP_TAIL = struct.Struct("<qqd")  # pos, has_gauss, cached_gaussian
_PY_HEAD = struct.Struct("<qqd")  # version, has_gauss_next, gauss_next


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _numpy_state() -> torch.Tensor:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    if name != "MT19937":  # pragma: no cover - numpy's legacy global generator is always MT19937
        raise RuntimeError(f"unsupported numpy bit generator {name}")
    data = np.asarray(keys, dtype="<u4").tobytes() + _NP_TAIL.pack(int(pos), int(has_gauss), float(cached))
    return _bytes_tensor(data)


def _set_numpy_state(t: torch.Tensor) -> None:
    raw = t.numpy().tobytes()
    keys = np.frombuffer(raw[: -_NP_TAIL.size], dtype="<u4").astype(np.uint32)
    pos, has_gauss, cached = _NP_TAIL.unpack(raw[-_NP_TAIL.size :])
    np.random.set_state(("MT19937", keys, pos, has_gauss, cached))


def _python_state() -> torch.Tensor:
    version, internal, gauss_next = random.getstate()
    head = _PY_HEAD.pack(int(version), gauss_next is not None, 0.0 if gauss_next is None else float(gauss_next))
    return _bytes_tensor(head + np.asarray(internal, dtype="<u4").tobytes())


def _set_python_state(t: torch.Tensor) -> None:
    raw = t.numpy().tobytes()
    version, has_gauss, gauss = _PY_HEAD.unpack(raw[: _PY_HEAD.size])
    internal = tuple(int(v) for v in np.frombuffer(raw[_PY_HEAD.size :], dtype="<u4"))
    random.setstate((version, internal, gauss if has_gauss else None))


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    """Snapshot all global RNGs plus ``generators`` as ``{name: uint8 tensor}``.

    Keys: ``torch_cpu``, ``cuda.<i>`` (one per visible device, only if CUDA is initialised),
    ``numpy``, ``python``, and ``gen.<name>`` for each extra generator.
    """
    state = {"torch_cpu": torch.get_rng_state().clone(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s.clone()
    for name, gen in (generators or {}).items():
        state[f"gen.{name}"] = gen.get_state().clone()
    return state


def restore_rng_state(
    state: Mapping[str, torch.Tensor], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored if the device count matches.

    A generator whose saved state has another size (it was saved on another device type: a CPU run
    resumed on a GPU, or back) cannot take that state; it is reseeded deterministically from the
    saved bytes, with a warning, so such a resume is reproducible but not bitwise that of one device.
    """
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8).cpu())
    _set_numpy_state(state["numpy"])
    _set_python_state(state["python"])
    cuda = sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([state[k].cpu() for k in cuda])
        else:
            warnings.warn("checkpoint has CUDA RNG states for a different device count; not restored", stacklevel=2)
    for name, gen in (generators or {}).items():
        key = f"gen.{name}"
        if key not in state:
            raise KeyError(f"RNG state for generator {name!r} is missing from the checkpoint")
        saved = state[key].cpu()
        if saved.numel() != gen.get_state().numel():  # saved on another device type (CPU <-> CUDA)
            seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(int(saved.sum()))))
            warnings.warn(f"RNG state of generator {name!r} was saved on another device type; reseeded from it",
                          stacklevel=2)
            gen.manual_seed(seed)
            continue
        gen.set_state(saved)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's :mod:`random`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
