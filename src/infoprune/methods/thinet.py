"""ThiNet (Luo et al. 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network
Compression", §3): prune the units of layer l that layer l+1 can best do without.

For each prunable group in forward order, layer l+1 (each consumer) is run on the
calibration set and, at ``locations_per_sample`` random (output unit, position) pairs per
sample, the contribution of every input channel to its output is recorded (§3.2). Channels
are removed greedily so that the sum of the removed contributions stays smallest (Alg. 1),
the same fraction ``ratio`` of every layer (ThiNet cannot set layer-wise ratios; the MIPP
paper compares it with a uniform ratio, §5). A ``flops=`` / ``params=`` budget sets that
uniform ratio: the smallest whose per-layer counts meet it (our addition, so that ThiNet can be
compared at equal FLOPs; which units go is still ThiNet's choice). With ``rescale`` the kept input channels of
the consumer are scaled by the least-squares factors of Eq. 6, so the pruned layer
reconstructs the original output as well as it can; later layers are then selected on the
already pruned and rescaled network, as ThiNet proceeds layer by layer. The scales reach the
pruned model as a :class:`RescaleConsumers` step after surgery. A unit of a coupled group
contributes through all its input positions at a consumer (summed), and through every
consumer; its removal is decided on all of them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from infoprune.estimators.ranking import fewest_kept, ratio_within_budget, units_to_remove
from infoprune.estimators.reconstruction import greedy_removal, least_squares_scales, relative_error
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_positive_int
from infoprune.network import Budget, Consumer, Group, Network, check_method_budget
from infoprune.network.activations import feature_first
from infoprune.padding import real_tokens
from infoprune.running import evaluating


def conv_contributions(
    conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor, locations: int, generator: torch.Generator
) -> torch.Tensor:
    """``(N·locations, C)``: each input channel's share of ``conv``'s output (bias excluded)
    at random (output channel, position) pairs, ``locations`` per sample. A grouped conv's
    weight is spread to its dense equivalent (zero outside each conv group)."""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(
            "ThiNet supports consumers that are Linear layers or 2-d convolutions with numeric zero padding; "
            f"got {conv}. Leave the layers feeding it whole with ignore=[...]."
        )
    weight = dense_weight(weight, conv.groups)
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


def dense_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's ``(O, C/g, …)`` weight as the ``(O, C, …)`` weight of the same conv with groups=1."""
    if groups == 1:
        return weight
    out, per_group = weight.shape[:2]
    dense = weight.new_zeros(out, per_group * groups, *weight.shape[2:])
    rows = out // groups
    for g in range(groups):
        dense[g * rows : (g + 1) * rows, g * per_group : (g + 1) * per_group] = weight[g * rows : (g + 1) * rows]
    return dense


def linear_contributions(
    linear: nn.Linear, weight: torch.Tensor, x: torch.Tensor, locations: int, generator: torch.Generator
) -> torch.Tensor:
    """``(N·locations, F)``: each input feature's share of a Linear consumer's output at random
    (output neuron, token) pairs, ``locations`` per sample; real tokens only in a padded batch
    (drawn the same whatever the padded length)."""
    flat = feature_first(x, linear)  # (N, F, tokens)
    n, _, tokens = flat.shape
    sample = torch.arange(n).repeat_interleave(locations).to(x.device)
    out = torch.randint(weight.shape[0], (n * locations,), generator=generator).to(x.device)
    real = real_tokens(x, linear)
    if real is None:
        token = torch.randint(tokens, (n * locations,), generator=generator).to(x.device)
    else:
        order = torch.argsort((~real).int(), dim=1, stable=True)  # each sample's real positions first
        drawn = torch.rand(n * locations, generator=generator).to(x.device) * real.sum(dim=1)[sample]
        token = order[sample, drawn.long()]
    return flat[sample, :, token] * weight[out]


def unit_contributions(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-feature contributions ``(M, F)`` summed into per-unit ones ``(M, units)``."""
    return features[:, positions.to(features.device).flatten()].reshape(features.shape[0], *positions.shape).sum(dim=2)


def scale_inputs(weight: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """A consumer's weight (``groups`` conv groups) with the inputs of unit j (``positions[j]``,
    −1 = absent) times ``scales[j]``."""
    factor = torch.ones(weight.shape[1] * groups, dtype=weight.dtype, device=weight.device)
    present = positions >= 0
    factor[positions[present]] = scales.to(weight)[:, None].expand_as(positions)[present]
    out, per_group = weight.shape[:2]
    grouped = weight.reshape(groups, out // groups, per_group, -1) * factor.reshape(groups, 1, per_group, 1)
    return grouped.reshape(weight.shape)


@dataclass(frozen=True)
class RescaleConsumers:
    """After surgery: each consumer's kept inputs of each group times ThiNet's least-squares
    scales (Eq. 6), ``scales[(group, consumer)]`` over the group's units."""

    scales: dict[tuple[str, str], torch.Tensor]

    @torch.no_grad()
    def apply(self, pruned: nn.Module, network: Network, masks: dict[str, torch.Tensor]) -> None:
        for (group_name, consumer_name), scales in self.scales.items():
            consumer = next(c for c in network.group(group_name).consumers if c.name == consumer_name)
            module = pruned.get_submodule(consumer_name)
            positions = network.positions_after_surgery(consumer, masks)
            module.weight.copy_(scale_inputs(module.weight, positions, scales, getattr(module, "groups", 1)))


