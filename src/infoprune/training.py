"""Training and evaluation loops, readable top to bottom, and the recipes of MIPP Table 2.

A :class:`Recipe` is plain data. Learning-rate milestones are stored as fractions of the
epoch budget so that a recipe scaled down to a few epochs decays at the same relative points
(Table 2's MNIST schedule, 1e-2 decayed ×0.1 at epochs 30 and 60 of 90, becomes 1/3 and 2/3).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from infoprune.data.base import BatchTransform, LabelledTensors
from infoprune.progress import progress_bar


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum, weight decay and step decay at fractions of ``epochs``."""

    lr: float
    epochs: int
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    gamma: float = 0.1

    def with_epochs(self, epochs: int) -> Recipe:
        return replace(self, epochs=epochs)


RECIPES: dict[str, Recipe] = {
    # MIPP Table 2, MNIST: SGD (0.9, 1e-4), batch 100, lr 1e-2, [30, 60] of 90 epochs.
    "mnist": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
    "mnist-retrain": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}.")
    return RECIPES[name]


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    model: nn.Module,
    data: LabelledTensors,
    recipe: Recipe,
    device: torch.device | str | None = None,
    seed: int = 0,
    transform: BatchTransform | None = None,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` in place with cross-entropy; returns the mean loss of each epoch."""
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    milestones = sorted({round(f * recipe.epochs) for f in recipe.milestones if 0 < round(f * recipe.epochs) < recipe.epochs})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=recipe.gamma)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(data) + recipe.batch_size - 1) // recipe.batch_size
    losses = []
    bar = progress_bar(total=recipe.epochs * steps_per_epoch, desc=desc)
    try:
        for _epoch in range(recipe.epochs):
            order = torch.randperm(len(data), generator=generator)
            total = 0.0
            for start in range(0, len(data), recipe.batch_size):
                index = order[start : start + recipe.batch_size]
                inputs = data.inputs[index]
                if transform is not None:
                    inputs = transform(inputs, generator)
                inputs, labels = inputs.to(device), data.labels[index].to(device)
                loss = F.cross_entropy(model(inputs), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
                bar.update(1)
            scheduler.step()
            losses.append(total / len(data))
            bar.set_postfix_str(f"loss {losses[-1]:.4f}")
    finally:
        bar.close()
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: LabelledTensors, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (in eval mode, on the model's device)."""
    if len(data) == 0:
        raise ValueError("Cannot evaluate on an empty data set.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(data.inputs[start : start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == data.labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(data)
