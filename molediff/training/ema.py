"""Exponential moving average (EMA) of model parameters.

The EMA weights are what a diffusion model ships and evaluates with; the raw weights are
what the optimiser updates. ``decay_t = min(decay, (1 + n) / (10 + n))`` with warmup (n =
number of updates so far), so early averages are not dominated by the random init.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copies of a module's floating-point parameters, updated as ``s <- d s + (1 - d) p``.

    Parameters
    ----------
    model
        The module whose parameters are tracked (the unwrapped module, not a DDP wrapper).
    decay
        Target decay in ``[0, 1)``.
    warmup
        Use ``min(decay, (1 + n) / (10 + n))`` for the n-th update.

    Examples
    --------
    >>> ema = EMA(model, decay=0.999)
    >>> ema.update(model)          # after each optimiser step
    >>> with ema.swapped(model):   # evaluate with the averaged weights
    ...     evaluate(model)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.dtype.is_floating_point
        }

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every shadow tensor towards the current parameter value."""
        d = self.current_decay()
        for name, p in model.named_parameters():
            shadow = self.shadow.get(name)
            if shadow is not None:
                shadow.lerp_(p.detach().to(shadow.dtype), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the EMA weights."""
        params = dict(model.named_parameters())
        for name, shadow in self.shadow.items():
            params[name].copy_(shadow)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model``; the raw weights come back on exit."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        try:
            self.copy_to(model)
            yield model
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    params[name].copy_(saved)

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with parameters replaced by their EMA (buffers as they are)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, shadow in self.shadow.items():
            state[name] = shadow.detach().clone()
        return state

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "warmup", "num_updates", "shadow": {name: tensor}}``."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the tracked parameter names must match exactly."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing, extra = set(self.shadow) - set(shadow), set(shadow) - set(self.shadow)
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.num_updates = int(state["num_updates"])
