"""Checks of user input at every boundary (API, CLI, sweep config), with messages that name
the bad value and the fix.

One helper per kind of value, so that ``prune(calibration_samples=...)``, ``--threads``,
``--train-epochs`` and a sweep's ``[training]`` table reject the same inputs with the same
words: counts (:func:`check_count`), devices (:func:`resolve_device`), finite tensors
(:func:`check_finite`) and classification labels (:func:`check_labels`).
"""

from __future__ import annotations

import argparse
import math
import numbers
import operator
from collections.abc import Callable

import torch
from torch import nn

from infoprune.progress import logger


def check_count(name: str, value: object, minimum: int = 0, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` ≥ ``minimum`` (None passes when ``optional``); a ValueError otherwise.

    Booleans, floats (even ``2.0``) and strings are refused: a count is never silently rounded.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or isinstance(value, float):
        number = None
    else:
        try:
            number = operator.index(value)  # int, numpy integers, 0-d integer tensors
        except TypeError:
            number = None
    if number is None or number < minimum:
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer ≥ {minimum}{none}, got {value!r}.")
    return number


def check_positive_number(name: str, value: object) -> float:
    """``value`` as a finite ``float`` > 0; a ValueError naming ``name`` otherwise.

    Strings (``"0.01"``), booleans, NaN and infinities are refused rather than converted.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r} ({type(value).__name__}); pass e.g. {name}=1e-3.")
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return number


def check_seed(seed: object) -> int:
    """The random seed: an integer ≥ 0 (booleans and floats such as ``1.5`` are refused)."""
    return check_count("seed", seed, 0)


def ignore_entries(ignore: object) -> tuple:
    """``ignore=`` as a tuple of layer names, modules and module types.

    A single name (``ignore="10"``), module or type (``ignore=nn.Conv2d``) means that one entry:
    a name is never read character by character. Anything else must be an iterable of them.
    """
    if ignore is None:
        return ()
    if isinstance(ignore, (str, type, nn.Module)):
        return (ignore,)
    try:
        entries = tuple(ignore)
    except TypeError:
        raise TypeError(
            f"ignore= must be a layer name, a module, a module type or a list of them, got {type(ignore).__name__} {ignore!r}."
        ) from None
    for entry in entries:
        if not isinstance(entry, (str, type, nn.Module)):
            raise TypeError(
                f"ignore= holds {entry!r} ({type(entry).__name__}); pass layer names (str, e.g. 'features.0'), "
                "the modules themselves or module types (e.g. nn.Conv2d)."
            )
    return entries


def count_argument(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for a count ≥ ``minimum`` (same rule and message as :func:`check_count`)."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {number}")
        return number

    return parse


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The torch device for ``device`` (None: CUDA when present, else the CPU).

    Unknown names (``"gpu"``) and CUDA asked for where there is none are refused here, before
    any work starts, instead of failing inside torch later.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"Unknown device {device!r}: use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it unset "
            "to use CUDA when present."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"Device {device!r} was asked for, but CUDA is not available here (torch {torch.__version__}); "
                "use device 'cpu', or leave it unset to use CUDA when present."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r} was asked for, but MPS is not available here; use 'cpu'.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Device {device!r} is not supported: use 'cpu', 'cuda' (or 'cuda:N') or 'mps'.")
    return resolved


def check_finite(values: torch.Tensor, what: str) -> None:
    """A ValueError when ``values`` (one sample per row) hold NaN or inf, saying how many samples do."""
    if values.is_floating_point() and not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values.reshape(values.shape[0], -1))).any(dim=1).sum())
        raise ValueError(
            f"Non-finite values (NaN or inf) in {what}: {bad} of {values.shape[0]} samples. "
            "Remove or impute those samples (and check the inputs are normalised as in training)."
        )


def check_finite_model(model: nn.Module) -> None:
    """A ValueError naming the first parameter or buffer of ``model`` that holds NaN or inf."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"The model's {name!r} holds NaN or inf values, so every score computed from it would be "
                "meaningless; pass a model with finite weights (did its training diverge?)."
            )


def check_labels(labels: torch.Tensor, classes: int | None, method: str) -> None:
    """Calibration labels must be 1-D integer class indices in ``[0, classes)``.

    The methods that read labels use them as classification targets (the loss of SNIP, GraSP,
    SOSP) or to draw samples per class (MINT); float, bool or out-of-range labels would either
    crash inside torch or give silently wrong scores. Labels given to a method that ignores
    them are checked all the same: they are the calibration set's classes.
    """
    use = "the methods that read labels take them as classification targets or draw samples per class"
    if labels.dim() > 1 and not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
        raise ValueError(
            f"The calibration labels given to method {method!r} have shape {tuple(labels.shape)}: per-position "
            f"(dense, e.g. segmentation) labels are not supported; {use}, one class per sample. Pass the inputs "
            "alone and use a method that needs no labels (e.g. 'l1', 'mipp')."
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex() or labels.dim() != 1:
        raise ValueError(
            f"The calibration labels given to method {method!r} are a {labels.dtype} tensor of shape "
            f"{tuple(labels.shape)}; labels must be 1-D integer class indices ({use}). Pass labels.long() "
            "(class indices, not one-hot), or the inputs alone for a method that needs no labels."
        )
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (classes is not None and high >= classes):
        limit = f"[0, {classes}) for the model's {classes} outputs" if classes is not None else "[0, ∞)"
        raise ValueError(
            f"The calibration labels given to method {method!r} range over [{low}, {high}]; class indices "
            f"must lie in {limit} ({use})."
        )


def check_prunable_model(model: object) -> nn.Module:
    """The module to prune: ``model`` itself, or the ``.module`` of a ``DataParallel`` /
    ``DistributedDataParallel`` wrapper. Refuses (ValueError, naming the fix) layers whose
    weights are computed from other tensors, which structured surgery cannot shrink consistently:
    ``torch.nn.utils.parametrize`` parametrizations (weight/spectral norm, orthogonal), the
    legacy ``weight_norm``/``spectral_norm`` hooks and ``torch.nn.utils.prune`` masks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        logger.info("pruning the %s's .module; result.model is not wrapped", type(model).__name__)
        model = model.module
    from torch.nn.utils import parametrize
    from torch.nn.utils import prune as torch_prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    for name, module in model.named_modules():
        where = f"layer {name or '(root)'!r}"
        if parametrize.is_parametrized(module):
            tensors = sorted(module.parametrizations.keys())
            raise ValueError(
                f"{where} has parametrized tensors {tensors} (torch.nn.utils.parametrize, e.g. weight_norm or "
                "spectral_norm), which infoprune cannot shrink consistently. Remove them first: "
                f"torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule({name!r}), {tensors[0]!r}) "
                "(this keeps the current weights)."
            )
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                fix = f"torch.nn.utils.remove_weight_norm(model.get_submodule({name!r}))"
            elif isinstance(hook, SpectralNorm):
                fix = f"torch.nn.utils.remove_spectral_norm(model.get_submodule({name!r}))"
            elif isinstance(hook, torch_prune.BasePruningMethod):
                fix = f"torch.nn.utils.prune.remove(model.get_submodule({name!r}), {getattr(hook, '_tensor_name', 'weight')!r})"
            else:
                continue
            raise ValueError(
                f"{where} computes its weights in a hook ({type(hook).__name__}), which infoprune cannot shrink "
                f"consistently. Make the weights plain parameters first: {fix} (this keeps the current weights)."
            )
    return model
