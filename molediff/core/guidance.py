"""Guidance: classifier-free guidance, composition of conditions and fixed-subset (inpainting) constraints.

All three are denoiser wrappers, so every sampler uses them unchanged. At fixed ``(x, σ)`` the score is affine
in the denoiser, ``s = (D - x)/σ²``, so combining scores is the same as combining denoisers:

* classifier-free guidance (Ho & Salimans 2022): ``D = D_∅ + w (D_c - D_∅)`` (``w=0`` unconditional,
  ``w=1`` conditional, ``w>1`` guided);
* product of conditions: ``s(x|c1, c2) = s(x|c1) + s(x|c2) - s(x)``, i.e. ``D = D_∅ + Σ_i w_i (D_ci - D_∅)``.

All conditions and the null condition are evaluated in ONE batched call: ``x`` is repeated ``k + 1`` times
along rows and the condition tensors are concatenated by :func:`concat_cond` (which offsets PyG ``batch`` and
``edge_index`` so that graph batches stay valid).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .noise import NoiseGenerator, normal
from .spaces import Space
from .utils import ShapeError, append_dims, as_row_sigma

__all__ = ["concat_cond", "ComposedGuidance", "ClassifierFreeGuidance", "FixedSubset", "PenaltyGuidance", "PenaltySum",
           "SigmaWindow", "penalty_gradient"]


def concat_cond(
    conds: Sequence[Dict[str, Any]], num_rows: int, num_graphs: Optional[int] = None,
) -> Dict[str, Any]:
    """Concatenate condition dicts of ``len(conds)`` stacked copies of a batch with ``num_rows`` rows.

    Tensors are concatenated along dim 0, except ``batch`` (offset by the number of graphs of each copy) and
    ``edge_index`` (concatenated along dim 1, offset by ``num_rows``). Non-tensors must be equal in all copies.

    Parameters
    ----------
    conds : sequence of dict
        One condition dict per copy, all with the same keys.
    num_rows : int
        Rows (nodes) of one copy.
    num_graphs : int, optional
        Graphs of one copy, empty ones included. The default ``batch.max() + 1`` misses trailing empty graphs,
        which misaligns per-graph condition tensors (``[num_graphs, ...]``) of every later copy: pass it (or
        the space to :class:`ComposedGuidance`) whenever a batch may end in empty graphs.
    """
    keys = set(conds[0])
    for c in conds[1:]:
        if set(c) != keys:
            raise ValueError(f"all conditions must have the same keys, got {sorted(keys)} and {sorted(c)}")
    out: Dict[str, Any] = {}
    for k in keys:
        vals = [c[k] for c in conds]
        if not isinstance(vals[0], Tensor):
            if any(v is not vals[0] and v != vals[0] for v in vals[1:]):
                raise ValueError(f"non-tensor condition {k!r} differs between conditions")
            out[k] = vals[0]
        elif k == "batch":
            step = int(vals[0].max()) + 1 if vals[0].numel() else 0
            if num_graphs is not None:
                if int(num_graphs) < step:
                    raise ValueError(f"batch refers to graph {step - 1} but num_graphs={num_graphs}")
                step = int(num_graphs)
            out[k] = torch.cat([v + i * step for i, v in enumerate(vals)])
        elif k == "edge_index":
            out[k] = torch.cat([v + i * num_rows for i, v in enumerate(vals)], dim=1)
        else:
            out[k] = torch.cat(vals)
    return out


class ComposedGuidance(nn.Module):
    """``D = D_∅ + Σ_i w_i (D(x, σ, **c_i) - D_∅)``, all terms in one batched denoiser call.

    Parameters
    ----------
    denoiser : callable
        ``D(x, σ, **cond)``.
    conds : list of dict
        The conditions ``c_i`` (keys passed to the denoiser).
    null_cond : dict
        The null condition (same keys; e.g. the "empty" label the network was trained with).
    weights : sequence of float, optional
        ``w_i`` (default 1 each: the product of the conditional densities over the prior).
    space : Space, optional
        The sampler's space; for a graph batch its ``num_samples`` (the number of graphs, empty ones included)
        offsets ``batch`` in the stacked call. Without it the offset is ``batch.max() + 1``, wrong for a batch
        that ends in empty graphs when conditions hold per-graph tensors.

    Shapes
    ------
    x: ``[N, ...]``; sigma: ``[N]``; condition tensors: ``[N, ...]`` or per graph.
    """

    def __init__(
        self, denoiser: Callable, conds: List[Dict[str, Any]], null_cond: Dict[str, Any],
        weights: Optional[Sequence[float]] = None, *, space: Optional[Space] = None,
    ) -> None:
        super().__init__()
        if len(conds) == 0:
            raise ValueError("need at least one condition")
        weights = [1.0] * len(conds) if weights is None else [float(w) for w in weights]
        if len(weights) != len(conds):
            raise ValueError(f"got {len(weights)} weights for {len(conds)} conditions")
        self.denoiser, self.conds, self.null_cond, self.weights = denoiser, list(conds), dict(null_cond), weights
        self.space = space

    def forward(self, x: Tensor, sigma: Tensor, **shared: Any) -> Tensor:
        sigma = as_row_sigma(sigma, x)
        k = len(self.conds) + 1
        num_graphs = self.space.num_samples(x) if self.space is not None else None
        cond = concat_cond([{**shared, **c} for c in [self.null_cond, *self.conds]], x.shape[0], num_graphs)
        out = self.denoiser(x.repeat(k, *([1] * (x.ndim - 1))), sigma.repeat(k), **cond)
        parts = out.chunk(k)
        d = parts[0]
        for w, dc in zip(self.weights, parts[1:]):
            d = d + w * (dc - parts[0])
        return d


class ClassifierFreeGuidance(ComposedGuidance):
    """Classifier-free guidance ``D_∅ + w (D_c - D_∅)`` (Ho & Salimans 2022); ``w=0`` uncond, ``w=1`` cond."""

    def __init__(
        self, denoiser: Callable, cond: Dict[str, Any], null_cond: Dict[str, Any], weight: float, *,
        space: Optional[Space] = None,
    ) -> None:
        super().__init__(denoiser, [cond], null_cond, [weight], space=space)


class FixedSubset(nn.Module):
    """Hold the entries of ``x`` where ``mask`` is true at ``known`` values (inpainting / imputation).

    The wrapped denoiser returns ``known`` on the mask, so in σ-form the masked entries of the sampler state
    are always ``known + σ n`` (the correctly noised values) and end exactly at ``known``. With
    ``renoise=True`` the inner denoiser additionally sees freshly noised known entries ``known + σ z`` at every
    call (the replacement method of Song et al. 2021, Sec. 5/App. I). Replacement only approximates the exact
    conditional (the free entries cannot correct early mode choices). Use with a space whose projection does not
    move known entries (e.g. Euclidean), or fix whole graphs.

    Shapes
    ------
    known, mask: broadcastable to x ``[N, ...]``.
    """

    def __init__(
        self, denoiser: Callable, known: Tensor, mask: Tensor, *, renoise: bool = False,
        space: Optional[Space] = None, generator: NoiseGenerator = None,
    ) -> None:
        super().__init__()
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        self.denoiser, self.known, self.mask = denoiser, known, mask
        self.renoise, self.space, self.generator = renoise, space, generator

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        sigma = as_row_sigma(sigma, x)
        try:
            known = torch.broadcast_to(self.known, x.shape)
        except RuntimeError:
            raise ShapeError(f"known {list(self.known.shape)} does not broadcast to x {list(x.shape)}") from None
        if self.renoise:
            noise = self.space.randn_like(x, self.generator) if self.space is not None else normal(
                x.shape, self.generator, dtype=x.dtype, device=x.device)
            x = torch.where(self.mask, known + append_dims(sigma, x.ndim) * noise, x)
        return torch.where(self.mask, known, self.denoiser(x, sigma, **cond))


class PenaltyGuidance(nn.Module):
    """Pull the denoiser's estimate ``x̂0`` into the feasible set of a differentiable penalty.

    Within ``sigma_range`` each call refines ``x̂0 = D(x, σ)`` by ``iters`` gradient steps
    ``x̂0 <- x̂0 - step_size * ∇ penalty(x̂0)``; outside it the denoiser is returned unchanged. Every
    sampler that moves ``x`` toward ``x̂0`` then follows the corrected estimate, so a hard constraint
    that the network cannot express (the chirality of a tetrahedral centre for an E(3)-equivariant
    network, say) is steered into the sample while the noise still allows large moves, and the last,
    low-σ steps are the network's own. A penalty that is zero on feasible points leaves those
    estimates untouched (the correction is then the identity).

    Parameters
    ----------
    denoiser : callable
        ``D(x, σ, **cond) -> x̂0``.
    penalty : callable
        ``penalty(x̂0) -> scalar tensor``, differentiable; rows of ``x̂0`` are ``[N, ...]`` like ``x``. A
        penalty with a ``bind(x̂0, σ) -> penalty`` method is bound to the network's estimate (and the
        call's σ) once per call, so terms that depend on that estimate stay fixed while it is pulled;
        one with a ``gradient(x̂0) -> Tensor`` method gives its gradient in closed form, used instead of
        autograd (:func:`penalty_gradient`).
    sigma_range : (float, float)
        ``[σ_lo, σ_hi]`` in which the correction is applied (inclusive).
    iters, step_size : int, float
        Gradient steps per call and their size.
    max_move : float, optional
        Cap on the length of each row's move per step (rows of ``x`` are points: an atom moves at most
        this far), so a stiff penalty cannot blow up the estimate.

    Shapes
    ------
    ``x: [N, ...]``, ``sigma: [N]`` or scalar -> ``[N, ...]``.
    """

    def __init__(
        self, denoiser: Callable, penalty: Callable[[Tensor], Tensor], *,
        sigma_range: tuple[float, float] = (0.0, float("inf")), iters: int = 10, step_size: float = 0.1,
        max_move: float | None = None,
    ) -> None:
        super().__init__()
        if iters < 0 or step_size <= 0:
            raise ValueError(f"need iters >= 0 and step_size > 0, got {iters}, {step_size}")
        if not 0.0 <= sigma_range[0] <= sigma_range[1]:
            raise ValueError(f"sigma_range must be (lo, hi) with 0 <= lo <= hi, got {sigma_range}")
        if max_move is not None and max_move <= 0:
            raise ValueError(f"max_move must be > 0 or None, got {max_move}")
        self.denoiser, self.penalty = denoiser, penalty
        self.sigma_range, self.iters, self.step_size, self.max_move = sigma_range, iters, step_size, max_move

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        x0 = self.denoiser(x, sigma, **cond)
        s = float(as_row_sigma(sigma, x).max())
        if not self.sigma_range[0] <= s <= self.sigma_range[1]:
            return x0
        return self.project(x0, s, self.iters)

    def project(self, x0: Tensor, sigma: float, iters: int, step_size: float | None = None) -> Tensor:
        """``iters`` capped gradient steps of the penalty (bound to ``x0`` at noise level ``sigma``) from ``x0``.

        ``forward`` applies this to the network's estimate; applied to a finished sample it is a final
        clean-up that moves only the rows the penalty touches. ``x0: [N, ...]`` -> ``[N, ...]``, no graph.
        """
        y = x0.detach()
        bind = getattr(self.penalty, "bind", None)
        penalty = bind(y, sigma) if bind is not None else self.penalty
        step_size = self.step_size if step_size is None else step_size
        for _ in range(iters):
            move = step_size * penalty_gradient(penalty, y)
            if self.max_move is not None:
                norm = move.flatten(1).norm(dim=1).clamp_min(1e-12)
                move = move * append_dims(torch.clamp(self.max_move / norm, max=1.0), move.ndim)
            y = (y - move).detach()
        return y


def penalty_gradient(penalty: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``∇ penalty(x)``, shaped like ``x``: the penalty's own ``gradient(x)`` where it has one (a closed
    form, cheaper than recording and replaying a graph), autograd otherwise. The result carries no graph."""
    gradient = getattr(penalty, "gradient", None)
    if gradient is not None:
        return gradient(x.detach())
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(penalty(y), y)
    return grad


