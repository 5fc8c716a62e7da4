"""Labelled data as plain tensors, and the calibration-set adapter used by ``prune``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""Training-time augmentation applied to a batch of inputs with a seeded generator."""


@dataclass
class LabelledTensors:
    """Inputs ``(N, C, H, W)`` (or ``(N, D)``) with integer labels ``(N,)``."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"inputs and labels differ in length: {self.inputs.shape[0]} vs {self.labels.shape[0]}."
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, count: int, seed: int = 0) -> LabelledTensors:
        """A seeded random subset of ``count`` samples (all of them if fewer exist)."""
        if count >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return LabelledTensors(self.inputs[order], self.labels[order])

    def hold_out(self, fraction: float, seed: int = 0) -> tuple[LabelledTensors, LabelledTensors]:
        """``(rest, held_out)``: a seeded random ``fraction`` of the samples set apart."""
        if not 0 <= fraction < 1:
            raise ValueError(f"The held-out fraction must be in [0, 1), got {fraction}.")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held = round(fraction * len(self))
        rest, out = order[held:], order[:held]
        return (
            LabelledTensors(self.inputs[rest], self.labels[rest]),
            LabelledTensors(self.inputs[out], self.labels[out]),
        )


@dataclass
class DatasetSplits:
    """A data set ready for training, pruning and testing."""

    name: str
    train: LabelledTensors
    val: LabelledTensors
    test: LabelledTensors
    num_classes: int
    train_transform: BatchTransform | None = None


def calibration_tensors(data, max_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn ``data`` into ``(inputs, labels or None)`` on the CPU.

    ``data`` may be a tensor of inputs, a :class:`LabelledTensors`, or a DataLoader (any
    iterable) yielding input tensors or ``(inputs, labels)`` pairs. Reading stops after
    ``max_samples`` samples.
    """
    if isinstance(data, LabelledTensors):
        inputs, labels = data.inputs, data.labels
    elif isinstance(data, torch.Tensor):
        inputs, labels = data, None
    elif isinstance(data, (DataLoader, list, tuple)) or hasattr(data, "__iter__"):
        xs, ys, seen = [], [], 0
        for batch in data:
            if isinstance(batch, (list, tuple)):
                if not batch or not isinstance(batch[0], torch.Tensor):
                    raise ValueError("A DataLoader must yield tensors or (inputs, labels) pairs.")
                xs.append(batch[0])
                if len(batch) > 1 and isinstance(batch[1], torch.Tensor):
                    ys.append(batch[1])
            elif isinstance(batch, torch.Tensor):
                xs.append(batch)
            else:
                raise ValueError(f"A DataLoader must yield tensors or (inputs, labels) pairs, got {type(batch).__name__}.")
            seen += xs[-1].shape[0]
            if max_samples is not None and seen >= max_samples:
                break
        if not xs:
            raise ValueError("The calibration data is empty: the DataLoader yielded no batch.")
        inputs = torch.cat(xs)
        labels = torch.cat(ys) if len(ys) == len(xs) else None
    else:
        raise TypeError(
            f"calibration data must be a tensor, LabelledTensors or a DataLoader, got {type(data).__name__}."
        )
    if max_samples is not None:
        inputs = inputs[:max_samples]
        labels = None if labels is None else labels[:max_samples]
    return inputs.detach().cpu(), None if labels is None else labels.detach().cpu()
