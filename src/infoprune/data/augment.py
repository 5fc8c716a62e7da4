"""Seeded batch augmentations (:data:`~infoprune.data.base.BatchTransform`) for image tensors.

All act on normalised ``(N, C, H, W)`` batches, so "zero" is the data set's mean colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infoprune.data.base import BatchTransform


def random_crop_flip(padding: int = 4) -> BatchTransform:
    """Random crop of the zero-padded image back to its size, then a random horizontal flip.

    The standard CIFAR augmentation (MIPP App. D.2; He et al. 2016 §4.2: pad 4, crop 32×32).
    """

    def transform(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, h, w = inputs.shape
        padded = F.pad(inputs, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = dx[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        return padded[torch.arange(n)[:, None, None, None], torch.arange(channels)[None, :, None, None], rows, cols]

    return transform


def cutout(size: int) -> BatchTransform:
    """Zero one ``size``×``size`` square per image, centred anywhere in it and clipped at the
    border (DeVries & Taylor 2017; MIPP App. D.2 uses it for CIFAR-100)."""
    if size < 1:
        raise ValueError(f"The cutout size must be a positive number of pixels, got {size}.")

    def transform(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _c, h, w = inputs.shape
        top = torch.randint(0, h, (n, 1), generator=generator) - size // 2
        left = torch.randint(0, w, (n, 1), generator=generator) - size // 2
        rows, cols = torch.arange(h), torch.arange(w)
        inside_rows = (rows >= top) & (rows < top + size)
        inside_cols = (cols >= left) & (cols < left + size)
        hole = inside_rows[:, :, None] & inside_cols[:, None, :]
        return inputs.masked_fill(hole[:, None], 0.0)

    return transform


def compose(*transforms: BatchTransform | None) -> BatchTransform | None:
    """Apply the given transforms in order (``None`` entries skipped); ``None`` if none is left."""
    chain = [t for t in transforms if t is not None]
    if not chain:
        return None

    def transform(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in chain:
            inputs = step(inputs, generator)
        return inputs

    return transform
