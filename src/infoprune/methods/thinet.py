"""ThiNet (Luo et al. 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression", §3): prune the units of layer l that layer l+1 can best do without.

For each prunable layer in forward order, layer l+1 (each consumer) is run on the
calibration set and, at ``locations_per_sample`` random (output unit, position) pairs per
sample, the contribution of every input channel to its output is recorded (§3.2). Channels
are removed greedily so that the sum of the removed contributions stays smallest (Alg. 1),
the same fraction ``ratio`` of every layer (ThiNet cannot set layer-wise ratios; the MIPP
paper compares it with a uniform ratio, §5). With ``rescale`` the kept input channels of
the consumer are scaled by the least-squares factors of Eq. 6, so the pruned layer
reconstructs the original output as well as it can; later layers are then selected on the
already pruned and rescaled network, as ThiNet proceeds layer by layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from infoprune.activations import masked_units, unit_maps
from infoprune.estimators.ranking import units_to_remove
from infoprune.estimators.reconstruction import greedy_removal, least_squares_scales, relative_error
from infoprune.graph import PrunableLayer
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_fraction, check_positive_int


def conv_contributions(
    conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor, locations: int, generator: torch.Generator
) -> torch.Tensor:
    """``(N·locations, C)``: each input channel's share of ``conv``'s output (bias excluded)
    at random (output channel, position) pairs, ``locations`` per sample."""
    if conv.groups != 1 or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(
            "ThiNet supports consumers that are ordinary convolutions (groups=1, numeric zero padding); "
            f"got groups={conv.groups}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}."
        )
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    n, _, height, width = x.shape
    rows = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    cols = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    count = n * locations
    sample = torch.arange(n).repeat_interleave(locations).to(x.device)
    out = torch.randint(weight.shape[0], (count,), generator=generator).to(x.device)
    row = torch.randint(rows, (count,), generator=generator).to(x.device)
    col = torch.randint(cols, (count,), generator=generator).to(x.device)
    padded = F.pad(x, (pw, pw, ph, ph))
    total = torch.zeros(count, x.shape[1], dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            total += padded[sample, :, row * sh + i * dh, col * sw + j * dw] * weight[out, :, i, j]
    return total


def linear_contributions(
    layer: PrunableLayer, weight: torch.Tensor, x: torch.Tensor, locations: int, generator: torch.Generator
) -> torch.Tensor:
    """``(N·locations, units)``: each unit's share (its block of flattened features) of a Linear
    consumer's output at random output neurons, ``locations`` per sample."""
    maps = unit_maps(x, layer)
    n = maps.shape[0]
    sample = torch.arange(n).repeat_interleave(locations).to(x.device)
    out = torch.randint(weight.shape[0], (n * locations,), generator=generator).to(x.device)
    return (maps[sample] * weight.reshape(weight.shape[0], layer.units, -1)[out]).sum(dim=2)


def scale_input_units(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """A consumer's weight with input unit c (channel, or block of flattened features) times ``scales[c]``."""
    shape = weight.shape
    scaled = weight.reshape(shape[0], scales.numel(), -1) * scales.to(weight)[None, :, None]
    return scaled.reshape(shape)


@register
@dataclass
class ThiNet(PruningMethod):
    """Greedy next-layer reconstruction, the same ``ratio`` in every layer, optional rescaling.

    ``ratio``: fraction of each layer's units to remove, in [0, 1) (required);
    ``locations_per_sample``: sampled (output unit, position) pairs per calibration sample
    (10 in the paper); ``rescale``: apply the least-squares scales of Eq. 6.
    """

    name = "thinet"

    ratio: float | None = None
    locations_per_sample: int = 10
    rescale: bool = True
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.ratio is None:
            raise ValueError("Method 'thinet' needs ratio=..., the fraction of each layer's units to remove, in [0, 1).")
        self.ratio = check_fraction("ratio", self.ratio, low_open=False)
        self.locations_per_sample = check_positive_int("locations_per_sample", self.locations_per_sample)
        if not isinstance(self.rescale, bool):
            raise ValueError(f"rescale must be True or False, got {self.rescale!r}.")
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    @torch.no_grad()
    def _contributions(
        self, context: PruningContext, layer: PrunableLayer, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """Sampled contributions of ``layer``'s units to each of its consumers, on the network
        pruned (and rescaled) so far."""
        generator = torch.Generator().manual_seed(context.seed)
        collected: list[list[torch.Tensor]] = [[] for _ in layer.consumers]

        def capture(index: int, consumer: nn.Module):
            def hook(_module: nn.Module, args: tuple) -> None:
                weight = params[f"{layer.consumers[index].name}.weight"]
                if isinstance(consumer, nn.Conv2d):
                    part = conv_contributions(consumer, weight, args[0], self.locations_per_sample, generator)
                else:
                    part = linear_contributions(layer, weight, args[0], self.locations_per_sample, generator)
                collected[index].append(part.cpu())

            return hook

        buffers = dict(context.model.named_buffers())
        with masked_units(context.structure, masks):
            handles = [c.module.register_forward_pre_hook(capture(i, c.module)) for i, c in enumerate(layer.consumers)]
            try:
                for start in range(0, context.inputs.shape[0], self.batch_size):
                    batch = context.inputs[start : start + self.batch_size].to(context.device)
                    functional_call(context.model, (params, buffers), (batch,))
            finally:
                for handle in handles:
                    handle.remove()
        return [torch.cat(parts) for parts in collected]

    def decide(self, context: PruningContext) -> MaskDecision:
        params = {name: p.detach().clone() for name, p in context.model.named_parameters()}
        masks: dict[str, torch.Tensor] = {}
        errors: dict[str, float] = {}
        bar = context.progress(total=len(context.structure.layers), desc="thinet")
        try:
            for layer in context.structure.layers:
                contributions = self._contributions(context, layer, params, masks)
                removed = greedy_removal(torch.cat(contributions), units_to_remove(self.ratio, layer.units))
                keep = torch.ones(layer.units, dtype=torch.bool)
                keep[removed] = False
                scales = [least_squares_scales(x, keep) if self.rescale else None for x in contributions]
                for consumer, scale in zip(layer.consumers, scales):
                    if scale is not None:
                        name = f"{consumer.name}.weight"
                        params[name] = scale_input_units(params[name], scale)
                errors[layer.name] = sum(relative_error(x, keep, s) for x, s in zip(contributions, scales)) / len(scales)
                masks[layer.name] = keep
                bar.update(1)
        finally:
            bar.close()
        rescaled = None
        if self.rescale:
            rescaled = copy.deepcopy(context.model)
            with torch.no_grad():
                for name, value in params.items():
                    rescaled.get_parameter(name).copy_(value)
        return MaskDecision(masks, model=rescaled, details={"relative_reconstruction_error": errors})
