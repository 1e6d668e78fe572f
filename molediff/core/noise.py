"""Noise sources: where a sampler's Gaussian noise comes from.

A sampler draws all its noise through :meth:`molediff.core.spaces.Space.randn`, which takes a ``generator``.
A :class:`torch.Generator` (or ``None``, torch's global one) fills the whole batch from one stream, so a
sample's noise depends on where it sits in the batch and on what else is there. :class:`PerSampleNoise`
gives every sample of a flat batch its own seeded stream instead: sample ``i``'s noise depends only on
``seeds[i]``, its number of rows and how many draws came before, never on the other samples. A molecule's
conformers are then the same whether it is sampled alone, in a batch of a thousand or on another worker.

:func:`normal` is the one place that turns either kind of ``generator`` into noise.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .utils import ShapeError

__all__ = ["PerSampleNoise", "NoiseGenerator", "normal"]


class PerSampleNoise:
    """Independent, reproducible standard-normal streams, one per sample of a flat batch.

    Sample ``i`` owns rows ``ptr[i]:ptr[i+1]`` of every draw and a CPU :class:`torch.Generator` seeded with
    ``seeds[i]``. Draws are made ``block`` at a time per sample (one ``torch.randn`` per sample per block, so a
    15-step sampler costs one pass over the samples), kept on the CPU in float64 and handed out in order;
    draw ``c`` of sample ``i`` is therefore a function of ``seeds[i]``, its row count, the trailing shape and
    ``c`` alone.

    Parameters
    ----------
    seeds : sequence of int
        One seed per sample, ``0 <= seed < 2**64``.
    counts : sequence of int
        Rows of every sample (e.g. atoms per graph), in batch order.
    block : int
        Draws made at once per sample.

    Shapes
    ------
    :meth:`normal` returns ``[sum(counts), *rest]``.
    """

    def __init__(self, seeds: Sequence[int], counts: Sequence[int], *, block: int = 16) -> None:
        seeds, counts = [int(s) for s in seeds], [int(c) for c in counts]
        if len(seeds) != len(counts):
            raise ShapeError(f"{len(seeds)} seeds for {len(counts)} samples")
        if any(c < 0 for c in counts):
            raise ValueError("counts must be >= 0")
        if any(not 0 <= s < 2**64 for s in seeds):
            raise ValueError("seeds must lie in [0, 2**64)")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.counts, self.block = counts, int(block)
        self.num_rows = sum(counts)
        self._generators = [torch.Generator().manual_seed(s) for s in seeds]
        self._pending: dict[tuple[int, ...], list[Tensor]] = {}  # trailing shape -> draws not yet handed out

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
        rest = shape[1:]
        queue = self._pending.setdefault(rest, [])
        if not queue:
            per_sample = [torch.randn((self.block, n, *rest), generator=g, dtype=torch.float64)
                          for g, n in zip(self._generators, self.counts)]
            queue.extend(torch.cat(per_sample, dim=1).unbind(0))
        return queue.pop(0).to(dtype=dtype or torch.get_default_dtype(), device=device)


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
