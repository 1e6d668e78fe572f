"""Residual MLP denoiser backbone for flat ``[B, d]`` vectors (2-D toys, embeddings).

The network follows the raw-network side of the denoiser contract: it is wrapped by a
preconditioner from :mod:`molediff.core.denoiser` (e.g. ``EDMPrecond``) which calls
``net(c_in * x, c_noise, **cond)``. The noise level enters through a sinusoidal embedding of
``c_noise`` and modulates every residual block (FiLM: per-channel scale and shift).

Class conditioning reserves one extra embedding row, the *null class* (index ``num_classes``),
for classifier-free guidance: ``class_labels=None`` or a label equal to ``net.null_class`` means
"unconditional".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FourierEmbedding", "ClassEmbedding", "ResidualMLP"]


class FourierEmbedding(nn.Module):
    """Deterministic sinusoidal embedding of a scalar per row.

    Frequencies are log-spaced between ``1`` and ``max_freq`` (angular frequency ``2π f``), which
    resolves the range of ``c_noise = log(σ)/4`` (about ``[-2, 1.5]``) from coarse to fine.

    Parameters
    ----------
    dim : int
        Output size; must be even (half sines, half cosines).
    max_freq : float
        Highest frequency.

    Shapes
    ------
    - input: ``[B]``
    - output: ``[B, dim]``
    """

    def __init__(self, dim: int, max_freq: float = 32.0) -> None:
        super().__init__()
        if dim % 2 != 0 or dim <= 0:
            raise ValueError(f"FourierEmbedding dim must be a positive even integer, got {dim}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2))
        self.register_buffer("freqs", 2.0 * math.pi * freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"expected a 1-D tensor of noise levels, got shape {tuple(t.shape)}")
        arg = t[:, None] * self.freqs.to(t.dtype)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class ClassEmbedding(nn.Module):
    """Class-label embedding with a learned null class for classifier-free guidance.

    Parameters
    ----------
    num_classes : int
        Number of real classes; labels live in ``[0, num_classes]`` where ``num_classes`` is the
        null (unconditional) class.
    dim : int
        Embedding size.

    Shapes
    ------
    - ``class_labels``: ``[B]`` long, or ``None`` (every row unconditional)
    - output: ``[B, dim]``
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        """Index of the unconditional (null) class."""
        return self.num_classes

    def forward(self, class_labels: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        if class_labels is None:
            class_labels = torch.full((batch_size,), self.null_class, dtype=torch.long, device=device)
        if class_labels.shape != (batch_size,):
            raise ValueError(
                f"class_labels must have shape [{batch_size}], got {tuple(class_labels.shape)}"
            )
        if class_labels.dtype != torch.long:
            raise TypeError(f"class_labels must be torch.long, got {class_labels.dtype}")
        # value check only where it is free (CPU); on accelerators it would synchronise every call,
        # and nn.Embedding's own device-side bounds check still catches bad labels there
        if class_labels.device.type == "cpu" and class_labels.numel() and (
            int(class_labels.min()) < 0 or int(class_labels.max()) > self.null_class
        ):
            raise ValueError(
                f"class_labels must lie in [0, {self.null_class}] ({self.null_class} = null class), "
                f"got range [{int(class_labels.min())}, {int(class_labels.max())}]"
            )
        return self.embed(class_labels)


class _ResBlock(nn.Module):
    """Pre-norm residual block with FiLM modulation by the conditioning embedding."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)
        y = self.fc1(torch.nn.functional.silu(self.norm1(h)))
        y = self.norm2(y) * (1.0 + scale) + shift
        y = self.fc2(self.drop(torch.nn.functional.silu(y)))
        return h + y


class ResidualMLP(nn.Module):
    """Residual MLP backbone: ``net(x, c_noise, class_labels=None) -> [B, d]``.

    Parameters
    ----------
    dim : int
        Data dimension ``d``.
    hidden : int
        Width of the residual stream.
    num_blocks : int
        Number of residual blocks.
    emb_dim : int
        Size of the noise (and class) embedding.
    num_classes : int or None
        If given, the network accepts ``class_labels`` in ``[0, num_classes]``; ``num_classes``
        (exposed as :attr:`null_class`) is the unconditional label used by classifier-free
        guidance. If ``None``, passing labels raises.
    dropout : float
        Dropout inside the residual blocks.
    max_freq : float
        Highest frequency of the noise embedding.

    Shapes
    ------
    - ``x``: ``[B, d]``
    - ``c_noise``: ``[B]`` (e.g. ``log(σ)/4`` from ``EDMPrecond``)
    - ``class_labels``: ``[B]`` long or ``None``
    - output: ``[B, d]``
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        num_blocks: int = 3,
        emb_dim: int = 64,
        num_classes: int | None = None,
        dropout: float = 0.0,
        max_freq: float = 32.0,
    ) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or num_blocks < 0:
            raise ValueError(f"invalid sizes: dim={dim}, hidden={hidden}, num_blocks={num_blocks}")
        self.dim = dim
        self.num_classes = num_classes
        self.noise_embed = nn.Sequential(
            FourierEmbedding(emb_dim, max_freq=max_freq),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.class_embed = ClassEmbedding(num_classes, emb_dim) if num_classes is not None else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResBlock(hidden, emb_dim, dropout) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)

    @property
    def null_class(self) -> int:
        """Label meaning "no condition" (classifier-free guidance); requires ``num_classes``."""
        if self.class_embed is None:
            raise AttributeError("this network was built without num_classes")
        return self.class_embed.null_class

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape [B, {self.dim}], got {tuple(x.shape)}")
        if c_noise.shape != (x.shape[0],):
            raise ValueError(
                f"c_noise must have shape [{x.shape[0]}] (one level per row), got {tuple(c_noise.shape)}"
            )
        emb = self.noise_embed(c_noise.to(x.dtype))
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels, x.shape[0], x.device)
        elif class_labels is not None:
            raise ValueError("class_labels given but the network was built with num_classes=None")
        emb = torch.nn.functional.silu(emb)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))
