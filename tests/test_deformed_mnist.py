"""Deformed MNIST: one of five deformations per image, fixed by the seed."""

from __future__ import annotations

import pytest
import torch

from infoprune.data.deformed_mnist import DEFORMATIONS, MAX_SHIFT_PIXELS, deform, load_deformed_mnist


def digits(count: int = 200) -> torch.Tensor:
    """Bright strokes on a dark background, a stand-in for MNIST digits."""
    images = -0.4 * torch.ones(count, 1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        row, col = torch.randint(6, 18, (2,), generator=generator).tolist()
        images[i, 0, row : row + 6, col : col + 3] = 2.8
    return images


def centred_blob() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    return torch.exp(-(x**2 + y**2) / 18)[None, None]


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    weights = images[:, 0] - images.amin(dim=(1, 2, 3))[:, None, None]
    grid = torch.arange(28.0)
    total = weights.sum(dim=(1, 2))
    return torch.stack([(weights.sum(2) * grid).sum(1) / total, (weights.sum(1) * grid).sum(1) / total], dim=1)


def test_same_seed_same_deformation_other_seed_other_deformation():
    images = digits()
    first, kinds = deform(images, torch.Generator().manual_seed(5))
    again, kinds_again = deform(images, torch.Generator().manual_seed(5))
    other, _ = deform(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and torch.equal(kinds, kinds_again)
    assert not torch.equal(first, other)
    assert first.shape == images.shape and torch.isfinite(first).all()
    assert (first != images).flatten(1).any(1).float().mean() > 0.95


def test_each_deformation_is_chosen_with_equal_probability():
    _, kinds = deform(torch.zeros(2000, 1, 28, 28), torch.Generator().manual_seed(0))
    counts = torch.bincount(kinds, minlength=len(DEFORMATIONS))
    assert len(counts) == 5 and counts.min() > 330 and counts.max() < 470


def test_rotation_leaves_a_centred_round_blob_unchanged_and_translation_moves_it_a_few_pixels():
    blob = centred_blob().repeat(50, 1, 1, 1)
    rotated, _ = deform(blob, torch.Generator().manual_seed(0), ("rotation",))
    torch.testing.assert_close(rotated, blob, atol=0.03, rtol=0)
    shifted, _ = deform(blob, torch.Generator().manual_seed(0), ("translation",))
    shift = (centre_of_mass(shifted) - centre_of_mass(blob)).abs()
    assert shift.max() <= MAX_SHIFT_PIXELS + 0.1 and shift.max() > 2


def test_scale_changes_size_and_elastic_keeps_the_digit_nearby():
    blob = centred_blob().repeat(50, 1, 1, 1)
    scaled, _ = deform(blob, torch.Generator().manual_seed(0), ("scale",))
    ratio = scaled.sum(dim=(1, 2, 3)) / blob.sum(dim=(1, 2, 3))  # area ratio = zoom²
    assert ratio.min() < 0.6 and ratio.max() > 1.4 and ratio.min() > 0.3 and ratio.max() < 2.1
    images = digits(50)
    warped, _ = deform(images, torch.Generator().manual_seed(0), ("elastic",))
    assert (warped != images).flatten(1).any(1).all()
    assert (centre_of_mass(warped) - centre_of_mass(images)).norm(dim=1).max() < 5


def test_unknown_deformation_is_rejected():
    with pytest.raises(ValueError, match="choose from"):
        deform(digits(2), torch.Generator(), ("twirl",))


@pytest.mark.slow
def test_deformed_mnist_is_fixed_by_its_seed():
    first, again = load_deformed_mnist(seed=1), load_deformed_mnist(seed=1)
    assert torch.equal(first.train.inputs[:500], again.train.inputs[:500])
    assert torch.equal(first.test.inputs, again.test.inputs)
    assert first.train.inputs.shape == (50000, 1, 28, 28) and first.name == "deformed-mnist"
