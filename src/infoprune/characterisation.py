"""What pruning does beyond accuracy (MINT §IV-E): calibration, adversarial robustness, Grad-CAM.

Every function takes a model and plain tensors, so it applies to any network, pruned or not.

* **Calibration** (Naeini et al. 2015; Guo et al. 2017 §2): the confidence of a prediction is
  its top softmax probability. The predictions are put into ``bins`` equal-width confidence
  bins (MINT and Guo et al. use 15), and the expected calibration error is
  ``ECE = Σ_b (n_b / N) · |acc(b) − conf(b)|``; the reliability diagram plots acc(b) against
  the bin. A predictor whose confidence equals its probability of being right has ECE ≈ 0.
* **Adversarial accuracy** (MINT Fig. 6): accuracy on inputs attacked within an ℓ∞ ball of
  radius ε, by iterative FGSM (MINT's [52]; Kurakin et al. 2016 §2.2, "basic iterative
  method": step α along the sign of the loss gradient of the true label) and by the iterative
  least-likely-class method (MINT's [53]; Kurakin et al. §2.3: step *down* the loss of the class
  the clean input makes least likely). Kurakin et al.'s settings: α = 1/255 and
  ``min(255·ε + 4, 1.25 · 255·ε)`` iterations. ε is on the [0, 1] pixel scale: inputs that
  were normalised with a :class:`PixelScale` are attacked in pixel space (un-normalised,
  perturbed, clipped to [0, 1], normalised again). MINT's text does not list its ε values
  (only Fig. 6 shows them); :data:`EPSILONS` are Kurakin et al.'s 2–16 /255 and beyond.
* **Grad-CAM** (Selvaraju et al. 2017, Eqs. 1–2): for a conv layer's maps A^k and a class
  score y^c, weights α_k = mean over positions of ∂y^c/∂A^k, map ``ReLU(Σ_k α_k A^k)``,
  upsampled to the input and scaled to [0, 1] per image. MINT Fig. 7 shows the last conv layer.

:func:`characterise_pair` runs all of it on an original and a pruned model over a data set's
test split (the record a run stores with ``characterise = true``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infoprune.data import NORMALISATION, DatasetSplits

ECE_BINS = 15
"""Equal-width confidence bins of the ECE (Guo et al. 2017; MINT §IV-E, Fig. 8)."""

EPSILONS = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
"""ℓ∞ radii on the [0, 1] pixel scale: 0 (clean), Kurakin et al.'s 2, 4, 8, 16 /255, and 32/255
(0.125), so that small MNIST nets also show the fall of accuracy."""

SAMPLES = 500
"""Test images characterised per model."""

ATTACKS = ("ifgsm", "ill")
"""``ifgsm``: iterative FGSM away from the true label; ``ill``: iterative least-likely class."""


@dataclass(frozen=True)
class PixelScale:
    """How inputs were normalised: ``x = (pixel − mean) / std`` per channel, pixels in [0, 1].

    ``PixelScale.identity()`` for inputs that already are pixels in [0, 1].
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls) -> PixelScale:
        return cls((0.0,), (1.0,))

    def _shape(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (like.dim() - 2) if like.dim() > 2 else (1, -1)
        return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(shape)

    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * self._shape(self.std, inputs) + self._shape(self.mean, inputs)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self._shape(self.mean, pixels)) / self._shape(self.std, pixels)


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class Calibration:
    """ECE and the reliability diagram's bins (empty bins have count 0 and NaN statistics)."""

    ece: float
    bin_edges: list[float]
    accuracy: list[float]
    confidence: list[float]
    count: list[int]

    def to_dict(self) -> dict:
        return {"ece": self.ece, "bin_edges": self.bin_edges, "accuracy": self.accuracy,
                "confidence": self.confidence, "count": self.count}  # fmt: skip


def calibration(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Calibration:
    """Expected calibration error of predicted class ``probabilities`` (N, C) against ``labels``."""
    if probabilities.dim() != 2 or probabilities.shape[0] != labels.shape[0] or len(labels) == 0:
        raise ValueError(
            f"calibration needs probabilities (N, C) and N labels with N > 0, got {tuple(probabilities.shape)} "
            f"and {tuple(labels.shape)}."
        )
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    confidence = confidence.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # bin b holds confidences in (edge_b, edge_b+1]; a confidence of exactly 0 goes to the first bin
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins)
    accuracy_sum = torch.bincount(index, weights=correct, minlength=bins)
    confidence_sum = torch.bincount(index, weights=confidence, minlength=bins)
    ece = (accuracy_sum - confidence_sum).abs().sum() / len(labels)
    filled = count.clamp(min=1).double()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return Calibration(
        ece=float(ece),
        bin_edges=edges.tolist(),
        accuracy=torch.where(count > 0, accuracy_sum / filled, nan).tolist(),
        confidence=torch.where(count > 0, confidence_sum / filled, nan).tolist(),
        count=count.tolist(),
    )


