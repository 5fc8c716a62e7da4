"""Known answers for MINT §IV-E's characterisation: ECE, iterative attacks, Grad-CAM."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from infoprune.characterisation import (
    PixelScale,
    adversarial_accuracy,
    attack_iterations,
    calibration,
    grad_cam,
    iterative_attack,
    last_conv_layer,
)
from infoprune.models import LeNet5


def two_class_probabilities(confidence: torch.Tensor) -> torch.Tensor:
    """Probabilities (N, 2) that predict class 0 with the given confidences (≥ 0.5)."""
    return torch.stack([confidence, 1 - confidence], dim=1)


def test_a_perfectly_calibrated_predictor_has_ece_near_zero():
    generator = torch.Generator().manual_seed(0)
    confidence = 0.5 + 0.5 * torch.rand(200_000, generator=generator)
    labels = (torch.rand(200_000, generator=generator) >= confidence).long()  # right with probability = confidence
    result = calibration(two_class_probabilities(confidence), labels)
    assert result.ece < 0.005
    assert len(result.count) == 15 and sum(result.count) == 200_000


def test_an_over_confident_predictor_has_the_closed_form_ece():
    # confidence c uniform on [0.7, 1] but right only with probability c − 0.2: in every bin
    # acc(b) = conf(b) − 0.2, so the closed form is ECE = Σ_b (n_b/N)·0.2 = 0.2.
    generator = torch.Generator().manual_seed(1)
    confidence = 0.7 + 0.3 * torch.rand(200_000, generator=generator)
    labels = (torch.rand(200_000, generator=generator) >= confidence - 0.2).long()
    result = calibration(two_class_probabilities(confidence), labels)
    assert result.ece == pytest.approx(0.2, abs=0.005)


def test_ece_of_fixed_predictions_is_exact():
    # two predictions at 0.9 confidence, one right: |0.5 − 0.9| in one bin holding all → 0.4
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    result = calibration(probabilities, torch.tensor([0, 1]))
    assert result.ece == pytest.approx(0.4)
    assert result.count[13] == 2 and result.accuracy[13] == pytest.approx(0.5)  # bin (0.8667, 0.9333]


def test_calibration_refuses_mismatched_labels():
    with pytest.raises(ValueError, match="probabilities"):
        calibration(torch.rand(4, 3), torch.zeros(5, dtype=torch.long))


def test_pixel_scale_round_trips():
    scale = PixelScale((0.1307,), (0.3081,))
    x = torch.randn(3, 1, 4, 4)
    assert torch.allclose(scale.from_pixels(scale.to_pixels(x)), x, atol=1e-6)


def test_kurakin_iteration_count():
    assert attack_iterations(0.0) == 0
    assert attack_iterations(2 / 255) == 3  # min(2 + 4, 2.5) rounded up
    assert attack_iterations(16 / 255) == 20  # min(20, 20)


@pytest.fixture(scope="module")
def trained_lenet():
    """LeNet-5 trained briefly on a synthetic 4-class task: a bright bar in one of four places."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (800,), generator=generator)
    pixels = 0.2 * torch.rand(800, 1, 28, 28, generator=generator)
    for c in range(4):
        pixels[labels == c, :, 7 * c : 7 * c + 7, 4:24] += 0.6
    scale = PixelScale((0.5,), (0.25,))
    inputs = scale.from_pixels(pixels.clamp(0, 1))
    model = LeNet5(num_classes=4)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for start in range(0, 800, 50):
            loss = F.cross_entropy(model(inputs[start : start + 50]), labels[start : start + 50])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval(), inputs[:200], labels[:200], scale


def test_ifgsm_with_zero_epsilon_changes_nothing(trained_lenet):
    model, inputs, labels, scale = trained_lenet
    attacked = iterative_attack(model, inputs, labels, 0.0, "ifgsm", scale)
    assert torch.allclose(attacked, inputs, atol=1e-5)
    clean = (model(inputs).argmax(1) == labels).float().mean().item()
    assert adversarial_accuracy(model, inputs, labels, [0.0], "ifgsm", scale)[0.0] == pytest.approx(clean)


@pytest.mark.parametrize("attack", ["ifgsm", "ill"])
def test_larger_epsilon_lowers_accuracy_and_stays_in_the_ball(trained_lenet, attack):
    model, inputs, labels, scale = trained_lenet
    accuracy = adversarial_accuracy(model, inputs, labels, [0.0, 8 / 255, 64 / 255], attack, scale)
    assert accuracy[0.0] > 0.9
    assert accuracy[0.0] >= accuracy[8 / 255] >= accuracy[64 / 255]
    assert accuracy[64 / 255] < accuracy[0.0] - 0.2
    attacked = scale.to_pixels(iterative_attack(model, inputs, labels, 8 / 255, attack, scale))
    original = scale.to_pixels(inputs)
    assert (attacked - original).abs().max() <= 8 / 255 + 1e-5
    assert attacked.min() >= -1e-6 and attacked.max() <= 1 + 1e-6


class QuadrantNet(nn.Module):
    """Reads only the top-left quadrant of its input: conv maps of the masked image, averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.register_buffer("mask", torch.zeros(1, 1, 16, 16))
        self.mask[..., :8, :8] = 1.0

    def forward(self, x):
        maps = F.relu(self.conv(x * self.mask))
        score = maps.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_grad_cam_highlights_the_quadrant_the_logit_reads():
    model = QuadrantNet()
    with torch.no_grad():
        model.conv.weight.fill_(0.1)
        model.conv.bias.zero_()
    inputs = torch.rand(3, 1, 16, 16) + 0.1
    cam = grad_cam(model, inputs, classes=torch.ones(3, dtype=torch.long))
    assert cam.shape == (3, 16, 16) and cam.max() <= 1 + 1e-6
    inside = cam[:, :8, :8].mean()
    outside = torch.cat([cam[:, 8:, :].flatten(), cam[:, :8, 8:].flatten()]).mean()
    assert inside > 0.3 and outside < 0.05 * inside


def test_last_conv_layer_and_a_clear_error_without_one():
    assert last_conv_layer(LeNet5()) == "conv2"
    with pytest.raises(ValueError, match="no Conv2d"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(1, 1, 2, 2))
