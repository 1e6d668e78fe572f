"""Analytic oracles for the core tests: fixed Gaussian mixtures with closed-form diffused denoisers.

The mixture class itself lives in :mod:`molediff.core.mixture` (the benchmarks use it too); this module fixes
the test problems and the tolerance helpers.
"""

from __future__ import annotations

import torch

from molediff.core.mixture import GaussianMixture, sliced_wasserstein

__all__ = ["mixture_2d", "mixture_16d", "GaussianMixture", "sliced_wasserstein", "moment_errors"]


def mixture_2d(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """Three isotropic, well separated modes with unequal weights in 2-D."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=dtype)
    return GaussianMixture(means, torch.tensor([0.3, 0.5, 0.4], dtype=dtype), torch.tensor([0.5, 0.3, 0.2]))


def mixture_16d(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """Four diagonal modes in 16-D (seeded)."""
    g = torch.Generator().manual_seed(1)
    means = 3 * torch.randn(4, 16, generator=g)
    stds = 0.3 + 0.7 * torch.rand(4, 16, generator=g)
    return GaussianMixture(means.to(dtype), stds.to(dtype), torch.tensor([0.4, 0.3, 0.2, 0.1]))


def moment_errors(gm: GaussianMixture, x: torch.Tensor) -> dict:
    """Max-abs errors of mean, covariance and mode weights of samples ``x`` against the mixture."""
    x = x.double()
    g = gm.to(torch.float64)
    freq = torch.bincount(g.assign(x), minlength=g.means.shape[0]).double() / x.shape[0]
    return {
        "mean": float((x.mean(0) - g.mean()).abs().max()),
        "cov": float((x.T.cov() - g.covariance()).abs().max()),
        "weights": float((freq - g.weights).abs().max()),
    }
