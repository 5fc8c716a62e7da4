"""Labelled data as plain tensors, and the calibration-set adapter used by ``prune``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from infoprune.padding import TOKEN_DTYPES, mark_padding, pad_to
from infoprune.progress import logger
from infoprune.validation import check_count, check_finite

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


CALIBRATION_CAP = 10_000
"""Samples read from an iterator without a length (a generator) when no count is given."""


def calibration_tensors(data, max_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn ``data`` into ``(inputs, labels or None)`` on the CPU, with finite inputs.

    ``data`` may be a tensor of inputs, a :class:`LabelledTensors`, a bare ``(inputs, labels)``
    tuple (labels 1-D, one per input row), a Hugging Face style dict batch (:func:`token_batch`),
    or a DataLoader (any iterable) yielding input tensors, ``(inputs, labels)`` pairs or dict
    batches. Integer inputs (token ids) stay integers. Reading stops after ``max_samples``
    samples; an iterable without a length (a generator, a DataLoader over an
    ``IterableDataset``) stops after :data:`CALIBRATION_CAP` when none is given, and says so,
    so that an endless stream cannot hang ``prune``.
    """
    max_samples = check_count("calibration_samples", max_samples, minimum=1, optional=True)
    if isinstance(data, Mapping):
        inputs, labels = token_batch(data, "The calibration data")
        data = inputs if labels is None else LabelledTensors(inputs, labels)
    if _is_inputs_and_labels(data):
        data = LabelledTensors(*data)
    if isinstance(data, LabelledTensors):
        inputs, labels = data.inputs, data.labels
    elif isinstance(data, torch.Tensor):
        inputs, labels = data, None
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "calibration data must be a tensor, LabelledTensors, an (inputs, labels) tuple, a dict batch with "
            f"input_ids or a DataLoader, got {type(data).__name__}."
        )
    else:
        inputs, labels = _read_batches(data, max_samples)
    if inputs.dim() < 2:
        raise ValueError(
            f"The calibration inputs must have one sample per row, shape (N, ...), got shape {tuple(inputs.shape)}."
        )
    if max_samples is not None:
        inputs = inputs[:max_samples]
        labels = None if labels is None else labels[:max_samples]
    check_finite(inputs, "the calibration inputs")
    return inputs.detach().cpu(), None if labels is None else labels.detach().cpu()


def _is_inputs_and_labels(data) -> bool:
    """A bare ``(inputs, labels)`` pair: two tensors, the second 1-D (inputs never are), or a
    tuple of two tensors of one length (a list of two same-size batches stays two batches)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        return False
    inputs, labels = data
    if inputs.dim() < 2 or labels.dim() == 0:
        return False
    return labels.dim() == 1 or (isinstance(data, tuple) and labels.shape[0] == inputs.shape[0])


def _read_batches(data, max_samples: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the batches of an iterable; every batch must hold samples of one shape,
    except token-id batches (2-D int32/int64), which are right-padded to the longest with PAD."""
    cap = max_samples
    if cap is None and not _has_length(data):
        cap = CALIBRATION_CAP
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor | None] = []
    seen = 0
    for number, batch in enumerate(data, start=1):
        x, y = _split_batch(batch, number)
        if xs and x.dim() == 2 and x.dtype in TOKEN_DTYPES and x.dtype == xs[0].dtype:
            length = max(x.shape[1], xs[0].shape[1])  # token batches of other lengths: padded to the longest
            xs = [pad_to(part, length) for part in xs] if length > xs[0].shape[1] else xs
            x = pad_to(x, length)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(
                f"Batch {number} of the calibration data holds samples of shape {tuple(x.shape[1:])}, the "
                f"earlier batches {tuple(xs[0].shape[1:])}: every batch must hold samples of one shape."
            )
        if xs and (y is None) != (ys[0] is None):
            raise ValueError(
                f"Batch {number} of the calibration data {'lacks' if y is None else 'has'} labels and batch 1 "
                f"{'has' if y is None else 'lacks'} them: yield (inputs, labels) in every batch or in none."
            )
        xs.append(x)
        ys.append(y)
        seen += x.shape[0]
        if cap is not None and seen >= cap:
            if max_samples is None:
                logger.info(
                    "calibration data has no length: read its first %d samples; pass calibration_samples= "
                    "to read another number",
                    cap,
                )
            break
    if not xs:
        raise ValueError("The calibration data is empty: the DataLoader yielded no batch.")
    labels = None if ys[0] is None else torch.cat([y for y in ys if y is not None])
    return torch.cat(xs), labels


