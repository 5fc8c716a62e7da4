"""CIFAR-10 and CIFAR-100 from a directory in the standard python-pickle format.

Expected layout (what the official ``*-python.tar.gz`` archives unpack to):

* CIFAR-10: ``data_batch_1`` … ``data_batch_5`` and ``test_batch``, each a pickled dict with
  ``data`` (uint8, N×3072, channel-major 32×32 planes) and ``labels``;
* CIFAR-100: ``train`` and ``test`` with ``data`` and ``fine_labels`` (100 classes).

``data_dir`` may be that folder or its parent holding ``cifar-10-batches-py`` /
``cifar-100-python``. The files are read with a restricted unpickler that only rebuilds
numpy arrays, lists and dicts, so a foreign pickle cannot run code.

Images are scaled to [0, 1] and normalised with the usual per-channel mean and standard
deviation of each training set. The validation split is a seeded random ``val_fraction`` of
the 50,000 training images (10%, i.e. 5,000, by default); the test split is the official one.
Training-time augmentation (MIPP App. D.2): random 32×32 crop of the image zero-padded by 4
(zero after normalisation, i.e. the mean colour) and a random horizontal flip.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infoprune.data.augment import random_crop_flip
from infoprune.data.base import DatasetSplits, LabelledTensors


@dataclass(frozen=True)
class CifarFormat:
    """File names and label key of one CIFAR variant, and its normalisation constants."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_FORMATS: dict[str, CifarFormat] = {
    "cifar10": CifarFormat(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "labels",
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarFormat(
        "cifar-100-python",
        ("train",),
        "test",
        "fine_labels",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except what rebuilds a numpy array."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR files hold only arrays and lists; refusing {module}.{name}.")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        entry = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    entry = {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path} is not a CIFAR batch: it lacks the 'data' or {label_key!r} entry.")
    return np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry[label_key], dtype=np.int64)


def cifar_folder(name: str, data_dir: str | Path | None) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` itself or its standard sub-folder."""
    fmt = CIFAR_FORMATS[name]
    expected = (
        f"Expected the {name} python-pickle files {', '.join((*fmt.train_files, fmt.test_file))} "
        f"(the official archive's folder {fmt.folder!r}) in the data directory or in its "
        f"sub-folder {fmt.folder!r}; pass that directory as data_dir (--data-dir on the command line)."
    )
    if data_dir is None:
        raise FileNotFoundError(f"No data directory given. {expected}")
    root = Path(data_dir).expanduser()
    for candidate in (root, root / fmt.folder):
        if all((candidate / f).is_file() for f in (*fmt.train_files, fmt.test_file)):
            return candidate
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist. {expected}")
    present = sorted(p.name for p in root.iterdir())
    shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
    raise FileNotFoundError(f"{root} does not hold the {name} files (it holds: {shown or 'nothing'}). {expected}")


def _to_images(data: np.ndarray, fmt: CifarFormat) -> torch.Tensor:
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR data must be N×3072 bytes, got shape {data.shape}.")
    images = torch.from_numpy(data.copy()).reshape(-1, 3, 32, 32).float() / 255.0
    mean = torch.tensor(fmt.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(fmt.std).reshape(1, 3, 1, 1)
    return (images - mean) / std


def load_cifar(name: str, data_dir: str | Path | None, seed: int = 0, val_fraction: float = 0.1) -> DatasetSplits:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) as normalised tensors."""
    if name not in CIFAR_FORMATS:
        raise ValueError(f"Unknown CIFAR variant {name!r}; choose one of {sorted(CIFAR_FORMATS)}.")
    fmt = CIFAR_FORMATS[name]
    folder = cifar_folder(name, data_dir)
    parts = [_read_batch(folder / f, fmt.label_key) for f in fmt.train_files]
    train = LabelledTensors(
        _to_images(np.concatenate([p[0] for p in parts]), fmt), torch.from_numpy(np.concatenate([p[1] for p in parts]))
    )
    test_data, test_labels = _read_batch(folder / fmt.test_file, fmt.label_key)
    test = LabelledTensors(_to_images(test_data, fmt), torch.from_numpy(test_labels))
    train, val = train.hold_out(val_fraction, seed)
    return DatasetSplits(
        name,
        train,
        val,
        test,
        num_classes=fmt.num_classes,
        train_transform=random_crop_flip(),
    )


def write_cifar_standin(
    directory: str | Path, name: str = "cifar10", train_size: int = 500, test_size: int = 100, seed: int = 0
) -> Path:
    """Write a small generated data set in ``name``'s on-disk format; returns its folder.

    Each class has its own mean colour and a horizontal or vertical stripe pattern, plus
    noise, so a network can learn it. ``train_size`` is split evenly over the training files.
    For tests and demos only: it says nothing about accuracy on the real CIFAR.
    """
    fmt = CIFAR_FORMATS[name]
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(fmt.num_classes, 3, 1, 1))
    stripes = np.sin(np.arange(32) * np.pi / 4) * 30
    patterns = np.stack([stripes[:, None] * np.ones((1, 32)), stripes[None, :] * np.ones((32, 1))])

    def generate(count: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, fmt.num_classes, size=count)
        images = colours[labels] + patterns[labels % 2][:, None] + rng.normal(0, 25, size=(count, 3, 32, 32))
        return np.clip(images, 0, 255).astype(np.uint8).reshape(count, -1), labels.tolist()

    folder = Path(directory) / fmt.folder
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [len(chunk) for chunk in np.array_split(np.arange(train_size), len(fmt.train_files))]
    for file, size in zip((*fmt.train_files, fmt.test_file), (*sizes, test_size)):
        data, labels = generate(size)
        with open(folder / file, "wb") as handle:
            pickle.dump({b"data": data, fmt.label_key.encode(): labels}, handle)
    return folder
