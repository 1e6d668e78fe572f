"""scikit-learn's 8×8 handwritten digits (UCI optdigits test part, 1,797 images, 17 grey levels).

Pixels are integers ``v ∈ {0, …, 16}``; the model space is ``x = v / 8 − 1 ∈ [−1, 1]`` (an affine map
with Jacobian ``1/8`` per pixel, which :func:`dequantize` and bits/dim computations must account for).
The split is fixed: ``train_test_split(stratify=labels, test_size=0.25, random_state=seed)`` with
``seed = 0`` by default, i.e. 1,347 training and 450 test images with the class balance preserved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["NUM_LEVELS", "PIXEL_SCALE", "DigitsSplit", "load_digits_split", "to_model_space",
           "to_pixels", "dequantize"]

NUM_LEVELS = 17
"""Number of distinct grey levels in the raw data (0..16)."""

PIXEL_SCALE = 1.0 / 8.0
"""Width of one grey level in model space: ``x = v * PIXEL_SCALE - 1``."""


@dataclass(frozen=True)
class DigitsSplit:
    """A fixed train/test split of the digits in model space.

    Attributes
    ----------
    x_train, x_test : Tensor
        Images in ``[-1, 1]``, shape ``[N, 1, 8, 8]``.
    y_train, y_test : Tensor
        Labels ``0..9`` (long), shape ``[N]``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def to_model_space(pixels: Tensor | np.ndarray) -> Tensor:
    """Map raw grey levels ``v ∈ [0, 16]`` to ``x = v / 8 − 1`` (float32 unless a float tensor is given)."""
    pixels = torch.as_tensor(pixels)
    if not pixels.is_floating_point():
        pixels = pixels.float()
    return pixels * PIXEL_SCALE - 1.0


def to_pixels(x: Tensor) -> Tensor:
    """Inverse of :func:`to_model_space`, rounded and clipped to the integer levels ``0..16`` (long)."""
    return torch.round((x + 1.0) / PIXEL_SCALE).clamp(0, NUM_LEVELS - 1).long()


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation in model space: ``x + (u − ½)/8`` with ``u ~ U[0, 1)`` per pixel.

    Each discrete level becomes the half-open bin of width ``1/8`` centred on it; bins do not
    overlap, so for any continuous density ``p`` (Jensen), ``E_u[log p(x + (u−½)/8)] − D·log 8 ≤ log P(v)``
    where ``P(v) = ∫_bin p`` and ``D = 64`` pixels: the continuous log-likelihood of dequantised points,
    *minus* ``D·log 8`` for the bin volume ``8^−D``, is a lower bound on the discrete log-likelihood of
    the grey levels (in bits/dim: add ``log2 8 = 3`` to the continuous value).

    Shapes
    ------
    - ``x``: any; output: like ``x``
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + (u - 0.5) * PIXEL_SCALE


def load_digits_split(seed: int = 0, test_size: float = 0.25) -> DigitsSplit:
    """Load the digits and split them, stratified by class, with ``random_state=seed``.

    Parameters
    ----------
    seed : int
        Split seed (the project's split is ``seed=0``; never tune on the test part).
    test_size : float
        Fraction of images held out.

    Returns
    -------
    DigitsSplit
        ``x_*: [N, 1, 8, 8]`` float32 in ``[-1, 1]``, ``y_*: [N]`` long.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    return DigitsSplit(
        x_train=to_model_space(torch.from_numpy(x_tr)).unsqueeze(1),
        y_train=torch.from_numpy(y_tr),
        x_test=to_model_space(torch.from_numpy(x_te)).unsqueeze(1),
        y_test=torch.from_numpy(y_te),
    )
