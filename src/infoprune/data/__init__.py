"""Data sets by name: ``load_dataset("mnist")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infoprune.data.base import BatchTransform, DatasetSplits, LabelledTensors, calibration_tensors
from infoprune.data.mnist import load_mnist

DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "mnist": lambda data_dir=None, seed=0: load_mnist(),
}


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> DatasetSplits:
    """Load the data set ``name`` (``data_dir`` for those read from disk, e.g. CIFAR)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name](data_dir=data_dir, seed=seed)


__all__ = ["BatchTransform", "DATASETS", "DatasetSplits", "LabelledTensors", "calibration_tensors", "load_dataset"]