@register
@dataclass
class ThiNet(PruningMethod):
    """Greedy next-layer reconstruction, the same ``ratio`` in every layer, optional rescaling.

    ``ratio``: the fraction of each layer's units removed, in [0, 1); or instead a budget,
    ``flops=`` / ``params=`` (kept: a fraction ≤ 1 of the full model's, or an absolute count),
    met by the smallest uniform ratio whose per-layer counts fit it; give exactly one;
    ``locations_per_sample``: sampled (output unit, position) pairs per calibration sample
    (10 in the paper); ``rescale``: apply the least-squares scales of Eq. 6.
    """

    name = "thinet"

    ratio: float | None = None
    locations_per_sample: int = 10
    rescale: bool = True
    batch_size: int = 256
    flops: float | None = None
    params: float | None = None

    def __post_init__(self) -> None:
        check_method_budget(self)
        self.locations_per_sample = check_positive_int("locations_per_sample", self.locations_per_sample)
        if not isinstance(self.rescale, bool):
            raise ValueError(f"rescale must be True or False, got {self.rescale!r}.")
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    @torch.no_grad()
    def _contributions(
        self, context: PruningContext, group: Group, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """Sampled contributions of ``group``'s units to each of its consumers, on the network
        pruned (and rescaled) so far."""
        generator = torch.Generator().manual_seed(context.seed)
        collected: list[list[torch.Tensor]] = [[] for _ in group.consumers]

        def capture(index: int, consumer: Consumer):
            def hook(_module: nn.Module, args: tuple) -> None:
                weight = params[f"{consumer.name}.weight"]
                if isinstance(consumer.module, nn.Linear):
                    part = linear_contributions(consumer.module, weight, args[0], self.locations_per_sample, generator)
                else:
                    part = conv_contributions(consumer.module, weight, args[0], self.locations_per_sample, generator)
                collected[index].append(unit_contributions(part, consumer.positions).cpu())

            return hook

        buffers = dict(context.model.named_buffers())
        with evaluating(context.model) as hooks, context.network.masked(masks):
            hooks += [c.module.register_forward_pre_hook(capture(i, c)) for i, c in enumerate(group.consumers)]
            for start in range(0, context.inputs.shape[0], self.batch_size):
                batch = context.inputs[start : start + self.batch_size].to(context.device)
                functional_call(context.model, (params, buffers), (batch,))
        return [torch.cat(parts) for parts in collected]

    def uniform_ratio(self, network: Network) -> float:
        """The fraction removed from every layer: ``ratio``, or the smallest ratio whose per-layer
        counts (:func:`units_to_remove`) meet the ``flops=`` / ``params=`` budget."""
        argument = next((a for a in ("flops", "params") if getattr(self, a) is not None), None)
        if argument is None:
            return self.ratio
        budget = Budget.on(network, argument, getattr(self, argument))
        units = {group.name: group.units for group in network.groups}
        budget.check_reachable(
            fewest_kept(units, "layer", 0), "with every layer emptied (ThiNet removes the same fraction of each; an "
            "emptied group keeps one physical unit)",
        )  # fmt: skip
        unscored = {name: torch.zeros(count) for name, count in units.items()}  # counts alone set the cost
        return ratio_within_budget(unscored, budget.of_widths, budget.target, "layer")

    def decide(self, context: PruningContext) -> MaskDecision:
        ratio = self.uniform_ratio(context.network)
        params = {name: p.detach().clone() for name, p in context.model.named_parameters()}
        masks: dict[str, torch.Tensor] = {}
        errors: dict[str, float] = {}
        rescaling: dict[tuple[str, str], torch.Tensor] = {}
        bar = context.progress(total=len(context.network.groups), desc="thinet")
        try:
            for group in context.network.groups:
                contributions = self._contributions(context, group, params, masks)
                removed = greedy_removal(torch.cat(contributions), units_to_remove(ratio, group.units))
                keep = torch.ones(group.units, dtype=torch.bool)
                keep[removed] = False
                scales = [least_squares_scales(x, keep) if self.rescale else None for x in contributions]
                for consumer, scale in zip(group.consumers, scales):
                    if scale is not None:
                        name = f"{consumer.name}.weight"
                        params[name] = scale_inputs(params[name], consumer.positions, scale, getattr(consumer.module, "groups", 1))
                        rescaling[(group.name, consumer.name)] = scale
                errors[group.name] = sum(relative_error(x, keep, s) for x, s in zip(contributions, scales)) / len(scales)
                masks[group.name] = keep
                bar.update(1)
        finally:
            bar.close()
        steps = (RescaleConsumers(rescaling),) if self.rescale else ()
        details = {"relative_reconstruction_error": errors, "ratio": ratio}
        return MaskDecision(masks, details=details, after_surgery=steps)
