"""Least-squares compensation: each consumer reads, in place of the removed units, their best
linear prediction from the units it kept.

A unit whose output the kept units predict carries no information of its own, which is why an
information criterion (MIPP) removes it; but the consumer's weights still read it, so the pruned
network computes something else until it is re-trained. With ``x_removed ≈ [x_kept, 1] A``
fitted on the calibration inputs of the unpruned network
(:func:`infoprune.estimators.reconstruction.linear_substitution`), the consumer's weights on the
kept inputs become ``W_kept + W_removed Aᵀ`` and its bias ``b + W_removed a`` (a: the constant
row of A), so the pruned consumer computes ``W_kept x_kept + W_removed x̂_removed``. This is
folded into the unpruned model before surgery, which then drops the removed units' weights, and
before a method's own weight steps (ThiNet's rescaling then scales the compensated weights). The same
idea as ThiNet's least-squares rescaling (Eq. 6), with every kept unit allowed to stand in for
every removed one. Not in the MIPP, MINT or ITPruner papers; ours, measured in
docs/results/equal-flops/compensation.md.

For a Linear consumer the result equals the masked network with the substitution exactly. A
convolution is fitted per position across channels (one A for every pixel), which is exact
except where its kernel overlaps zero padding, there the constant is added over the padded
taps too. Consumers other than Linear and ungrouped convolutions (grouped and depthwise
convolutions, attention projections read per head) are left as surgery made them, with the
reason logged; so is the constant of a consumer without a bias (e.g. a conv before BatchNorm;
re-estimating the BatchNorm statistics recovers it).
"""

from __future__ import annotations

import torch
from torch import nn

from infoprune.estimators.reconstruction import linear_substitution
from infoprune.network.network import Network
from infoprune.padding import real_tokens
from infoprune.progress import logger

RIDGE = 1e-4
"""The ridge of the least-squares fit, relative to the mean second moment of the kept features."""


def unsupported(module: nn.Module) -> str | None:
    """Why a consumer cannot be compensated, or None."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return None if module.groups == 1 else f"a grouped convolution ({module.groups} groups)"
    return f"a {type(module).__name__}"


def feature_rows(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A consumer's input as rows of its features: ``(N·positions, C)`` for a convolution's maps
    (channels first), ``(N·tokens, F)`` for a Linear layer."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    return x.movedim(1, -1).reshape(-1, x.shape[1])


@torch.no_grad()
def input_moments(network: Network, names: list[str], inputs: torch.Tensor, device: torch.device, batch_size: int = 256
                  ) -> dict[str, torch.Tensor]:  # fmt: skip
    """``E[[x, 1][x, 1]ᵀ]`` of each named consumer's input over ``inputs`` (float64; rows as
    :func:`feature_rows`, padded tokens left out), in the unpruned network."""
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(names, 0)

    def hook(name: str, module: nn.Module):
        def accumulate(_module: nn.Module, args: tuple) -> None:
            rows = feature_rows(args[0], module).double()
            real = real_tokens(args[0], module)
            rows = rows if real is None else rows[real.flatten()]  # padded tokens are no samples
            rows = torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype, device=rows.device)], dim=1)
            sums[name] = sums.get(name, 0) + rows.T @ rows
            counts[name] += len(rows)
        return accumulate

    modules = {name: network.model.get_submodule(name) for name in names}
    handles = [module.register_forward_pre_hook(hook(name, module)) for name, module in modules.items()]
    try:
        for start in range(0, len(inputs), batch_size):
            network.model(inputs[start : start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: (sums[name] / counts[name]).cpu() for name in names}


@torch.no_grad()
def compensate(network: Network, masks: dict[str, torch.Tensor], inputs: torch.Tensor, device: torch.device) -> list[str]:
    """Fold each consumer's substitution of the units ``masks`` removes into its weights on the
    kept units and its bias, in the unpruned model (call before surgery, which then drops the
    removed units' weights); fitted on ``inputs``. Returns the consumers compensated; those it
    cannot compensate are logged and left as they are."""
    removed = network.removed_inputs(masks)
    modules = {name: network.model.get_submodule(name) for name in removed}
    reasons = {name: unsupported(module) for name, module in modules.items()}
    for name, reason in reasons.items():
        if reason is not None:
            logger.warning("compensation: %s is left as surgery makes it: %s", name, reason)
    names = [name for name, reason in reasons.items() if reason is None and not removed[name].all()]
    moments = input_moments(network, names, inputs, device)
    for name in names:
        module, gone = modules[name], removed[name].to(modules[name].weight.device)
        a = linear_substitution(moments[name], removed[name], RIDGE).to(module.weight)
        weight = module.weight
        spatial = "".join("hwd"[: weight.dim() - 2])  # a conv kernel's axes
        removed_weight = weight[:, gone]
        weight[:, ~gone] += torch.einsum(f"or{spatial},kr->ok{spatial}", removed_weight, a[:-1])
        constant = torch.einsum(f"or{spatial},r->o", removed_weight, a[-1])
        if module.bias is not None:
            module.bias += constant
        elif constant.abs().max() > 0:
            logger.info("compensation: %s has no bias; the removed units' mean is not put back", name)
    return names
