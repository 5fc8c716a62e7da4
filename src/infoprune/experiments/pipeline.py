"""One pruning run end to end: train (or reuse) → prune → re-train → measure.

Shared by ``infoprune prune`` and the sweeps, so that every method goes through exactly the
same training, calibration, surgery and evaluation.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import infoprune
from infoprune.characterisation import characterise_pair
from infoprune.data import DatasetSplits, LabelledTensors, load_dataset
from infoprune.data.base import data_fingerprint
from infoprune.experiments.record import Accuracy, RunRecord
from infoprune.io import atomic_write_bytes, export_onnx, require_onnx, set_aside
from infoprune.metrics import latency_profiles
from infoprune.models import MODELS, build_model
from infoprune.models.weights import load_weights
from infoprune.progress import logger
from infoprune.result import PruningResult
from infoprune.training import epoch_cost, evaluate, recalibrate_batchnorm, recipe_for, train
from infoprune.validation import check_count, resolve_device


@dataclass(frozen=True)
class Training:
    """Training, calibration and data settings of a run (the defaults of ``infoprune prune``
    and of a sweep's ``[training]`` table); checked when made."""

    train_epochs: int = 3
    retrain_epochs: int = 2
    calibration_samples: int = 2000
    train_samples: int | None = None  # a seeded subset of the training split (None: all of it)
    test_samples: int | None = None  # a seeded subset of the test split to evaluate on (None: all of it)
    device: str | None = None
    data_dir: str | None = None
    weights: str | None = None  # a checkpoint (.pth / .safetensors) to prune instead of training
    characterise: bool = False  # also record ECE and adversarial accuracy (MINT §IV-E)
    compensate: bool = False  # prune(..., compensate=True): re-fit the consumers of pruned units

    def __post_init__(self) -> None:
        for name, minimum in (("train_epochs", 0), ("retrain_epochs", 0), ("calibration_samples", 1)):
            check_count(name, getattr(self, name), minimum)
        check_count("train_samples", self.train_samples, 1, optional=True)
        check_count("test_samples", self.test_samples, 1, optional=True)
        for name in ("device", "data_dir", "weights"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}.")
        for name in ("characterise", "compensate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        resolve_device(self.device)


@dataclass(frozen=True)
class RunConfig(Training):
    """What to prune, how, and how much to train before and after (:class:`Training`)."""

    model: str = "lenet5"
    dataset: str = "mnist"
    method: str = "mipp"
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    pretrained: bool = True  # False: prune at initialisation (no training before pruning)
    cache_dir: str | None = None  # where trained base models are cached

    def __post_init__(self) -> None:
        """Counts, device, data folder and recipes are checked here, before any work starts."""
        super().__post_init__()
        check_count("seed", self.seed, 0)
        if self.data_dir is not None and not Path(self.data_dir).expanduser().exists():
            raise FileNotFoundError(
                f"The data directory {self.data_dir} does not exist; pass the folder (or file) holding the "
                f"{self.dataset!r} data, or leave --data-dir out to use the default location."
            )
        if self.pretrained and self.train_epochs > 0:
            recipe_for(self.dataset, retrain=False, epochs=self.train_epochs)
        if self.retrain_epochs > 0:
            recipe_for(self.dataset, retrain=True, epochs=self.retrain_epochs)


def read_summary(path: Path) -> RunRecord:
    """The record in the ``summary.json`` of an ``infoprune prune`` folder, its keys that
    ``export`` and ``characterise`` read checked; a ValueError naming the file and what is wrong
    with it otherwise."""
    redo = "re-run `infoprune prune` into that folder to write it again"
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}; truncated?): {redo}.") from None
    model = record.get("config", {}).get("model") if isinstance(record, dict) and isinstance(record.get("config"), dict) else None
    missing = [key for key in ("input_shape", "num_classes") if not isinstance(record, dict) or key not in record]
    if model is None:
        missing.insert(0, "config.model")
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}, which export and characterise need: {redo}.")
    shape, classes = record["input_shape"], record["num_classes"]
    if not (isinstance(shape, list) and shape and all(isinstance(n, int) and n > 0 for n in shape)):
        raise ValueError(f"{path} holds input_shape {shape!r}, not a list of positive sizes: {redo}.")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"{path} holds num_classes {classes!r}, not a positive integer: {redo}.")
    if model not in MODELS:
        raise ValueError(f"{path} names the model {model!r}, which is not registered here; known: {', '.join(sorted(MODELS))}.")
    try:
        return RunRecord.from_json(record)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}: {redo}.") from None