@torch.no_grad()
def predict_probabilities(model: nn.Module, inputs: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Softmax outputs of ``model`` (in eval mode, on its device) for ``inputs``, on the CPU."""
    model.eval()
    device = _device(model)
    return torch.cat(
        [F.softmax(model(inputs[i : i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(inputs), batch_size)]
    )


# ---------------------------------------------------------------------------------------------
# Adversarial attacks


def attack_iterations(epsilon: float, step: float = 1 / 255) -> int:
    """Kurakin et al. §2.2: ``min(ε/α + 4, 1.25 · ε/α)`` iterations, rounded up (0 for ε = 0)."""
    ratio = epsilon / step
    return math.ceil(round(min(ratio + 4, 1.25 * ratio), 6))  # round: 16/255 ÷ 1/255 is not exactly 16


def iterative_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    attack: str = "ifgsm",
    scale: PixelScale | None = None,
    step: float = 1 / 255,
    iterations: int | None = None,
) -> torch.Tensor:
    """Adversarial versions of ``inputs`` within ``epsilon`` (ℓ∞, [0, 1] pixels) of them.

    ``attack="ifgsm"`` ascends the cross-entropy of ``labels``; ``"ill"`` descends that of each
    input's least likely class under ``model``. Returned in the inputs' (normalised) scale.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}.")
    if epsilon < 0:
        raise ValueError(f"epsilon must be ≥ 0 (an ℓ∞ radius on the [0, 1] pixel scale), got {epsilon}.")
    scale = scale or PixelScale.identity()
    iterations = attack_iterations(epsilon, step) if iterations is None else iterations
    model.eval()
    device = _device(model)
    clean = scale.to_pixels(inputs.to(device)).clamp(0, 1)
    if attack == "ill":
        with torch.no_grad():
            target, sign = model(scale.from_pixels(clean)).argmin(dim=1), -1.0
    else:
        target, sign = labels.to(device), 1.0
    pixels = clean.clone()
    for _ in range(iterations):
        pixels.requires_grad_(True)
        loss = F.cross_entropy(model(scale.from_pixels(pixels)), target)
        (gradient,) = torch.autograd.grad(loss, pixels)
        with torch.no_grad():
            pixels = pixels + sign * step * gradient.sign()
            pixels = torch.minimum(torch.maximum(pixels, clean - epsilon), clean + epsilon).clamp(0, 1)
    return scale.from_pixels(pixels.detach()).to(inputs.device)


def adversarial_accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float] = EPSILONS,
    attack: str = "ifgsm",
    scale: PixelScale | None = None,
    batch_size: int = 500,
) -> dict[float, float]:
    """Top-1 accuracy (on the true labels) of ``model`` on attacked ``inputs``, per ε."""
    device = _device(model)
    accuracy = {}
    for epsilon in epsilons:
        correct = 0
        for start in range(0, len(inputs), batch_size):
            x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
            adversarial = iterative_attack(model, x, y, epsilon, attack, scale)
            with torch.no_grad():
                correct += (model(adversarial.to(device)).argmax(1).cpu() == y.cpu()).sum().item()
        accuracy[float(epsilon)] = correct / len(inputs)
    return accuracy


# ---------------------------------------------------------------------------------------------
# Grad-CAM


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` registered in ``model`` (MINT Fig. 7's layer)."""
    names = _conv_names(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer, so Grad-CAM has no feature maps to weigh.")
    return names[-1]


def grad_cam(
    model: nn.Module, inputs: torch.Tensor, layer: str | None = None, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``classes`` (default: the predicted ones).

    ``layer`` names a conv layer of ``model`` (default :func:`last_conv_layer`); its output maps
    are weighted by their mean gradient (Selvaraju et al. 2017, Eqs. 1–2) and upsampled
    bilinearly to the input's size. An all-zero map stays zero.
    """
    layer = layer or last_conv_layer(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"{type(model).__name__} has no layer {layer!r}; conv layers: {_conv_names(model)}.")
    model.eval()
    device = _device(model)
    inputs = inputs.to(device)
    recorded: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda _m, _i, output: recorded.append(output))
    try:
        with torch.enable_grad():
            logits = model(inputs)
            chosen = logits.argmax(1) if classes is None else classes.to(device)
            score = logits.gather(1, chosen[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, recorded[0])
    finally:
        handle.remove()
    maps = recorded[0].detach()
    if maps.dim() != 4:
        raise ValueError(f"Grad-CAM needs a layer with (N, C, H, W) maps; {layer!r} gives {tuple(maps.shape)}.")
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp(min=1e-12)[:, None, None]
    return (cam / peak).cpu()


def _conv_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def pixel_scale(dataset: str) -> PixelScale:
    """The normalisation of ``dataset``'s inputs (identity when unknown, e.g. tensor-file)."""
    mean, std = NORMALISATION.get(dataset, ((0.0,), (1.0,)))
    return PixelScale(mean, std)


# ---------------------------------------------------------------------------------------------
# All of it for one model, and for an original and its pruned model


def characterise(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    scale: PixelScale | None = None,
    epsilons: Sequence[float] = EPSILONS,
    attacks: Sequence[str] = ATTACKS,
    bins: int = ECE_BINS,
) -> dict:
    """JSON-ready: clean accuracy, calibration (ECE, bins) and accuracy per attack and ε.

    Adversarial accuracies are keyed by ε as a string (``f"{ε:.6g}"``) so the dict survives JSON.
    """
    probabilities = predict_probabilities(model, inputs)
    return {
        "samples": len(inputs),
        "accuracy": (probabilities.argmax(1) == labels).double().mean().item(),
        "calibration": calibration(probabilities, labels, bins).to_dict(),
        "adversarial": {
            attack: {f"{e:.6g}": a for e, a in adversarial_accuracy(model, inputs, labels, epsilons, attack, scale).items()}
            for attack in attacks
        },
    }


def characterise_pair(original: nn.Module, pruned: nn.Module, data: DatasetSplits, samples: int = SAMPLES,
                      seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``{"original": …, "retrained": …}``: both models characterised on the same seeded subset
    of ``data``'s test split, pixels scaled by :func:`pixel_scale` of the data set."""
    test = data.test.subset(samples, seed=seed)
    scale = pixel_scale(data.name)
    return {name: characterise(model, test.inputs, test.labels, scale) for name, model in
            (("original", original), ("retrained", pruned))}  # fmt: skip
