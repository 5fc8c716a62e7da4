"""Test helpers for the architecture families (:mod:`infoprune.models.families`)."""

from __future__ import annotations

import torch
from torch import nn


def assert_physical_model_is_the_masked_one(model: nn.Module, inputs: torch.Tensor, result, atol: float = 1e-5) -> None:
    """Surgery alone computes the masked model; the result's model is that plus its weight steps."""
    from infoprune.network import InputMasked, Network

    def with_input_mask(pruned: nn.Module) -> nn.Module:
        return pruned if result.input_mask is None else InputMasked(pruned, result.input_mask)

    network = Network(model, inputs[:2])
    with torch.no_grad():
        with network.masked(result.masks, result.input_mask):
            masked = model(inputs)
        surgery_only = network.apply_masks(result.masks)
        torch.testing.assert_close(with_input_mask(surgery_only)(inputs), masked, rtol=1e-4, atol=atol)
        for step in result.after_surgery:
            step.apply(surgery_only, network, result.masks)
        physical = result.model.cpu().eval()(inputs)
        torch.testing.assert_close(physical, with_input_mask(surgery_only)(inputs), rtol=1e-4, atol=atol)