class PenaltySum:
    """``penalty(x) = Σ_i penalty_i(x)``, for :class:`PenaltyGuidance` with several independent terms.

    ``bind(x0, σ)`` binds every term that has a ``bind`` method; a term whose ``bind`` returns ``None``
    sits that call out (a term active only in part of the σ range). With no term left the penalty is
    zero (with a gradient of zeros).
    """

    def __init__(self, penalties: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.penalties = list(penalties)

    def bind(self, x0: Tensor, sigma: float | None = None) -> "PenaltySum":
        bound = []
        for penalty in self.penalties:
            bind = getattr(penalty, "bind", None)
            penalty = bind(x0, sigma) if bind is not None else penalty
            if penalty is not None:
                bound.append(penalty)
        return PenaltySum(bound)

    def gradient(self, x: Tensor) -> Tensor:
        """``Σ_i ∇ penalty_i(x)`` (:func:`penalty_gradient` of each term)."""
        total = torch.zeros_like(x)
        for penalty in self.penalties:
            total = total + penalty_gradient(penalty, x)
        return total

    def __call__(self, x: Tensor) -> Tensor:
        total = (x * 0).sum()
        for penalty in self.penalties:
            total = total + penalty(x)
        return total


class SigmaWindow:
    """A penalty that acts only in guidance calls with σ in ``sigma_range`` (for :class:`PenaltySum`).

    ``bind(x0, σ)`` returns ``None`` outside the range (the term sits the call out) and otherwise the
    wrapped penalty, bound in turn if it has a ``bind`` method.
    """

    def __init__(self, penalty: Callable[[Tensor], Tensor], sigma_range: tuple[float, float]) -> None:
        self.penalty, self.sigma_range = penalty, sigma_range

    def bind(self, x0: Tensor, sigma: float | None = None) -> Callable[[Tensor], Tensor] | None:
        if sigma is not None and not self.sigma_range[0] <= sigma <= self.sigma_range[1]:
            return None
        bind = getattr(self.penalty, "bind", None)
        return bind(x0, sigma) if bind is not None else self.penalty

    def gradient(self, x: Tensor) -> Tensor:
        """``∇ penalty(x)`` of the wrapped penalty (:func:`penalty_gradient`)."""
        return penalty_gradient(self.penalty, x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.penalty(x)
