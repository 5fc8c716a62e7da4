"""Training and evaluation loops, readable top to bottom, and the recipes of MIPP Table 2.

A :class:`Recipe` is plain data. Learning-rate milestones are stored as fractions of the
epoch budget so that a recipe scaled down to a few epochs decays at the same relative points
(Table 2's MNIST schedule, 1e-2 decayed ×0.1 at epochs 30 and 60 of 90, becomes 1/3 and 2/3).
Every number of a preset can be overridden: ``get_recipe("cifar10", epochs=30, lr=0.05)``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infoprune.data.augment import compose, cutout
from infoprune.data.base import BatchTransform, LabelledTensors
from infoprune.io import atomic_write_bytes, set_aside
from infoprune.progress import progress_bar
from infoprune.running import evaluating, primary_output
from infoprune.validation import check_count, resolve_device


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum, weight decay and step decay at fractions of ``epochs``.

    ``mixup_alpha`` > 0 trains on mixup batches (Zhang et al. 2018) with λ ~ Beta(α, α);
    ``cutout`` > 0 zeroes one square of that many pixels per image (DeVries & Taylor 2017).
    Both are the CIFAR-100 extras of MIPP App. D.2.
    """

    lr: float
    epochs: int
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    gamma: float = 0.1
    mixup_alpha: float = 0.0
    cutout: int = 0

    def __post_init__(self) -> None:
        check_count("epochs", self.epochs, 0)
        check_count("batch_size", self.batch_size, 1)

    def with_epochs(self, epochs: int) -> Recipe:
        return replace(self, epochs=epochs)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (0-based): ``lr`` times ``gamma`` per milestone passed."""
        passed = sum(1 for step in {round(f * self.epochs) for f in self.milestones} if 0 < step <= epoch)
        return self.lr * self.gamma**passed


# MIPP Table 2. CIFAR: SGD (0.9, 5e-4); lr 0.1 decayed ×0.1 at epochs 100 and 150 of 200;
# re-training lr 1e-2 at 60 and 90 of 120; batch 128 on CIFAR-10, 256 on CIFAR-100.
# CIFAR-100 adds mixup and cutout (App. D.2) with the values those papers use on CIFAR
# (α = 1, 8×8 patches): the MIPP paper does not give them.
_CIFAR = Recipe(lr=0.1, epochs=200, batch_size=128, weight_decay=5e-4, milestones=(100 / 200, 150 / 200))
_CIFAR_RETRAIN = replace(_CIFAR, lr=1e-2, epochs=120, milestones=(60 / 120, 90 / 120))
_CIFAR100_EXTRAS = {"batch_size": 256, "mixup_alpha": 1.0, "cutout": 8}

RECIPES: dict[str, Recipe] = {
    # MIPP Table 2, MNIST: SGD (0.9, 1e-4), batch 100, lr 1e-2, [30, 60] of 90 epochs.
    "mnist": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
    "mnist-retrain": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
    "cifar10": _CIFAR,
    "cifar10-retrain": _CIFAR_RETRAIN,
    "cifar100": replace(_CIFAR, **_CIFAR100_EXTRAS),
    "cifar100-retrain": replace(_CIFAR_RETRAIN, **_CIFAR100_EXTRAS),
    # A user's own tensors (--data tensor-file): no paper gives a recipe, so MNIST's SGD recipe
    # (the most generic one above) is the default; override any field with get_recipe.
    "tensor-file": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
    "tensor-file-retrain": Recipe(lr=1e-2, epochs=90, batch_size=100, weight_decay=1e-4),
    # MIPP Table 2, ImageNet: SGD (0.9, 1e-4), batch 1024, lr 0.1 at [30, 60] of 90 epochs;
    # re-training lr 1e-2 at [30, 60] of 75 epochs.
    "imagenet": Recipe(lr=0.1, epochs=90, batch_size=1024, weight_decay=1e-4, milestones=(30 / 90, 60 / 90)),
    "imagenet-retrain": Recipe(lr=1e-2, epochs=75, batch_size=1024, weight_decay=1e-4, milestones=(30 / 75, 60 / 75)),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """The preset ``name`` with any field replaced, e.g. ``get_recipe("cifar10", epochs=10)``."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}.")
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Recipe has no field(s) {unknown}; its fields are: {sorted(known)}.")
    return replace(RECIPES[name], **overrides)


RECIPE_FAMILIES = {"imagefolder": "imagenet"}  # data sets whose recipe has another name


def recipe_for(dataset: str, retrain: bool, epochs: int) -> Recipe:
    """The named recipe of ``dataset`` (MIPP Table 2), scaled to ``epochs``."""
    family = RECIPE_FAMILIES.get(dataset, dataset.removeprefix("deformed-"))
    name = f"{family}-retrain" if retrain else family
    if name not in RECIPES:
        raise ValueError(
            f"No {'re-' if retrain else ''}training recipe for data set {dataset!r} (recipes: "
            f"{', '.join(sorted(RECIPES))}); add one to infoprune.training.RECIPES, or set the "
            f"{'re-training' if retrain else 'training'} epochs to 0."
        )
    return RECIPES[name].with_epochs(epochs)


