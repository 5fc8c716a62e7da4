"""MINT's per-pair scores: contiguous groups, samples per class and the conditioning of
ρ(i, j) (MINT §III-A/B, App. B; our ``conditioning="contribution"`` extension)."""

from __future__ import annotations

import typing

import torch
from torch import nn

from infoprune.network import Network
from infoprune.progress import logger
from infoprune.padding import without_padding
from infoprune.running import evaluating


def draw_per_class(labels: torch.Tensor | None, samples_per_class: int, seed: int) -> torch.Tensor:
    """Indices of up to ``samples_per_class`` distinct samples of every class present (App. B, m).

    A class with fewer samples gives all it has, with a warning on the ``infoprune`` logger
    (the paper's m is per class; on imbalanced data the small classes are simply smaller).
    """
    if labels is None:
        raise ValueError(
            "MINT draws its samples per class and needs labels: pass LabelledTensors or a DataLoader "
            "that yields (inputs, labels) as calibration data."
        )
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError(f"Labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}.")
    generator = torch.Generator().manual_seed(seed)
    chosen, short = [], {}
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()
        if members.numel() < samples_per_class:
            short[int(label)] = members.numel()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:samples_per_class]])
    if short:
        logger.warning(
            "MINT: samples_per_class=%d, but %d class(es) have fewer calibration samples and give all they have: %s",
            samples_per_class, len(short), ", ".join(f"class {label}: {count}" for label, count in short.items()),
        )
    return torch.cat(chosen)


Conditioning = typing.Literal["contribution", "others"]
"""What MINT conditions each pair's score on: see :class:`MINT`."""


def module_inputs(model: nn.Module, names: list[str], inputs: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """What each named module reads (its first input), for ``inputs``, in eval mode, on the CPU
    (padded token positions as zeros)."""
    modules = dict(model.named_modules())
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    device = next(model.parameters()).device
    with evaluating(model) as hooks:
        for name in names:
            hooks.append(modules[name].register_forward_pre_hook(
                lambda m, args, name=name: collected[name].append(without_padding(args[0], m).detach().cpu())))
        for start in range(0, inputs.shape[0], batch_size):
            model(inputs[start : start + batch_size].to(device))
    return {name: torch.cat(parts) for name, parts in collected.items()}


def other_parents_contribution(
    module: nn.Module, module_input: torch.Tensor, positions: torch.Tensor, parent_groups: list[slice]
) -> typing.Callable[[int], torch.Tensor]:
    """``given(j)``: the child's pre-activation without parent group j, W_z z + b (our extension).

    ``module`` is the child (Linear, or Conv2d with groups = 1), ``module_input`` what it read,
    and ``positions[c]`` its input indices that carry parent unit c (a channel; a Linear behind
    a flatten reads a block of features; :class:`infoprune.network.Consumer`). Conv outputs are
    averaged over H×W, and a Linear's over its other input axes (tokens, channels-last maps),
    so this is the other parents' part of the child's mean pre-activation, per output channel.
    Everything else the child reads (other groups of a concatenation) is in Z.
    """
    weight = module.weight.detach().cpu().float()
    bias = module.bias.detach().cpu().float() if module.bias is not None else 0.0
    if isinstance(module, nn.Linear):
        features = module_input.float().reshape(module_input.shape[0], -1, module.in_features)
        total = (features @ weight.T + bias).mean(1)

        def part(index: torch.Tensor) -> torch.Tensor:
            return (features[..., index] @ weight[:, index].T).mean(1)

    elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        maps = module_input.float()

        def convolve(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(x, w, None, module.stride, module.padding, module.dilation).mean((2, 3))

        total = convolve(maps, weight) + bias

        def part(index: torch.Tensor) -> torch.Tensor:
            return convolve(maps[:, index], weight[:, index])

    else:
        raise ValueError(
            f"conditioning='contribution' needs the child to be a Linear or an ungrouped, zero-padded Conv2d, "
            f"got {type(module).__name__}: use conditioning='others' (the paper's estimator) for this network."
        )
    positions = positions.cpu()
    return lambda j: total - part(positions[parent_groups[j]].flatten())


def child_channels(network: Network, child: str) -> torch.Tensor:
    """The child's output channel behind each of its recorded units, in unit order: its own
    channels for a raw output, its channel of each unit of the group it produces."""
    group = network.group_of_producer(child)
    if group is None:
        module = network.modules[child]
        return torch.arange(module.out_features if isinstance(module, nn.Linear) else module.out_channels)
    positions = next(p.positions for p in group.producers if p.name == child)
    if positions.shape[1] != 1:
        raise ValueError(
            f"conditioning='contribution' needs each unit of {child!r} to be one of its output channels, but the "
            f"group it produces ({group.name!r}) spans {positions.shape[1]} channels per unit (a grouped convolution's "
            "blocks): use conditioning='others' (the paper's estimator) for this network."
        )
    return positions[:, 0]


def independence_delta(samples: int) -> float:
    """δ = 2 / √n1 (n1 = samples // 3, the joint set): about three standard deviations of Î
    above 0 when child and parent are conditionally independent (Î's null spread is
    ≈ 0.7 / √n1 for the Friedman–Rafsky count, measured in ``bench/mint_power.py``)."""
    return 2.0 / (samples // 3) ** 0.5
