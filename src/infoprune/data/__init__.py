"""Data sets by name: ``load_dataset("mnist")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infoprune.data.base import BatchTransform, DatasetSplits, LabelledTensors, calibration_tensors
from infoprune.data.cifar import CIFAR_FORMATS, load_cifar, write_cifar_standin
from infoprune.data.deformed_mnist import load_deformed_mnist
from infoprune.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, load_imagefolder, write_imagefolder_standin
from infoprune.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist
from infoprune.data.tensor_file import load_tensor_dataset

DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "mnist": lambda data_dir=None, seed=0: load_mnist(),
    "deformed-mnist": lambda data_dir=None, seed=0: load_deformed_mnist(seed),
    "cifar10": lambda data_dir=None, seed=0: load_cifar("cifar10", data_dir, seed),
    "cifar100": lambda data_dir=None, seed=0: load_cifar("cifar100", data_dir, seed),
    # data_dir: ROOT with train/CLASS/*.jpg and val/CLASS/*.jpg (ImageNet's layout), decoded into memory
    "imagefolder": lambda data_dir=None, seed=0: load_imagefolder(data_dir, seed),
    # data_dir: a torch.save'd (inputs, labels) file, or a folder with train.pt and test.pt
    "tensor-file": lambda data_dir=None, seed=0: load_tensor_dataset(data_dir, seed),
}

NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # per-channel (mean, std) with which each data set's [0, 1] pixels were normalised
    "mnist": ((MNIST_MEAN,), (MNIST_STD,)),
    "deformed-mnist": ((MNIST_MEAN,), (MNIST_STD,)),
    **{name: (fmt.mean, fmt.std) for name, fmt in CIFAR_FORMATS.items()},
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}  # tensor-file: unknown (the user's own scale)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> DatasetSplits:
    """Load the data set ``name`` (``data_dir`` for those read from disk, e.g. CIFAR)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name](data_dir=data_dir, seed=seed)


__all__ = [
    "BatchTransform",
    "DATASETS",
    "DatasetSplits",
    "ImageFolder",
    "LabelledTensors",
    "NORMALISATION",
    "calibration_tensors",
    "load_cifar",
    "load_dataset",
    "load_imagefolder",
    "load_deformed_mnist",
    "load_tensor_dataset",
    "write_cifar_standin",
    "write_imagefolder_standin",
]
