"""Deformed MNIST (MIPP §5, Fig. 1): MNIST made harder by fixed random deformations.

The paper applies random transformations "with equal probability and then kept consistent
during training, pruning, and re-training"; the text does not list them, so this module
uses five standard ones, each chosen for an image with probability 1/5:

* ``rotation``: angle uniform in ±45°;
* ``shear``: horizontal shear factor uniform in ±0.6;
* ``scale``: zoom factor uniform in [0.6, 1.4];
* ``translation``: shift uniform in ±4 pixels along each axis;
* ``elastic``: Simard et al. (2003) elastic distortion, a uniform random displacement field
  smoothed by a Gaussian of σ = 4 px and scaled by α = 34 px.

Every image is resampled once (bilinear, border padding: MNIST's border is background) from a
generator seeded with ``seed``, so one seed is one fixed data set for every stage.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from infoprune.data.base import DatasetSplits, LabelledTensors
from infoprune.data.mnist import load_mnist

DEFORMATIONS = ("rotation", "shear", "scale", "translation", "elastic")
MAX_ROTATION_DEGREES = 45.0
MAX_SHEAR = 0.6
ZOOM_RANGE = (0.6, 1.4)
MAX_SHIFT_PIXELS = 4.0
ELASTIC_ALPHA_PIXELS, ELASTIC_SIGMA_PIXELS = 34.0, 4.0


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _affine(kind: str, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 2, 3)`` affine_grid matrices (output -> input coordinates) of one kind."""
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if kind == "rotation":
        angle = _uniform(count, -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, generator) * math.pi / 180
        theta[:, 0, 0], theta[:, 0, 1] = angle.cos(), -angle.sin()
        theta[:, 1, 0], theta[:, 1, 1] = angle.sin(), angle.cos()
    elif kind == "shear":
        theta[:, 0, 1] = _uniform(count, -MAX_SHEAR, MAX_SHEAR, generator)
    elif kind == "scale":
        zoom = _uniform(count, *ZOOM_RANGE, generator)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    elif kind == "translation":
        # affine_grid coordinates span 2 units over `size` pixels.
        theta[:, :, 2] = (2 * torch.rand(count, 2, generator=generator) - 1) * MAX_SHIFT_PIXELS * 2 / size
    return theta


def _elastic_displacement(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, H, W, 2)`` smoothed random displacements in affine_grid units (Simard 2003)."""
    field = 2 * torch.rand(count * 2, 1, height, width, generator=generator) - 1
    radius = math.ceil(3 * ELASTIC_SIGMA_PIXELS)
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * ELASTIC_SIGMA_PIXELS**2))
    taps = taps / taps.sum()
    field = F.conv2d(field, taps.reshape(1, 1, -1, 1), padding=(radius, 0))
    field = F.conv2d(field, taps.reshape(1, 1, 1, -1), padding=(0, radius))
    pixels = field.reshape(count, 2, height, width).permute(0, 2, 3, 1) * ELASTIC_ALPHA_PIXELS
    return pixels * torch.tensor([2 / width, 2 / height])


def deform(
    images: torch.Tensor, generator: torch.Generator, kinds: tuple[str, ...] = DEFORMATIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform each ``(N, C, H, W)`` image by one of ``kinds``, chosen uniformly at random.

    Returns the deformed images and the index into ``kinds`` used for each image.
    """
    unknown = sorted(set(kinds) - set(DEFORMATIONS))
    if unknown or not kinds:
        raise ValueError(f"Unknown deformation(s) {unknown or kinds}; choose from {DEFORMATIONS}.")
    n, _c, height, width = images.shape
    choice = torch.randint(len(kinds), (n,), generator=generator)
    theta = _affine("identity", n, width, generator)
    displacement = torch.zeros(n, height, width, 2)
    for k, kind in enumerate(kinds):
        chosen = (choice == k).nonzero().flatten()
        if kind == "elastic":
            displacement[chosen] = _elastic_displacement(len(chosen), height, width, generator)
        else:
            theta[chosen] = _affine(kind, len(chosen), width, generator)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False) + displacement
    deformed = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return deformed, choice


def load_deformed_mnist(seed: int = 0) -> DatasetSplits:
    """MNIST with every train, validation and test image deformed once, fixed by ``seed``."""
    mnist = load_mnist()
    generator = torch.Generator().manual_seed(seed)

    def deformed(split: LabelledTensors) -> LabelledTensors:
        return LabelledTensors(deform(split.inputs, generator)[0], split.labels)

    return DatasetSplits(
        "deformed-mnist", deformed(mnist.train), deformed(mnist.val), deformed(mnist.test), mnist.num_classes
    )
