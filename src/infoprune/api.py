"""``infoprune.prune``: one entry point for every method, one result type."""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from infoprune.data.base import calibration_tensors
from infoprune.methods import MaskDecision, PruningContext, PruningMethod, get_method
from infoprune.metrics import count_flops, count_params
from infoprune.network import InputMasked, Network, emptied_groups
from infoprune.running import evaluating, primary_output
from infoprune.progress import progress_bar
from infoprune.result import LayerSummary, PruningResult
from infoprune.validation import check_finite_model, check_labels, resolve_device


def _build_method(method: str | PruningMethod, method_kwargs: dict[str, Any]) -> PruningMethod:
    """The method object: ``method`` itself when configured already, else built from its name."""
    if isinstance(method, PruningMethod):
        if method_kwargs:
            raise TypeError(
                f"prune() got a configured {type(method).__name__} and method settings {sorted(method_kwargs)}; "
                f"set them on the object ({type(method).__name__}({', '.join(f'{k}=...' for k in sorted(method_kwargs))})) "
                "or pass the method by name."
            )
        return method
    cls = get_method(method)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Method {method!r} does not take {unknown}; its parameters are: {accepted}.")
    return cls(**method_kwargs)


def _check_model_accepts(model: nn.Module, inputs: torch.Tensor) -> int | None:
    """Run the model on two samples; returns its number of outputs (classes) when it gives logits."""
    try:
        with evaluating(model):
            output = primary_output(model(inputs[:2]))
    except Exception as error:  # any failure here means the shapes do not fit the model
        raise ValueError(
            f"The model rejects calibration inputs of shape {tuple(inputs.shape[1:])} (per sample): "
            f"{type(error).__name__}: {error}. Pass inputs shaped as the model expects."
        ) from error
    return output.shape[1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None


def prune(
    model: nn.Module,
    calibration_data,
    method: str | PruningMethod = "mipp",
    *,
    calibration_samples: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress=progress_bar,
    ignore: Iterable[str | type] = (),
    **method_kwargs: Any,
) -> PruningResult:
    """Prune ``model`` structurally with ``method`` and return a :class:`PruningResult`.

    ``calibration_data``: a tensor of inputs, ``LabelledTensors``, an ``(inputs, labels)`` tuple,
    or a DataLoader yielding inputs or ``(inputs, labels)``; at most ``calibration_samples``
    samples are read (10 000 from an iterable without a length when it is None).
    ``method``: a method name with its settings as ``method_kwargs`` (e.g. ``"mipp",
    confidence=0.9``), or a configured method object (``MIPP(flops=0.5)``) and no ``method_kwargs``.
    ``ignore``: layer names (or modules holding them) and module types whose channels stay
    whole, as Torch-Pruning's ``ignored_layers``; the output layer is always left whole.
    ``progress``: the progress-bar factory (None: no bars). The input model is not modified;
    ``result.model`` is a physically smaller copy on ``device`` (CUDA when present unless given).
    """
    pruning_method = _build_method(method, method_kwargs)
    inputs, labels = calibration_tensors(calibration_data, calibration_samples)
    if inputs.shape[0] == 0:
        raise ValueError("The calibration data is empty; pass at least a few hundred samples.")
    device = resolve_device(device)
    check_finite_model(model)
    working = copy.deepcopy(model).to(device).eval()
    example = inputs[:2].to(device)
    classes = _check_model_accepts(working, example)
    if labels is not None:
        check_labels(labels, classes, method)
    network = Network(working, example, ignore)

    torch.manual_seed(seed)
    start = time.perf_counter()
    context = PruningContext(working, network, inputs, labels, device, seed, progress)
    with torch.enable_grad():  # gradient-based methods work when called inside torch.no_grad()
        decision: MaskDecision = pruning_method.decide(context)
    seconds = time.perf_counter() - start
    masks = {name: mask.to(torch.bool).cpu() for name, mask in decision.masks.items()}
    network.check_masks(masks)

    disconnected = network.is_disconnected(masks, decision.input_mask)
    params_before, flops_before = count_params(working), count_flops(working, example)
    pruned = network.apply_masks(masks, inplace=True)  # the network describes the unpruned model no more
    for step in decision.after_surgery:
        step.apply(pruned, network, masks)
    if decision.input_mask is not None:
        pruned = InputMasked(pruned, decision.input_mask)
    full = network.full_masks(masks)
    return PruningResult(
        method=pruning_method.name,
        masks=full,
        model=pruned,
        layers={group.name: LayerSummary(int(full[group.name].sum()), group.units) for group in network.groups},
        collapsed_layers=emptied_groups(masks),
        disconnected=disconnected,
        input_mask=decision.input_mask,
        params_before=params_before,
        params_after=count_params(pruned),
        flops_before=flops_before,
        flops_after=count_flops(pruned, example),
        seconds=seconds,
        config=pruning_method.config(),
        details=decision.details,
        after_surgery=tuple(decision.after_surgery),
    )
