"""Data-free baselines: random units, and the L1 norm of each unit's weights (Li et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infoprune.methods import register
from infoprune.methods.base import PruningContext, check_positive_int
from infoprune.methods.ranked import Masks, RankedPruningMethod, producer_rows
from infoprune.network.groups import contiguous_groups


@register
@dataclass
class RandomUnits(RankedPruningMethod):
    """Remove a uniformly random ``ratio`` of the units (all layers pooled, or per layer).

    Every unit draws a score from U(0, 1) under the context's seed and the lowest go, so
    ``scope="global"`` picks a uniformly random subset of all units and ``scope="layer"`` a
    uniformly random subset of each layer. ``blocks`` > 0 splits each layer into that many
    contiguous blocks (MINT's groups, :func:`infoprune.network.groups.contiguous_groups`) and
    draws one score per block, so whole random blocks go (the last one partly when a budget
    falls inside it): the baseline for MINT, which keeps or removes such blocks.
    """

    name = "random"

    blocks: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.blocks = check_positive_int("blocks", self.blocks, minimum=0)

    def unit_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(context.seed)
        if not self.blocks:
            return {group.name: torch.rand(group.units, generator=generator) for group in context.network.groups}
        scores = {}
        for group in context.network.groups:
            spans = contiguous_groups(group.units, self.blocks)
            draws = torch.rand(len(spans), generator=generator, dtype=torch.float64)
            # a block's units share its draw; a tiny within-block slope removes a cut block from one end
            scores[group.name] = torch.cat([draws[i] + 1e-9 * torch.arange(s.stop - s.start, dtype=torch.float64) for i, s in enumerate(spans)])
        return scores


@register
@dataclass
class L1Norm(RankedPruningMethod):
    """Li et al. 2017 ("Pruning Filters for Efficient ConvNets", §3.1): ``s_j = Σ |F_j|``.

    The score of a filter (or neuron) is the sum of the absolute values of its incoming
    kernel weights — bias excluded, as in the paper; the smallest are removed. A unit of a
    coupled group (a residual stream's channel, a depthwise conv with its producer) has one
    filter per producer: its score is the *mean* of their L1 norms (Torch-Pruning's default
    group reduction), so a stream written by many layers is not favoured by their number.
    Li et al. prune per layer; ``scope="global"`` (the default here, as for the other
    baselines) compares the raw norms across groups, which favours layers with large fan-in.
    A unit of attention heads scores per output column (its norm / ``head_dim``), as in
    :mod:`infoprune.methods.ranked`.
    """

    name = "l1"

    def unit_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        return {
            group.name: torch.stack([
                producer_rows(p.module.weight.detach().abs(), p.positions).sum(dim=1).cpu() for p in group.producers
            ]).mean(dim=0) / group.features_per_unit
            for group in context.network.groups
        }
