"""Recording unit activations as the next layer sees them, and masking units in place.

A unit's activation is read at the *input of its consumer* (a forward pre-hook), i.e. after
the normalisation, nonlinearity and pooling that sit between the two layers, which is what
the downstream layer actually receives. A conv filter's map (or a flattened block of it) is
collapsed to one number per sample with one of the functions of MIPP App. E.2, Table 3.

Masking uses the same hooks: a pruned unit's channel is set to exactly zero at its
consumers' inputs, which is what physically removing the unit does to the rest of the net.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from infoprune.graph import NetworkStructure, PrunableLayer

CollapseName = Literal["l1", "l2", "mean", "signed_mean", "std"]


def collapse_spatial(maps: torch.Tensor, how: CollapseName = "l1") -> torch.Tensor:
    """Collapse ``(N, C, K)`` per-unit maps to ``(N, C)`` (MIPP App. E.2, Table 3).

    l1: Σ|O|; l2: sqrt(ΣO²); mean: mean |O|; signed_mean: mean O (MINT App. B, "the average
    activation across a filter's dimensions"); std: standard deviation of |O| over positions.
    A unit with a single value per sample (a neuron, K = 1) is returned as it is, sign included.
    """
    if maps.shape[2] == 1:
        return maps[:, :, 0]
    if how == "l1":
        return maps.abs().sum(dim=2)
    if how == "l2":
        return maps.pow(2).sum(dim=2).sqrt()
    if how == "mean":
        return maps.abs().mean(dim=2)
    if how == "signed_mean":
        return maps.mean(dim=2)
    if how == "std":
        return maps.abs().std(dim=2, unbiased=False)
    raise ValueError(f"Unknown collapse function {how!r}; choose one of 'l1', 'l2', 'mean', 'signed_mean', 'std'.")


def unit_maps(consumer_input: torch.Tensor, layer: PrunableLayer) -> torch.Tensor:
    """View a consumer's input as ``(N, units, K)``: one K-long map per unit of ``layer``.

    Conv consumers see ``(N, C, H, W)``; Linear consumers behind a flatten see ``(N, C·K)``
    where each unit owns a contiguous block of K features (channel-major flattening).
    """
    n = consumer_input.shape[0]
    if consumer_input.dim() == 4:
        channels = consumer_input.shape[1]
        if channels != layer.units:
            raise ValueError(
                f"Layer {layer.name!r} has {layer.units} units but its consumer receives {channels} "
                "channels: concatenated inputs are not supported."
            )
        return consumer_input.reshape(n, channels, -1)
    if consumer_input.dim() == 2:
        features = consumer_input.shape[1]
        if features % layer.units:
            raise ValueError(
                f"Layer {layer.name!r} has {layer.units} units but its Linear consumer receives "
                f"{features} features, not a multiple: concatenated inputs are not supported."
            )
        return consumer_input.reshape(n, layer.units, features // layer.units)
    raise ValueError(f"Unsupported activation shape {tuple(consumer_input.shape)} at the consumer of {layer.name!r}.")


def _check_finite(values: torch.Tensor, where: str) -> None:
    if not torch.isfinite(values).all():
        raise ValueError(
            f"Non-finite (NaN or inf) activations at {where}. Check the model's weights and the "
            "calibration inputs (are they normalised as in training?)."
        )


@torch.no_grad()
def record(
    model: nn.Module,
    structure: NetworkStructure,
    inputs: torch.Tensor,
    collapse: CollapseName = "l1",
    batch_size: int = 256,
    extra_outputs: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Run ``inputs`` through ``model`` and return per-unit activations, ``(N, units)`` each.

    Keys: every prunable layer's name; ``"__input__"`` (the flattened model input, for
    feature selection); and, for each module named in ``extra_outputs``, its raw output with
    conv maps collapsed the same way (used as regression targets, e.g. the logits).
    """
    collected: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def add_pre_hook(layer: PrunableLayer) -> None:
        def hook(_module: nn.Module, args: tuple) -> None:
            collected.setdefault(layer.name, []).append(collapse_spatial(unit_maps(args[0], layer), collapse))

        hooks.append(layer.consumers[0].module.register_forward_pre_hook(hook))

    def add_output_hook(name: str) -> None:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            out = collapse_spatial(output.flatten(2), collapse) if output.dim() == 4 else output.flatten(1)
            collected.setdefault(name, []).append(out)

        hooks.append(structure.modules[name].register_forward_hook(hook))

    for layer in structure.layers:
        add_pre_hook(layer)
    for name in extra_outputs:
        add_output_hook(name)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size].to(device)
            collected.setdefault("__input__", []).append(batch.flatten(1))
            model(batch)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    result = {name: torch.cat(parts).float().cpu() for name, parts in collected.items()}
    for name, values in result.items():
        _check_finite(values, "the model input" if name == "__input__" else f"the units of {name!r}")
    return result


@contextmanager
def masked_units(
    structure: NetworkStructure,
    masks: dict[str, torch.Tensor],
    input_mask: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> Iterator[None]:
    """Inside the block, units whose mask is False output exactly zero to their consumers.

    ``input_mask`` (over the flattened model input) needs ``model`` to hook its input.
    """
    hooks = []

    def make_hook(layer: PrunableLayer, keep: torch.Tensor) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            maps = unit_maps(x, layer) * keep.to(x.device, x.dtype)[None, :, None]
            return (maps.reshape(x.shape), *args[1:])

        return hook

    for layer in structure.layers:
        if layer.name in masks:
            for consumer in layer.consumers:
                hooks.append(consumer.module.register_forward_pre_hook(make_hook(layer, masks[layer.name])))
    if input_mask is not None:
        if model is None:
            raise ValueError("masked_units needs the model to apply an input mask.")

        def input_hook(_module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            return (x * input_mask.to(x.device, x.dtype).reshape(x.shape[1:]), *args[1:])

        hooks.append(model.register_forward_pre_hook(input_hook))
    try:
        yield
    finally:
        for handle in hooks:
            handle.remove()
