"""Masks -> a physically smaller ``nn.Module``.

Removal is dependency-aware through torch-pruning: dropping a unit of a layer also drops the
matching channel of the BatchNorm after it and the matching input channels (or the matching
block of flattened features) of every consumer. The result computes exactly what the masked
original computes (:func:`infoprune.activations.masked_units`), which the tests check.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from infoprune.graph import NetworkStructure, build_dependency_graph, out_channel_pruning_fn


class InputMasked(nn.Module):
    """Wraps a model so that de-selected input features are zeroed before it runs.

    Used for feature selection (MIPP App. E.1): the wrapped model still accepts full-size
    inputs, so it is a drop-in replacement; ``mask`` is a buffer and is saved with it.
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.mask.reshape(x.shape[1:]))


def check_masks(structure: NetworkStructure, masks: dict[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless every mask names a prunable layer and has its width."""
    for name, mask in masks.items():
        layer = structure.layer(name)
        if mask.dtype != torch.bool or mask.shape != (layer.units,):
            raise ValueError(
                f"The mask of {name!r} must be a bool tensor of shape ({layer.units},), "
                f"got {mask.dtype} {tuple(mask.shape)}."
            )


def apply_masks(
    model: nn.Module,
    structure: NetworkStructure,
    masks: dict[str, torch.Tensor],
    example_input: torch.Tensor,
    input_mask: torch.Tensor | None = None,
) -> nn.Module:
    """Return a pruned deep copy of ``model`` with the False units removed.

    A layer whose mask is all False (a collapsed layer, as global baselines can produce)
    keeps one physical unit, and the weights its consumers read from it are zeroed: the
    consumers then receive nothing from the layer, as in the masked original, and the copy
    stays a valid module (zero-width convolutions are not). Those zeroed weights are frozen
    (``requires_grad=False``) so that re-training cannot grow them back and revive a layer
    the masks removed.
    """
    check_masks(structure, masks)
    pruned = copy.deepcopy(model)
    was_training = pruned.training
    pruned.eval()
    graph = build_dependency_graph(pruned, example_input)
    modules = dict(pruned.named_modules())
    collapsed = [name for name, mask in masks.items() if not mask.any()]
    for name, mask in masks.items():
        removed = (~mask).nonzero().flatten().tolist()
        if name in collapsed:
            removed = removed[1:]
        if not removed:
            continue
        module = modules[name]
        group = graph.get_pruning_group(module, out_channel_pruning_fn(module), removed)
        group.prune()
    with torch.no_grad():
        for name in collapsed:
            for consumer in structure.layer(name).consumers:
                # The consumer's inputs now come from the one remaining unit only.
                weight = modules[consumer.name].weight
                weight.zero_()
                weight.requires_grad_(False)
    pruned.train(was_training)
    if input_mask is not None:
        return InputMasked(pruned, input_mask)
    return pruned