def architecture(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A fresh registered model ``name`` for data of ``in_channels`` channels and ``num_classes`` classes."""
    kwargs = {"in_channels": in_channels} if in_channels != MODELS[name].input_shape[0] else {}
    return build_model(name, num_classes=num_classes, **kwargs)


def base_model(config: RunConfig, data: DatasetSplits, device: torch.device) -> nn.Module:
    """The model to prune: ``config.weights`` loaded (trained state), or trained with the data
    set's recipe (cached by model, data, recipe, seed; data read from ``data_dir`` adds its
    :func:`data_fingerprint` to the cache key).

    With a cache folder, training also checkpoints every epoch next to the cache entry, so an
    interrupted sweep resumes a long training (CIFAR) where it stopped.
    """
    torch.manual_seed(config.seed)
    model = architecture(config.model, data.num_classes, data.train.inputs.shape[1]).to(device)
    if config.weights is not None and config.pretrained:
        return load_weights(model, config.weights).to(device).eval()
    if not config.pretrained or config.train_epochs == 0:
        return model
    recipe = recipe_for(config.dataset, retrain=False, epochs=config.train_epochs)
    cache = checkpoint = None
    if config.cache_dir is not None:
        subset = "" if config.train_samples is None else f"-n{config.train_samples}"
        fingerprint = data_fingerprint(config.data_dir)
        source = "" if fingerprint is None else f"-data{fingerprint}"
        key = f"{config.model}-{config.dataset}{source}{subset}-{recipe.epochs}ep-lr{recipe.lr:g}-seed{config.seed}.pt"
        cache = Path(config.cache_dir) / key
        if cache.is_file() and _load_cached(model, cache, device):
            logger.info("reused trained base model %s", cache)
            return model.eval()
        checkpoint = cache.with_suffix(".partial.ckpt")
    train(
        model, data.train, recipe, device, seed=config.seed, transform=data.train_transform, desc="train", checkpoint=checkpoint
    )
    if cache is not None:
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        atomic_write_bytes(cache, lambda f: torch.save(state, f))
        checkpoint.unlink(missing_ok=True)
    return model.eval()


def _load_cached(model: nn.Module, cache: Path, device: torch.device) -> bool:
    """Load the cached base model at ``cache`` into ``model``; False (with a warning, the file
    set aside as ``CACHE.corrupt``) when it cannot be read or does not fit, so it is rebuilt."""
    try:
        model.load_state_dict(torch.load(cache, map_location=device, weights_only=True))
    except Exception as error:  # a truncated file, another format or other shapes: rebuild it
        set_aside(cache, "cached base model", "cannot be used", error, "training it again")
        return False
    return True


def run_device(config: RunConfig) -> torch.device:
    """The device a run uses (CUDA when present unless the config names one)."""
    return resolve_device(config.device)


def training_split(config: RunConfig, data: DatasetSplits) -> LabelledTensors:
    """The training split a run uses: all of it, or the seeded subset of ``config.train_samples``."""
    return data.train if config.train_samples is None else data.train.subset(config.train_samples, seed=config.seed)


def test_split(config: RunConfig, data: DatasetSplits) -> LabelledTensors:
    """The test split a run evaluates on: all of it, or the seeded subset of ``config.test_samples``."""
    return data.test if config.test_samples is None else data.test.subset(config.test_samples, seed=config.seed)


CHANCE_MARGIN = 0.01
"""Re-trained accuracy within this of the majority-class rate counts as collapse (at chance)."""


def majority_class_rate(data: LabelledTensors) -> float:
    """Accuracy of always predicting the most frequent class: chance level on ``data``."""
    return torch.bincount(data.labels).max().item() / len(data)


def measured_latency(models: dict[str, nn.Module], example_input: torch.Tensor) -> dict[str, Any]:
    """:func:`infoprune.metrics.latency_profiles` of the models (e.g. original and pruned, timed
    in turn so that their ratio holds on a busy machine), with ONNX Runtime when the ``onnx``
    extra is installed."""
    try:
        require_onnx()
    except ImportError:
        return latency_profiles(models, example_input)
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: export_onnx(model, example_input, Path(folder) / f"{name}.onnx").path for name, model in models.items()}
        return latency_profiles(models, example_input, onnx_paths=paths)


def run(
    config: RunConfig,
    data: DatasetSplits | None = None,
    on_stage: Callable[[str], None] | None = None,
    allow_collapse: bool = True,
) -> tuple[PruningResult, RunRecord]:
    """Train, prune, re-train and evaluate; returns the result and its :class:`RunRecord`.

    ``on_stage(name)`` is told when each stage starts (for progress displays). The record holds
    the test accuracy in four regimes: straight after pruning (``accuracy_pruned``, one-shot),
    after re-estimating BatchNorm statistics on the calibration inputs only
    (``accuracy_bn_recalibrated``, None without BatchNorm), after each re-training epoch
    (``accuracy_by_epoch``; the first is the 1-epoch regime, as the recipes' first epoch runs at
    the same learning rate for any epoch count) and at the end (``accuracy_retrained``). The
    pruning step's cost is ``prune_seconds`` (wall) and ``prune_cpu_seconds`` and, with
    re-training, ``prune_epochs``: its CPU seconds over the CPU seconds of one training epoch of
    the unpruned model (``epoch_cpu_seconds``, :func:`infoprune.training.epoch_cost`), a ratio
    that holds on a loaded machine. Its
    ``latency`` holds the measured latency of the original and the pruned model
    (:func:`measured_latency`); its ``collapsed`` is True when the network lost its
    input-output path (``result.collapsed``) or re-trained no better than chance (MIPP Fig. 3
    counts both as collapse). ``allow_collapse`` goes to :func:`infoprune.prune`: True (the
    default) for research sweeps, which count collapses; ``infoprune prune`` passes its
    ``--allow-collapse`` flag, so a budget that kills the network is refused there.
    """
    stage = on_stage or (lambda name: None)
    device = run_device(config)
    data = data if data is not None else load_dataset(config.dataset, config.data_dir, seed=config.seed)
    train_split, test = training_split(config, data), test_split(config, data)
    train_eval = train_split.subset(min(10_000, len(test)), seed=config.seed)
    stage("train" if config.pretrained else "initialise")
    model = base_model(config, replace(data, train=train_split), device)
    accuracy_original = Accuracy(train=evaluate(model, train_eval), test=evaluate(model, test))

    stage("prune")
    calibration = train_split.subset(config.calibration_samples, seed=config.seed + 1)
    start, start_cpu = time.perf_counter(), time.process_time()
    result = infoprune.prune(
        model, calibration, config.method, device=device, seed=config.seed, allow_collapse=allow_collapse,
        compensate=config.compensate, **config.method_params,
    )
    prune_seconds, prune_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    pruned = result.model
    accuracy_pruned = Accuracy(train=evaluate(pruned, train_eval), test=evaluate(pruned, test))
    accuracy_bn_recalibrated = bn_recalibrated_accuracy(pruned, calibration.inputs, test)
    by_epoch: list[float] = []
    epoch = None
    if config.retrain_epochs > 0:
        stage("re-train")
        recipe = recipe_for(config.dataset, retrain=True, epochs=config.retrain_epochs)
        epoch = epoch_cost(model, train_split, recipe, device)
        train(
            pruned, train_split, recipe, device, seed=config.seed, transform=data.train_transform, desc="re-train",
            on_epoch=lambda _: by_epoch.append(evaluate(pruned, test)),
        )  # fmt: skip
    accuracy_retrained = Accuracy(train=evaluate(pruned, train_eval), test=evaluate(pruned, test))
    stage("latency")
    latency = measured_latency({"original": model, "pruned": pruned}, calibration.inputs[:2])
    chance = majority_class_rate(test)
    characterisation = None
    if config.characterise:
        stage("characterise")
        characterisation = characterise_pair(model, pruned, data, seed=config.seed)
    record = RunRecord(
        config=asdict(config), device=str(device), num_classes=data.num_classes, input_shape=list(data.train.inputs.shape[1:]),
        accuracy_original=accuracy_original, accuracy_pruned=accuracy_pruned, accuracy_retrained=accuracy_retrained,
        accuracy_bn_recalibrated=accuracy_bn_recalibrated, accuracy_by_epoch=by_epoch,
        prune_seconds=prune_seconds, prune_cpu_seconds=prune_cpu_seconds,
        epoch_seconds=None if epoch is None else epoch.wall_seconds,
        epoch_cpu_seconds=None if epoch is None else epoch.cpu_seconds,
        prune_epochs=None if epoch is None else prune_cpu_seconds / epoch.cpu_seconds,
        latency=latency, pruning=result.summary(), chance_accuracy=chance,
        collapsed=result.collapsed or accuracy_retrained.test <= chance + CHANCE_MARGIN, characterisation=characterisation,
    )  # fmt: skip
    return result, record


def bn_recalibrated_accuracy(pruned: nn.Module, inputs: torch.Tensor, test: LabelledTensors) -> Accuracy | None:
    """Test accuracy of a copy of ``pruned`` whose BatchNorm statistics were re-estimated on
    ``inputs`` (:func:`recalibrate_batchnorm`), the "one-shot + BN" regime; None without BatchNorm."""
    recalibrated = deepcopy(pruned)
    if not recalibrate_batchnorm(recalibrated, inputs):
        return None
    return Accuracy(test=evaluate(recalibrated, test))
