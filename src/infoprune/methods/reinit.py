"""The re-initialised baseline (MIPP paper §5): keep another method's architecture, forget
its weights.

The MIPP paper compares against "a re-initialized baseline" on untrained networks, where
SOSP-H does not apply: the pruned architecture is trained from scratch. Through the one
entry point this is ``prune(model, data, method="reinit", source="l1", ratio=0.9)``: the
``source`` method (looked up in the registry; any name ``available_methods()`` lists) decides
the masks with ``ratio`` and ``source_options``; or ``masks={layer: keep-mask}`` gives the
architecture directly. Every module's parameters are then re-drawn with PyTorch's default
initialisation (``reset_parameters``) under the context's seed, *as the pruned
architecture*: a Linear/Conv layer's fan-in is that of its kept inputs, so the physically
pruned model is initialised exactly as the small network built from scratch would be.
Training it is the caller's job, as for every method.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from infoprune.graph import NetworkStructure
from infoprune.methods import get_method, register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod


def kept_indices(structure: NetworkStructure, masks: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per module name: indices of its kept output units and of its kept input features.

    A collapsed layer keeps unit 0, as the surgery does. Linear consumers behind a flatten
    keep every feature of a kept unit's block.
    """
    outputs: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}
    for layer in structure.layers:
        if layer.name not in masks:
            continue
        keep = masks[layer.name].clone()
        if not keep.any():
            keep[0] = True
        outputs[layer.name] = keep.nonzero().flatten()
        for consumer in layer.consumers:
            module = consumer.module
            features = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
            block = features // layer.units
            inputs[consumer.name] = keep.repeat_interleave(block).nonzero().flatten()
    return outputs, inputs


def reset_as_pruned(module: nn.Module, out_index: torch.Tensor | None, in_index: torch.Tensor | None) -> None:
    """Re-draw ``module``'s parameters with its default initialisation, computed for the shape
    it has after pruning, and write them into the kept entries (the rest are dropped later).
    The values are drawn on the CPU, so a seed gives the same network on every device."""
    weight = module.weight
    rows = (out_index if out_index is not None else torch.arange(weight.shape[0])).to(weight.device)
    cols = (in_index if in_index is not None else torch.arange(weight.shape[1])).to(weight.device)
    small = copy.deepcopy(module).cpu()
    small.weight = nn.Parameter(torch.empty((rows.numel(), cols.numel(), *weight.shape[2:])))
    if module.bias is not None:
        small.bias = nn.Parameter(torch.empty(rows.numel()))
    small.reset_parameters()
    with torch.no_grad():
        weight[rows[:, None], cols[None, :]] = small.weight.to(weight)
        if module.bias is not None:
            module.bias[rows] = small.bias.to(module.bias)


@register
class Reinit(PruningMethod):
    """The architecture of ``source`` (or of explicit ``masks``) with freshly initialised weights."""

    name = "reinit"

    def __init__(
        self,
        source: str | None = None,
        ratio: float | None = None,
        source_options: dict[str, Any] | None = None,
        masks: dict[str, Any] | None = None,
    ) -> None:
        if (source is None) == (masks is None):
            raise ValueError(
                "reinit needs exactly one architecture: source='l1' (any registered method, with "
                "ratio=... and source_options={...}) or masks={layer name: keep-mask}."
            )
        if masks is not None and (ratio is not None or source_options):
            raise ValueError("reinit with explicit masks takes no ratio or source_options.")
        if source == self.name:
            raise ValueError("reinit cannot take its architecture from reinit; name another method as source.")
        self.source = source
        self.ratio = ratio
        self.source_options = dict(source_options or {})
        self._masks = None if masks is None else {name: torch.as_tensor(m, dtype=torch.bool) for name, m in masks.items()}
        self._source_method = None
        if source is not None:
            options = dict(self.source_options)
            if ratio is not None:
                options["ratio"] = ratio
            try:
                self._source_method = get_method(source)(**options)
            except TypeError as error:
                raise TypeError(f"Source method {source!r} rejects the options {options}: {error}") from error

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self._masks is not None:
            config["masks"] = {name: int(m.sum()) for name, m in self._masks.items()}
        return config

    def decide(self, context: PruningContext) -> MaskDecision:
        if self._source_method is not None:
            source = self._source_method.decide(context)
            masks, input_mask, details = source.masks, source.input_mask, {"source": source.details}
        else:
            masks, input_mask, details = self._masks, None, {}
            for name, mask in masks.items():
                if mask.shape != (context.structure.layer(name).units,):
                    raise ValueError(
                        f"The mask of {name!r} has shape {tuple(mask.shape)}; that layer has "
                        f"{context.structure.layer(name).units} units."
                    )
        outputs, inputs = kept_indices(context.structure, masks)
        model = copy.deepcopy(context.model)
        modules = dict(model.named_modules())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            for name, module in modules.items():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    reset_as_pruned(module, outputs.get(name), inputs.get(name))
                elif hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return MaskDecision(masks, input_mask=input_mask, details=details, model=model)
