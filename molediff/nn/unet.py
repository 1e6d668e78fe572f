"""A small U-Net for ``[B, C, H, W]`` images (sized for 8×8 digits; works for any H, W divisible
by ``2 ** (len(channel_mult) - 1)``).

Residual blocks with GroupNorm and FiLM conditioning on a noise (and optional class) embedding,
average-pool downsampling, nearest-neighbour upsampling, skip connections by concatenation, and
optional multi-head self-attention at the lowest resolution. It is a raw network: wrap it in a
preconditioner from :mod:`molediff.core.denoiser` (e.g. ``EDMPrecond``), which calls
``net(c_in * x, c_noise, class_labels=...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from molediff.nn.mlp import ClassEmbedding, FourierEmbedding

__all__ = ["UNet"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, FiLM by the embedding, GroupNorm → SiLU → dropout → conv, + skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = _norm(c_out, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, pre-norm, residual."""

    def __init__(self, channels: int, groups: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = _norm(channels, groups)
        self.attn = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """U-Net backbone: ``net(x, c_noise, class_labels=None) -> like x``.

    Parameters
    ----------
    in_channels : int
        Image channels ``C`` (output has the same number).
    base_channels : int
        Channels at the finest resolution.
    channel_mult : tuple of int
        Channel multiplier per resolution; ``len(channel_mult)`` resolutions, each halving H and W.
    num_res_blocks : int
        Residual blocks per resolution on the way down (one more on the way up).
    attention : bool
        Self-attention in the middle (lowest-resolution) stage and its level.
    num_heads : int
        Attention heads.
    emb_dim : int
        Noise / class embedding size.
    num_classes : int or None
        Enables class conditioning with labels in ``[0, num_classes]``; ``num_classes``
        (:attr:`null_class`) is the unconditional label for classifier-free guidance.
    dropout : float
        Dropout in the residual blocks.
    groups : int
        GroupNorm groups (reduced automatically to divide the channel count).

    Shapes
    ------
    - ``x``: ``[B, C, H, W]``
    - ``c_noise``: ``[B]``
    - ``class_labels``: ``[B]`` long or ``None``
    - output: ``[B, C, H, W]``
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention: bool = True,
        num_heads: int = 4,
        emb_dim: int = 128,
        num_classes: int | None = None,
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if not channel_mult or num_res_blocks < 1:
            raise ValueError("channel_mult must be non-empty and num_res_blocks >= 1")
        self.in_channels = in_channels
        self.num_levels = len(channel_mult)
        self.noise_embed = nn.Sequential(
            FourierEmbedding(emb_dim),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.class_embed = ClassEmbedding(num_classes, emb_dim) if num_classes is not None else None
        self.inp = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        chans = [base_channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        skip_chans = [base_channels]
        c = base_channels
        for level, c_level in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c, c_level, emb_dim, groups, dropout))
                c = c_level
                skip_chans.append(c)
            attn = _SelfAttention(c, groups, num_heads) if attention and level == self.num_levels - 1 else None
            down = nn.AvgPool2d(2) if level < self.num_levels - 1 else None
            if down is not None:
                skip_chans.append(c)
            self.down.append(nn.ModuleDict({"blocks": blocks, "attn": attn or nn.Identity(),
                                            "down": down or nn.Identity()}))

        self.mid1 = _ResBlock(c, c, emb_dim, groups, dropout)
        self.mid_attn = _SelfAttention(c, groups, num_heads) if attention else nn.Identity()
        self.mid2 = _ResBlock(c, c, emb_dim, groups, dropout)

        self.up = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            c_level = chans[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock(c + skip_chans.pop(), c_level, emb_dim, groups, dropout))
                c = c_level
            attn = _SelfAttention(c, groups, num_heads) if attention and level == self.num_levels - 1 else None
            up = (nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1))
                  if level > 0 else None)
            self.up.append(nn.ModuleDict({"blocks": blocks, "attn": attn or nn.Identity(),
                                          "up": up or nn.Identity()}))
        self.out_norm = _norm(c, groups)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_class(self) -> int:
        """Label meaning "no condition" (classifier-free guidance); requires ``num_classes``."""
        if self.class_embed is None:
            raise AttributeError("this network was built without num_classes")
        return self.class_embed.null_class

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be divisible by {factor}, got {tuple(x.shape[2:])}")
        if c_noise.shape != (x.shape[0],):
            raise ValueError(
                f"c_noise must have shape [{x.shape[0]}] (one level per image), got {tuple(c_noise.shape)}"
            )
        emb = self.noise_embed(c_noise.to(x.dtype))
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels, x.shape[0], x.device)
        elif class_labels is not None:
            raise ValueError("class_labels given but the network was built with num_classes=None")
        emb = F.silu(emb)

        h = self.inp(x)
        skips = [h]
        for stage in self.down:
            for i, block in enumerate(stage["blocks"]):
                h = block(h, emb)
                if i == len(stage["blocks"]) - 1:
                    h = stage["attn"](h)
                skips.append(h)
            if not isinstance(stage["down"], nn.Identity):
                h = stage["down"](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for stage in self.up:
            for block in stage["blocks"]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = stage["attn"](h)
            h = stage["up"](h)
        return self.out(F.silu(self.out_norm(h)))
