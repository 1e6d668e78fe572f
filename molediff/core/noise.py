"""Noise sources: where a sampler's Gaussian noise comes from.

A sampler draws all its noise through :meth:`molediff.core.spaces.Space.randn`, which takes a ``generator``.
A :class:`torch.Generator` (or ``None``, torch's global one) fills the whole batch from one stream, so a
sample's noise depends on where it sits in the batch and on what else is there. :class:`PerSampleNoise`
gives every sample of a flat batch its own stream instead (a counter-based generator, Philox4x32-10, keyed per
sample and evaluated for the whole batch at once): sample ``i``'s noise depends only on its key, its number of
rows and how many draws came before, never on the other samples. A molecule's conformers are then the same
whether it is sampled alone, in a batch of a thousand or on another worker.

:func:`normal` is the one place that turns either kind of ``generator`` into noise.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .philox import philox4x32, uint32_to_normal
from .utils import ShapeError

__all__ = ["PerSampleNoise", "NoiseGenerator", "normal"]


class PerSampleNoise:
    """Independent, reproducible standard-normal streams, one per sample of a flat batch.

    Sample ``i`` owns rows ``ptr[i]:ptr[i+1]`` of every draw. Its values come from Philox4x32-10
    (:mod:`molediff.core.philox`) keyed by ``seeds[i]``, with the counter holding the value's position in the
    sample, the draw number and ``streams[i]``: draw ``c`` of sample ``i`` is a function of ``seeds[i]``,
    ``streams[i]``, its row count, the trailing shape and ``c`` alone. Every draw is one vectorised
    computation on the requested device, whatever the number of samples.

    Parameters
    ----------
    seeds : sequence of int
        One 64-bit key per sample, ``0 <= seed < 2**64``.
    counts : sequence of int
        Rows of every sample (e.g. atoms per graph), in batch order.
    streams : sequence of int, optional
        One stream number per sample, ``0 <= stream < 2**32`` (default 0): samples with the same seed and
        different streams are independent (e.g. the conformers of one molecule).

    Shapes
    ------
    :meth:`normal` returns ``[sum(counts), *rest]``.
    """

    def __init__(self, seeds: Sequence[int], counts: Sequence[int], *, streams: Sequence[int] | None = None) -> None:
        seeds, counts = [int(s) for s in seeds], [int(c) for c in counts]
        streams = [0] * len(seeds) if streams is None else [int(s) for s in streams]
        if not len(seeds) == len(counts) == len(streams):
            raise ShapeError(f"{len(seeds)} seeds, {len(counts)} counts and {len(streams)} streams")
        if any(c < 0 for c in counts):
            raise ValueError("counts must be >= 0")
        if any(not 0 <= s < 2**64 for s in seeds):
            raise ValueError("seeds must lie in [0, 2**64)")
        if any(not 0 <= s < 2**32 for s in streams):
            raise ValueError("streams must lie in [0, 2**32)")
        self.counts = counts
        self.num_rows = sum(counts)
        self._key_lo = torch.tensor([s & 0xFFFFFFFF for s in seeds], dtype=torch.int64)
        self._key_hi = torch.tensor([s >> 32 for s in seeds], dtype=torch.int64)
        self._streams = torch.tensor(streams, dtype=torch.int64)
        self._counts = torch.tensor(counts, dtype=torch.int64)
        self._draws = 0
        self._layouts: dict[tuple[int, torch.device], tuple[Tensor, Tensor, tuple[Tensor, Tensor], Tensor]] = {}

    def normal(
        self,
        shape: Sequence[int],
        *,
        dtype: Optional[torch.dtype] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tensor:
        """The next draw of i.i.d. ``N(0, 1)`` noise, ``shape = [sum(counts), *rest]``."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != self.num_rows:
            raise ShapeError(f"expected {self.num_rows} rows (one block per sample), got shape {list(shape)}")
        if self._draws >= 2**32:
            raise RuntimeError("PerSampleNoise: 2**32 draws exhausted")
        device = torch.device(device) if device is not None else torch.device("cpu")
        index, stream, key, keep = self._layout(math.prod(shape[1:]), device)
        words = philox4x32((index, torch.full_like(index, self._draws), stream, torch.zeros_like(index)), key)
        self._draws += 1
        values = uint32_to_normal(torch.stack(words, dim=-1))  # [calls, 4]
        return values[keep].to(dtype or torch.get_default_dtype()).reshape(shape)

    def _layout(self, per_row: int, device: torch.device) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor], Tensor]:
        """Per Philox call (four values each) of one draw: its number within its sample, its sample's stream and
        key, and which of its four values are used. Built once per row width and device, reused every draw.

        Shapes
        ------
        returns ``index, stream: [calls]``, ``key: 2 x [calls]``, ``keep: [calls, 4]`` bool.
        """
        cached = self._layouts.get((per_row, device))
        if cached is None:
            per_sample = self._counts.to(device) * per_row  # values of each sample
            calls = (per_sample + 3) // 4
            sample = torch.repeat_interleave(torch.arange(len(self.counts), device=device), calls)
            index = torch.arange(sample.numel(), device=device) - (torch.cumsum(calls, 0) - calls)[sample]
            keep = index.unsqueeze(1) * 4 + torch.arange(4, device=device) < per_sample[sample].unsqueeze(1)
            key = (self._key_lo.to(device)[sample], self._key_hi.to(device)[sample])
            cached = self._layouts[(per_row, device)] = (index, self._streams.to(device)[sample], key, keep)
        return cached


#: what a sampler accepts as ``generator``
NoiseGenerator = Union[torch.Generator, PerSampleNoise, None]


def normal(
    shape: Sequence[int],
    generator: NoiseGenerator = None,
    *,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Tensor:
    """I.i.d. ``N(0, 1)`` noise of ``shape`` from ``generator`` (``None``: torch's global generator)."""
    if isinstance(generator, PerSampleNoise):
        return generator.normal(shape, dtype=dtype, device=device)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
