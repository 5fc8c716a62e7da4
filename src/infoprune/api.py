"""``infoprune.prune``: one entry point for every method, one result type."""

from __future__ import annotations

import copy
import inspect
import time
from typing import Any

import torch
from torch import nn

from infoprune import graph
from infoprune.collapse import emptied_layers, is_disconnected
from infoprune.data.base import calibration_tensors
from infoprune.methods import MaskDecision, PruningContext, get_method
from infoprune.metrics import count_flops, count_params
from infoprune.progress import progress_bar
from infoprune.result import LayerSummary, PruningResult
from infoprune.surgery import apply_masks, check_masks
from infoprune.validation import check_finite_model, check_labels, resolve_device


def _build_method(method: str, method_kwargs: dict[str, Any]):
    cls = get_method(method)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Method {method!r} does not take {unknown}; its parameters are: {accepted}.")
    return cls(**method_kwargs)


def _check_model_accepts(model: nn.Module, inputs: torch.Tensor) -> int | None:
    """Run the model on two samples; returns its number of outputs (classes) when it gives logits."""
    try:
        with torch.no_grad():
            output = model(inputs[:2])
    except Exception as error:  # any failure here means the shapes do not fit the model
        raise ValueError(
            f"The model rejects calibration inputs of shape {tuple(inputs.shape[1:])} (per sample): "
            f"{type(error).__name__}: {error}. Pass inputs shaped as the model expects."
        ) from error
    return output.shape[1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None


@torch.enable_grad()  # methods differentiate (SNIP, GraSP, SOSP, MIPP's predictors) even under no_grad
def prune(
    model: nn.Module,
    calibration_data,
    method: str = "mipp",
    *,
    calibration_samples: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress=progress_bar,
    **method_kwargs: Any,
) -> PruningResult:
    """Prune ``model`` structurally with ``method`` and return a :class:`PruningResult`.

    ``calibration_data``: a tensor of inputs, ``LabelledTensors``, an ``(inputs, labels)`` tuple,
    or a DataLoader yielding inputs or ``(inputs, labels)``; at most ``calibration_samples``
    samples are read (10 000 from an iterable without a length when it is None).
    ``method_kwargs`` go to the method's constructor (e.g. ``confidence=0.9`` for MIPP).
    The input model is not modified; ``result.model`` is a physically smaller copy on
    ``device`` (CUDA when present unless given).
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
    structure = graph.analyse(working, example)

    torch.manual_seed(seed)
    start = time.perf_counter()
    context = PruningContext(working, structure, inputs, labels, device, seed, progress)
    decision: MaskDecision = pruning_method.decide(context)
    seconds = time.perf_counter() - start
    masks = {name: mask.to(torch.bool).cpu() for name, mask in decision.masks.items()}
    check_masks(structure, masks)

    weights = decision.model if decision.model is not None else working
    pruned = apply_masks(weights, structure, masks, example, decision.input_mask)
    layers = {
        layer.name: LayerSummary(int(masks[layer.name].sum()) if layer.name in masks else layer.units, layer.units)
        for layer in structure.layers
    }
    return PruningResult(
        method=method,
        masks={layer.name: masks.get(layer.name, torch.ones(layer.units, dtype=torch.bool)) for layer in structure.layers},
        model=pruned,
        layers=layers,
        collapsed_layers=emptied_layers(masks),
        disconnected=is_disconnected(working, structure, masks, example, decision.input_mask, weights),
        input_mask=decision.input_mask,
        params_before=count_params(working),
        params_after=count_params(pruned),
        flops_before=count_flops(working, example),
        flops_after=count_flops(pruned, example),
        seconds=seconds,
        config=pruning_method.config(),
        details=decision.details,
    )
