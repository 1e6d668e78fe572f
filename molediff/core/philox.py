"""Philox4x32-10, a counter-based random number generator, in torch integer arithmetic.

Philox (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011) maps a 128-bit
counter and a 64-bit key to 128 random bits through ten rounds of multiply-and-xor. Being a pure function of
(counter, key), it draws any number of independent streams at once, element-wise, on any device, with no state:
:class:`molediff.core.noise.PerSampleNoise` gives every sample of a batch its own key this way.

Every word is held in an ``int64`` tensor below ``2**32``; the 32 × 32 → 64-bit products are formed from 16-bit
halves so that no intermediate exceeds ``2**49`` (no signed overflow on any backend). The output matches the
reference implementation's published known-answer vectors (Random123 ``kat_vectors``; tests/core/test_noise.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["philox4x32", "uint32_to_normal"]

_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)  # key increments per round (golden ratio, sqrt(3) - 1)


def _mulhilo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``a * m`` for ``0 <= a < 2**32`` (int64) and a 32-bit constant ``m``."""
    p_lo = a * (m & 0xFFFF)  # < 2**48
    p_hi = a * (m >> 16)  # < 2**48
    low = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2**49
    return (p_hi >> 16) + (low >> 32), low & _MASK32


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[Tensor, Tensor],
               rounds: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32 with ``rounds`` rounds (10: Philox4x32-10), element-wise over broadcastable tensors.

    Parameters
    ----------
    counter : 4 int64 tensors
        The counter words, each in ``[0, 2**32)``.
    key : 2 int64 tensors
        The key words, each in ``[0, 2**32)``.

    Returns
    -------
    tuple of 4 int64 tensors
        The output words, each in ``[0, 2**32)``, broadcast to a common shape.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _WEYL[0]) & _MASK32, (k1 + _WEYL[1]) & _MASK32
        hi0, lo0 = _mulhilo(c0, _MULTIPLIERS[0])
        hi1, lo1 = _mulhilo(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uint32_to_normal(words: Tensor) -> Tensor:
    """Standard normal values from uniform 32-bit words by the Box–Muller transform.

    Shapes
    ------
    ``words: [..., 2 m]`` int64 in ``[0, 2**32)`` -> ``[..., 2 m]`` float64 (pairs ``(w_2i, w_2i+1)`` give the
    values ``2i`` and ``2i + 1``).
    """
    u = (words.to(torch.float64) + 0.5) * 2.0**-32  # in (0, 1): log(u) is finite
    radius = torch.sqrt(-2.0 * torch.log(u[..., 0::2]))
    angle = (2.0 * math.pi) * u[..., 1::2]
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).flatten(-2)