def _has_length(data) -> bool:
    """``len(data)`` works: a DataLoader over an ``IterableDataset`` has ``__len__`` but raises."""
    try:
        len(data)
    except TypeError:
        return False
    return True


def _split_batch(batch, number: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, labels or None)`` of one batch, which is a tensor or an ``(inputs, labels, ...)`` tuple."""
    if isinstance(batch, torch.Tensor):
        x, y = batch, None
    elif isinstance(batch, Mapping):
        x, y = token_batch(batch, f"Batch {number} of the calibration data")
    elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        x = batch[0]
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
    else:
        raise ValueError(
            f"A DataLoader must yield tensors or (inputs, labels) pairs; batch {number} is a {type(batch).__name__}."
        )
    if x.dim() < 2:
        raise ValueError(
            f"Batch {number} of the calibration data has shape {tuple(x.shape)}: a batch holds one sample per row."
        )
    if y is not None and y.shape[:1] != x.shape[:1]:
        raise ValueError(f"Batch {number} of the calibration data has {x.shape[0]} inputs but {y.shape[0] if y.dim() else 0} labels.")
    return x, y


TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids")
"""The keys of a Hugging Face style batch that calibration reads (the model gets input_ids and
the attention mask)."""


def token_batch(batch: Mapping, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(input_ids, labels or None)`` of a Hugging Face style dict batch.

    Padded positions (``attention_mask`` 0) hold :data:`infoprune.padding.PAD` in the ids;
    :func:`infoprune.prune` passes the mask back to the model on every call. The model gets
    no other entry, so ``token_type_ids`` must be all zero. Token ids stay integers.
    """
    if "input_ids" not in batch:
        raise ValueError(f"{where} is a dict without input_ids (keys: {sorted(batch)}); a dict batch holds "
                         "input_ids and, optionally, labels and an attention_mask.")
    other = sorted(set(batch) - set(TOKEN_KEYS))
    if other:
        raise ValueError(f"{where} holds {other} besides {list(TOKEN_KEYS)}: infoprune runs the model on input_ids "
                         "(and the attention_mask) alone. Drop those entries (or wrap the model so that it takes input_ids "
                         "only).")
    mask, types = batch.get("attention_mask"), batch.get("token_type_ids")
    ids = batch["input_ids"]
    if mask is not None:
        if torch.as_tensor(mask).shape != ids.shape:
            raise ValueError(f"{where} has an attention_mask of shape {tuple(torch.as_tensor(mask).shape)} for "
                             f"input_ids of shape {tuple(ids.shape)}: give one mask entry per token.")
        ids = mark_padding(ids, mask)
    if types is not None and bool(torch.as_tensor(types).any()):
        raise ValueError(f"{where} has non-zero token_type_ids: infoprune runs the model on input_ids "
                         "(and the attention_mask) alone. "
                         "Pass single-segment sequences (or wrap the model so that it takes input_ids only).")
    return ids, batch.get("labels")


def data_fingerprint(data_dir: str | Path | None) -> str | None:
    """What identifies the data read from ``data_dir``: a hash of every file's name (relative
    to ``data_dir``), size and modification time (ns), or None without a ``data_dir``.

    Part of a sweep run's id and of a cached base model's name, so that results and models
    trained on other data are never reused. Cheap (no file is read): rewriting or replacing a
    file changes its mtime; an exact copy with preserved times (``cp -p``) counts as the same data.
    """
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"The data directory {root} does not exist.")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    entries = []
    for file in files:
        stat = file.stat()
        entries.append(f"{file.relative_to(root) if file != root else file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:10]
