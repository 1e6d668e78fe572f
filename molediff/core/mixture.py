"""A Gaussian mixture with closed-form diffused density, score and denoiser: the analytic oracle.

For ``x0 ~ Σ_k w_k N(μ_k, diag(s_k²))`` and ``x = x0 + σ ε`` the noisy marginal is
``Σ_k w_k N(μ_k, diag(s_k² + σ²))`` and the ideal denoiser is
``D(x, σ) = E[x0 | x] = Σ_k r_k(x) (μ_k + s_k² / (s_k² + σ²) (x - μ_k))`` with the posterior responsibilities
``r_k``. Tests and benchmarks drive samplers, losses and likelihoods with it; users can do the same to check
a sampler of their own. :func:`sliced_wasserstein` compares two sample sets.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .utils import ShapeError, as_row_sigma, check_floating

__all__ = ["GaussianMixture", "sliced_wasserstein"]


class GaussianMixture:
    """Mixture of diagonal Gaussians in ``R^d`` with exact diffused quantities.

    Parameters
    ----------
    means : Tensor
        Component means.
    stds : Tensor or float
        Component standard deviations: a float, ``[K]`` (isotropic) or ``[K, d]`` (diagonal).
    weights : Tensor, optional
        Mixture weights (normalised here; default uniform).

    Shapes
    ------
    means: ``[K, d]``; x: ``[B, d]``; sigma: ``[B]`` or a scalar.
    """

    def __init__(self, means: Tensor, stds: Union[Tensor, float] = 1.0, weights: Optional[Tensor] = None) -> None:
        check_floating(means, "means")
        if means.ndim != 2:
            raise ShapeError(f"means must be [K, d], got {list(means.shape)}")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.ndim == 1:
            stds = stds[:, None]
        self.means = means
        self.stds = stds.expand(k, d).clone()
        w = torch.ones(k, dtype=means.dtype, device=means.device) if weights is None else torch.as_tensor(weights)
        self.weights = (w / w.sum()).to(means)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def to(self, dtype: Optional[torch.dtype] = None, device=None) -> "GaussianMixture":
        """Copy of the mixture with the given dtype / device."""
        return GaussianMixture(
            self.means.to(dtype=dtype, device=device), self.stds.to(dtype=dtype, device=device),
            self.weights.to(dtype=dtype, device=device),
        )

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact samples ``[n, d]`` of the clean mixture."""
        idx = torch.multinomial(self.weights.cpu().double(), n, replacement=True, generator=generator)
        idx = idx.to(self.means.device)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype).to(self.means.device)
        return self.means[idx] + self.stds[idx] * z

    def _log_components(self, x: Tensor, sigma: Tensor) -> tuple:
        var = self.stds.square()[None] + _sq_rows(sigma)  # [B, K, d]
        diff = x[:, None, :] - self.means[None]
        logn = -0.5 * (diff.square() / var + torch.log(2 * math.pi * var)).sum(-1)
        return logn + self.weights.log()[None], var, diff

    def log_prob(self, x: Tensor, sigma: Union[Tensor, float] = 0.0) -> Tensor:
        """``log p_σ(x)`` of the diffused mixture, ``[B]``."""
        sigma = as_row_sigma(sigma, x)
        return torch.logsumexp(self._log_components(x, sigma)[0], dim=1)

    def denoiser(self, x: Tensor, sigma: Tensor, **cond) -> Tensor:
        """Ideal denoiser ``E[x0 | x]`` at per-row noise level ``sigma``, ``[B, d]``."""
        sigma = as_row_sigma(sigma, x)
        logp, var, diff = self._log_components(x, sigma)
        resp = torch.softmax(logp, dim=1)  # [B, K]
        post = self.means[None] + self.stds.square()[None] / var * diff
        return (resp[..., None] * post).sum(1)

    __call__ = denoiser

    def score(self, x: Tensor, sigma: Union[Tensor, float]) -> Tensor:
        """``∇_x log p_σ(x) = (D(x, σ) - x) / σ²``, ``[B, d]``."""
        sigma = as_row_sigma(sigma, x)
        return (self.denoiser(x, sigma) - x) / sigma[:, None].square()

    def mean(self) -> Tensor:
        """Mixture mean ``[d]``."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Mixture covariance ``[d, d]``."""
        m = self.mean()
        centred = self.means - m
        return torch.diag(self.weights @ self.stds.square()) + centred.T @ (self.weights[:, None] * centred)

    def assign(self, x: Tensor) -> Tensor:
        """Most likely component of every row (at σ = 0), ``[B]`` long."""
        return self._log_components(x, x.new_zeros(x.shape[0]))[0].argmax(1)


def _sq_rows(sigma: Tensor) -> Tensor:
    return sigma.square()[:, None, None]


def sliced_wasserstein(
    a: Tensor, b: Tensor, num_projections: int = 256, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Sliced 2-Wasserstein distance between two equal-size sample sets (random unit directions).

    Shapes
    ------
    a, b: ``[n, d]``; returns ``[]``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"need two [n, d] tensors of equal shape, got {list(a.shape)} and {list(b.shape)}")
    dirs = torch.randn(a.shape[1], num_projections, generator=generator, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(a.device)
    pa = torch.sort(a.double() @ dirs, dim=0)[0]
    pb = torch.sort(b.double() @ dirs, dim=0)[0]
    return (pa - pb).square().mean().sqrt()
