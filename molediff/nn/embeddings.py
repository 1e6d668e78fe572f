"""Small shared building blocks of the score networks.

* :class:`SinusoidalEmbedding` / :class:`NoiseEmbedding` -- embed the per-node noise level ``c_noise``.
* :class:`GaussianRBF`, :func:`cosine_cutoff` -- invariant features of an interatomic distance.
* :class:`MLP` -- a plain multilayer perceptron with SiLU activations.

Everything here is invariant by construction (it only sees scalars), so it can be used freely inside the
equivariant networks of :mod:`molediff.nn`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "GaussianRBF", "NodeEmbedding", "NoiseEmbedding", "SinusoidalEmbedding", "cosine_cutoff"]


class SinusoidalEmbedding(nn.Module):
    r"""Fixed sinusoidal features of a scalar, ``[cos(w_k t), sin(w_k t)]``.

    The frequencies are geometric between ``max_freq`` and ``max_freq / max_period``, which covers the range of
    the EDM noise input ``c_noise = log(sigma) / 4`` (about -3 to 2) with both coarse and fine features.

    Parameters
    ----------
    dim : int
        Output dimension (even).
    max_freq : float
        Highest angular frequency.
    max_period : float
        Ratio between the highest and the lowest frequency.

    Shapes
    ------
    ``t: [N]`` -> ``[N, dim]``.
    """

    freqs: Tensor

    def __init__(self, dim: int, max_freq: float = 16.0, max_period: float = 1000.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be a positive even integer, got {dim}")
        half = dim // 2
        exponent = torch.arange(half, dtype=torch.float64) / max(half - 1, 1)
        freqs = max_freq * torch.exp(-math.log(max_period) * exponent)
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        arg = t.reshape(-1, 1) * self.freqs.to(t.dtype)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class MLP(nn.Sequential):
    """Linear layers with SiLU in between (and optionally after the last one).

    Parameters
    ----------
    dims : sequence of int
        ``[in, hidden..., out]``; at least two entries.
    last_activation : bool
        Apply SiLU after the last layer too.
    last_zero_init : bool
        Initialise the last layer's weight to (near) zero, so the block starts as a no-op in a residual branch.

    Shapes
    ------
    ``[..., dims[0]]`` -> ``[..., dims[-1]]``.
    """

    def __init__(self, dims: Sequence[int], *, last_activation: bool = False, last_zero_init: bool = False) -> None:
        if len(dims) < 2:
            raise ValueError(f"MLP: dims needs at least [in, out], got {list(dims)}")
        layers: list[nn.Module] = []
        for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if k < len(dims) - 2 or last_activation:
                layers.append(nn.SiLU())
        super().__init__(*layers)
        if last_zero_init:
            last = [m for m in layers if isinstance(m, nn.Linear)][-1]
            nn.init.xavier_uniform_(last.weight, gain=1e-3)
            nn.init.zeros_(last.bias)


class NoiseEmbedding(nn.Module):
    """Learned embedding of the per-node noise input ``c_noise``: sinusoidal features followed by an MLP.

    Parameters
    ----------
    dim : int
        Output dimension.
    num_freqs : int
        Number of sinusoidal features (even).

    Shapes
    ------
    ``c_noise: [N]`` -> ``[N, dim]``.
    """

    def __init__(self, dim: int, num_freqs: int = 32) -> None:
        super().__init__()
        self.fourier = SinusoidalEmbedding(num_freqs)
        self.mlp = MLP([num_freqs, dim, dim])

    def forward(self, c_noise: Tensor) -> Tensor:
        return self.mlp(self.fourier(c_noise))


class GaussianRBF(nn.Module):
    r"""Gaussian radial basis ``exp(-(d - mu_k)^2 / (2 w^2))`` with centres evenly spaced on ``[0, r_max]``.

    Parameters
    ----------
    num_basis : int
        Number of basis functions.
    r_max : float
        Position of the last centre (in the units of the network's input coordinates).

    Shapes
    ------
    ``d: [E]`` -> ``[E, num_basis]``.
    """

    centers: Tensor

    def __init__(self, num_basis: int = 16, r_max: float = 5.0) -> None:
        super().__init__()
        if num_basis < 2 or r_max <= 0:
            raise ValueError(f"GaussianRBF: need num_basis >= 2 and r_max > 0, got {num_basis}, {r_max}")
        self.register_buffer("centers", torch.linspace(0.0, r_max, num_basis), persistent=False)
        self.width = r_max / (num_basis - 1)
        self.num_basis = num_basis

    def forward(self, d: Tensor) -> Tensor:
        diff = d.unsqueeze(-1) - self.centers.to(d.dtype)
        return torch.exp(-0.5 * (diff / self.width) ** 2)


def cosine_cutoff(d: Tensor, cutoff: float) -> Tensor:
    r"""Smooth envelope ``0.5 (cos(pi d / cutoff) + 1)`` for ``d < cutoff``, else 0 (C^1 at the cutoff).

    Used to fade out radius-graph edges as they approach the radius, so that the network output stays
    continuous when an edge enters or leaves the graph.

    Shapes
    ------
    ``d: [E]`` -> ``[E]``.
    """
    inside = d < cutoff
    env = 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0)
    return torch.where(inside, env, torch.zeros_like(env))


class NodeEmbedding(nn.Module):
    """Initial invariant node features: ``Linear(node_attr) + NoiseEmbedding(c_noise)``.

    This is where the noise level enters every score network of :mod:`molediff.nn`. It also validates the
    shared inputs of the network signature.

    Parameters
    ----------
    node_dim : int
        Width of ``node_attr`` (0: the network takes no node features; ``node_attr`` must be ``None``).
    dim : int
        Output width.

    Shapes
    ------
    ``c_noise: [N]`` (or a scalar, broadcast), ``node_attr: [N, node_dim]`` -> ``[N, dim]``.
    """

    def __init__(self, node_dim: int, dim: int) -> None:
        super().__init__()
        self.node_dim = node_dim
        self.node = nn.Linear(node_dim, dim) if node_dim > 0 else None
        self.noise = NoiseEmbedding(dim)

    def forward(self, x: Tensor, c_noise: Tensor, node_attr: Tensor | None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"x must have shape [N, 3], got {tuple(x.shape)}")
        n = x.shape[0]
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device)
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(n)
        if c_noise.shape != (n,):
            raise ValueError(f"c_noise must have shape [N]=[{n}] (one value per node), got {tuple(c_noise.shape)}")
        h = self.noise(c_noise)
        if self.node is None:
            if node_attr is not None and node_attr.shape[-1] != 0:
                raise ValueError(f"this network was built with node_dim=0 but got node_attr {tuple(node_attr.shape)}")
            return h
        if node_attr is None:
            raise ValueError(f"this network expects node_attr of shape [N, {self.node_dim}], got None")
        if node_attr.shape != (n, self.node_dim):
            raise ValueError(f"node_attr must have shape [{n}, {self.node_dim}], got {tuple(node_attr.shape)}")
        return h + self.node(node_attr.to(x.dtype))
