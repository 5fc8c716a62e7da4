"""Masks -> a physically smaller ``nn.Module``.

Removal goes through torch-pruning's pruning functions, member by member of each group:
dropping a unit drops its channel from every producer, the BatchNorms and other per-channel
parameters after them and the matching input positions (channels, blocks of flattened
features, slices of a concatenation) of every consumer. All indices are those of the
unpruned model, collected per member over all groups and removed in one call, so groups that
share a module (a concatenation read by one conv) cannot shift each other's indices. The
result computes exactly what the masked original computes (``Network.masked``), which the
tests check for every architecture family.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from infoprune.network.groups import Consumer, Group, Member


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


def removed_units(mask: torch.Tensor) -> torch.Tensor:
    """Units surgery removes: the False ones, except that an emptied group keeps unit 0
    (zero-width convolutions are not valid modules; its consumers' weights are zeroed)."""
    removed = (~mask).nonzero().flatten()
    return removed[1:] if not mask.any() else removed


def renumbered_positions(groups: Sequence[Group], consumer: Consumer, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``consumer.positions`` renumbered as in the pruned model (−1 where surgery removes them)."""
    keep = torch.ones(consumer.features, dtype=torch.bool)
    for group in groups:
        if group.name in masks:
            for other in group.consumers:
                if other.name == consumer.name:
                    keep[other.positions[removed_units(masks[group.name])].flatten()] = False
    renumbered = torch.cumsum(keep, 0) - 1
    return torch.where(keep[consumer.positions], renumbered[consumer.positions], -1)


def _zero_inputs(module: nn.Module, positions: torch.Tensor) -> None:
    """Zero a consumer's weights that read the input ``positions``; freeze them if that
    leaves the whole weight zero, so re-training cannot revive an emptied group."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        weight[:, positions] = 0
    else:
        per_group = weight.shape[1]
        rows = weight.shape[0] // module.groups
        for p in positions.tolist():
            g, column = divmod(p, per_group)
            weight[g * rows : (g + 1) * rows, column] = 0
    if not weight.any():
        weight.requires_grad_(False)


def _set_parameter(model: nn.Module, name: str, value: nn.Parameter) -> None:
    owner, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, attribute, value)


def _prune_member(model: nn.Module, member: Member, indices: list[int]) -> None:
    """Call torch-pruning's function for ``member`` on its counterpart in ``model``."""
    if isinstance(member.module, nn.Parameter):
        member.handler.__self__.pruning_dim = member.dim
        _set_parameter(model, member.name, member.handler(model.get_parameter(member.name), indices))
    else:
        member.handler(model.get_submodule(member.name), indices)


@torch.no_grad()
def apply_masks(
    model: nn.Module,
    groups: Sequence[Group],
    masks: Mapping[str, torch.Tensor],
    input_mask: torch.Tensor | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with the False units of every group removed.

    ``model`` must have the architecture ``groups`` was found on (the same module names).
    A group whose mask is all False keeps one physical unit whose consumer weights are zeroed
    (and frozen where that zeroes a whole weight), so the consumers receive nothing from it,
    as in the masked original.
    """
    pruned = model if inplace else copy.deepcopy(model)
    removals: dict[tuple[str, object], tuple[Member, set[int]]] = {}
    for group in groups:
        mask = masks.get(group.name)
        if mask is None or mask.all():
            continue
        units = removed_units(mask)
        for member in group.members:
            key = (member.name, member.handler)
            removals.setdefault(key, (member, set()))[1].update(member.positions[units].flatten().tolist())
    for member, indices in removals.values():
        if indices:
            _prune_member(pruned, member, sorted(indices))
    for group in groups:  # attention modules: their head counts and sizes as the projections now are
        mask = masks.get(group.name)
        if group.heads is not None and mask is not None and not mask.all():
            kept = group.units - len(removed_units(mask))
            for module in group.heads.modules:
                group.heads.adapter.resize(pruned.get_submodule(module), group.heads.layout, kept)
    for group in groups:
        if group.name in masks and not masks[group.name].any():
            for consumer in group.consumers:
                kept = renumbered_positions(groups, consumer, masks)[0]
                _zero_inputs(pruned.get_submodule(consumer.name), kept)
    if input_mask is not None:
        return InputMasked(pruned, input_mask)
    return pruned