def mixup(
    inputs: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each sample with a random partner: ``(λx + (1-λ)x', y, y', λ)``, λ ~ Beta(α, α).

    Zhang et al. (2018); the loss is ``λ·CE(f(x̃), y) + (1-λ)·CE(f(x̃), y')``. λ is drawn
    with numpy seeded from ``generator`` so the whole run stays reproducible.
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    partner = torch.randperm(inputs.shape[0], generator=generator)
    return lam * inputs + (1 - lam) * inputs[partner], labels, labels[partner], lam


def _resume(path: Path, recipe: Recipe, seed: int) -> dict | None:
    """The checkpoint at ``path`` if there is one; an error if it belongs to another run.

    A checkpoint that cannot be read (truncated, or not a training checkpoint) is set aside
    as ``PATH.corrupt`` with a warning, and training starts afresh.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and {"recipe", "seed", "model", "optimizer", "generator", "losses"} <= set(state)):
            raise ValueError("not a training checkpoint")
    except Exception as error:  # any unreadable file: torch's zip / unpickling errors included
        set_aside(path, "training checkpoint", "cannot be read", error, "training from the start")
        return None
    if state["recipe"] != asdict(recipe) or state["seed"] != seed:
        raise ValueError(
            f"The checkpoint {path} was written by a run with recipe {state['recipe']} and seed "
            f"{state['seed']}, not {asdict(recipe)} and seed {seed}. Delete it or pass another "
            "checkpoint path to start afresh."
        )
    return state


def train(
    model: nn.Module,
    data: LabelledTensors,
    recipe: Recipe,
    device: torch.device | str | None = None,
    seed: int = 0,
    transform: BatchTransform | None = None,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place with cross-entropy; returns the mean loss of each epoch.

    ``on_epoch(epoch)`` is called after each epoch (counted from 1) with the model in eval mode,
    e.g. to record the accuracy along the way; training resumes in train mode after it.

    ``transform`` augments each batch (e.g. ``DatasetSplits.train_transform``), followed by
    cutout when the recipe asks for it. With ``checkpoint``, the model, optimiser and
    random-number state are saved there (atomically) after every epoch, and a later call with the same
    recipe and seed resumes after the last saved epoch, ending where an uninterrupted run
    would (a finished run's checkpoint makes the call return at once).
    """
    device = resolve_device(device)
    model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    augment = compose(transform, cutout(recipe.cutout) if recipe.cutout else None)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    path = Path(checkpoint) if checkpoint is not None else None
    saved = _resume(path, recipe, seed) if path is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        losses = list(saved["losses"])
    steps_per_epoch = (len(data) + recipe.batch_size - 1) // recipe.batch_size
    bar = progress_bar(total=recipe.epochs * steps_per_epoch, initial=len(losses) * steps_per_epoch, desc=desc)
    try:
        for epoch in range(len(losses), recipe.epochs):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(epoch)
            order = torch.randperm(len(data), generator=generator)
            total = 0.0
            for start in range(0, len(data), recipe.batch_size):
                index = order[start : start + recipe.batch_size]
                inputs, labels = data.inputs[index], data.labels[index]
                if augment is not None:
                    inputs = augment(inputs, generator)
                if recipe.mixup_alpha > 0:
                    inputs, labels, partners, lam = mixup(inputs, labels, recipe.mixup_alpha, generator)
                    logits = model(inputs.to(device))
                    loss = lam * F.cross_entropy(logits, labels.to(device)) + (1 - lam) * F.cross_entropy(
                        logits, partners.to(device)
                    )
                else:
                    loss = F.cross_entropy(model(inputs.to(device)), labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
                bar.update(1)
            losses.append(total / len(data))
            bar.set_postfix_str(f"loss {losses[-1]:.4f}")
            if path is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "losses": losses}
                state |= {"generator": generator.get_state(), "recipe": asdict(recipe), "seed": seed}
                atomic_write_bytes(path, lambda file: torch.save(state, file))
            if on_epoch is not None:
                model.eval()
                on_epoch(epoch + 1)
                model.train()
    finally:
        bar.close()
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: LabelledTensors, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (in eval mode, on the model's device)."""
    if len(data) == 0:
        raise ValueError("Cannot evaluate on an empty data set.")
    device = next(model.parameters()).device
    correct = 0
    with evaluating(model):
        for start in range(0, len(data), batch_size):
            logits = primary_output(model(data.inputs[start : start + batch_size].to(device)))
            correct += (logits.argmax(1).cpu() == data.labels[start : start + batch_size]).sum().item()
    return correct / len(data)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 100) -> bool:
    """Re-estimate every BatchNorm layer's running mean and variance on ``inputs`` (weights
    untouched): the statistics are reset and averaged over all batches (``momentum=None``), the
    usual repair of a pruned network's shifted activations before any re-training (e.g. Li et al.
    2020, EagleEye). Returns False, changing nothing, when the model has no BatchNorm layer."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size].to(device))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return True


@dataclass(frozen=True)
class EpochCost:
    """The estimated cost of one training epoch: wall seconds and CPU seconds of this process."""

    wall_seconds: float
    cpu_seconds: float


def epoch_cost(
    model: nn.Module, data: LabelledTensors, recipe: Recipe, device: torch.device | str | None = None, steps: int = 10
) -> EpochCost:
    """What one training epoch of ``model`` on ``data`` with ``recipe``'s batch size costs, from
    ``steps`` timed SGD steps on a copy (after one untimed warm-up step), scaled to the epoch's
    step count: the unit in which a pruning method's cost reads as "epochs". CPU seconds (of this
    process, all its threads) hold on a loaded machine where wall seconds do not."""
    check_count("steps", steps, 1)
    device = resolve_device(device)
    trial = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(trial.parameters(), lr=0.0, momentum=recipe.momentum)
    generator = torch.Generator().manual_seed(0)
    wall = cpu = 0.0
    for step in range(steps + 1):
        index = torch.randint(0, len(data), (min(recipe.batch_size, len(data)),), generator=generator)
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(primary_output(trial(data.inputs[index].to(device))), data.labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step > 0:
            wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
    steps_per_epoch = (len(data) + recipe.batch_size - 1) // recipe.batch_size
    return EpochCost(wall / steps * steps_per_epoch, cpu / steps * steps_per_epoch)
