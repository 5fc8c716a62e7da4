"""A user's own data: (inputs, labels) tensors saved with ``torch.save``.

Accepted on disk (read with ``torch.load(weights_only=True)``, so only tensors and plain
containers load, never code):

* one file holding ``{"inputs": X, "labels": y}`` or a tuple ``(X, y)``: split at random
  (seeded) into train / validation / test by ``val_fraction`` and ``test_fraction``;
* a directory holding ``train.pt`` and ``test.pt`` of that form: the validation split is a
  seeded ``val_fraction`` of ``train.pt``.

``X`` is a float tensor with one sample per row (any per-sample shape, e.g. ``(N, C, H, W)``),
``y`` integer class labels ``(N,)``; the number of classes is ``max(y) + 1`` unless the dict
says ``"num_classes"``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infoprune.data.base import DatasetSplits, LabelledTensors

FORMAT_HELP = (
    'Save {"inputs": X, "labels": y} (or the tuple (X, y)) with torch.save, X a float tensor '
    "with one sample per row and y integer labels of the same length; pass the file, or a "
    "directory holding train.pt and test.pt, as data_dir."
)


def read_tensor_file(path: str | Path) -> tuple[LabelledTensors, int | None]:
    """The labelled tensors in ``path`` and the ``num_classes`` it declares (or None)."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any load failure: report the file and the expected format
        raise ValueError(
            f"Could not read {path} as a tensor file ({type(error).__name__}: {error}). {FORMAT_HELP}"
        ) from error
    num_classes = None
    if isinstance(content, dict) and {"inputs", "labels"} <= set(content):
        inputs, labels, num_classes = content["inputs"], content["labels"], content.get("num_classes")
    elif isinstance(content, (tuple, list)) and len(content) == 2:
        inputs, labels = content
    else:
        raise ValueError(f"{path} holds a {type(content).__name__}, not inputs and labels. {FORMAT_HELP}")
    if not (isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and inputs.dim() >= 2):
        raise ValueError(f"The inputs in {path} must be a float tensor of shape (N, ...). {FORMAT_HELP}")
    if not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point()):
        raise ValueError(f"The labels in {path} must be an integer tensor of shape (N,). {FORMAT_HELP}")
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"The labels in {path} must be class indices >= 0, found {int(labels.min())}.")
    return LabelledTensors(inputs.float(), labels.long()), num_classes


def load_tensor_dataset(
    path: str | Path | None, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> DatasetSplits:
    """Train / validation / test splits from a tensor file or a train.pt + test.pt directory."""
    if path is None:
        raise FileNotFoundError(f"No data path given. {FORMAT_HELP}")
    path = Path(path).expanduser()
    if path.is_dir():
        missing = [name for name in ("train.pt", "test.pt") if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lacks {', '.join(missing)}. {FORMAT_HELP}")
        (train, declared), (test, _) = read_tensor_file(path / "train.pt"), read_tensor_file(path / "test.pt")
    elif path.is_file():
        everything, declared = read_tensor_file(path)
        train, test = everything.hold_out(test_fraction, seed)
    else:
        raise FileNotFoundError(f"{path} does not exist. {FORMAT_HELP}")
    train, val = train.hold_out(val_fraction, seed + 1)
    if train.inputs.shape[1:] != test.inputs.shape[1:]:
        raise ValueError(
            f"Train and test samples differ in shape: {tuple(train.inputs.shape[1:])} vs "
            f"{tuple(test.inputs.shape[1:])}."
        )
    labels = torch.cat([train.labels, val.labels, test.labels])
    num_classes = int(declared) if declared is not None else int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise ValueError(f"A label is {int(labels.max())} but num_classes is {num_classes}.")
    return DatasetSplits(path.stem, train, val, test, num_classes)
