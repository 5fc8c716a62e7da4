"""MINT's connection-level result (the paper's): weight-shaped masks from a run's details,
the zeroed model and the weights pruned / CSR memory of Table I."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from infoprune.methods.mint.selection import pairs_of
from infoprune.metrics import csr_bytes


def _connection_view(weight: torch.Tensor, parent_units: int, child_name: str) -> torch.Tensor:
    """The child's weight as ``(child units, parent units, K)``: one block per connection.

    A conv child's kernel ``(out, in, kh, kw)`` gives K = kh·kw; a Linear child behind a
    flatten reads each parent unit as a contiguous block of K features (channel-major).
    """
    if weight.dim() < 2 or weight[0].numel() % parent_units:
        raise ValueError(
            f"The weight of {child_name!r} ({tuple(weight.shape)}) does not split into {parent_units} "
            "input blocks: concatenated or grouped inputs are not supported by MINT."
        )
    return weight.reshape(weight.shape[0], parent_units, -1)


def connection_masks(model: nn.Module, details: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weight-shaped bool masks (True = keep) of MINT's connection-level pruning.

    ``model`` is the *original* (unpruned) model and ``details`` the ``result.details`` of a
    MINT run on it (or :func:`rethreshold`'s). Keys are the child modules' names; each mask
    has the shape of that module's ``weight`` (use e.g.
    ``torch.nn.utils.prune.custom_from_mask`` to re-train with it).
    """
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for pair in pairs_of(details):
        if pair.kept is None:
            raise ValueError("These MINT details hold scores but no decision: pass them through rethreshold first.")
        if pair.child in masks:
            raise ValueError(f"{pair.child!r} reads several parents: concatenated inputs are not supported by MINT.")
        kept_units = pair.unit_mask()
        weight = modules[pair.child].weight
        blocks = _connection_view(weight, kept_units.shape[1], pair.child)
        if blocks.shape[0] != kept_units.shape[0]:
            raise ValueError(
                f"{pair.child!r} has {blocks.shape[0]} units but the MINT details list {kept_units.shape[0]}: "
                "pass the model that was pruned."
            )
        masks[pair.child] = kept_units[:, :, None].expand(blocks.shape).reshape(weight.shape).to(weight.device)
    return masks


@torch.no_grad()
def apply_connection_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the weights that ``masks`` drops set to zero."""
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for name, mask in masks.items():
        modules[name].weight.mul_(mask.to(modules[name].weight.dtype))
    return pruned


def connection_summary(model: nn.Module, details: dict[str, Any]) -> dict[str, Any]:
    """Weights pruned by the connection-level masks and CSR memory before/after (Table I)."""
    masks = connection_masks(model, details)
    total = sum(mask.numel() for mask in masks.values())
    pruned = sum(int((~mask).sum()) for mask in masks.values())
    return {
        "weights_total": total,
        "weights_pruned": pruned,
        "pruned_fraction": pruned / total,
        "pruned_fraction_by_layer": {name: int((~mask).sum()) / mask.numel() for name, mask in masks.items()},
        "csr_bytes_before": csr_bytes(model),
        "csr_bytes_after": csr_bytes(apply_connection_masks(model, masks)),
    }
