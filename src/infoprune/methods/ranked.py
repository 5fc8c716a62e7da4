"""Shared machinery of the score-and-rank baselines (not a method itself).

:class:`RankedPruningMethod` holds the parameters every ranking baseline shares (``ratio``,
``scope``, ``min_units``) and turns unit scores into masks, in one shot or over rounds.
:class:`WeightScoreMethod` adds the step that makes an *unstructured* criterion structured,
as in the MIPP paper (§2, §5): a unit's score combines the scores of all the weights
associated with it.

"Associated with a unit" means every weight that disappears when the unit is removed: its
incoming weights and bias (the filter / neuron itself, in every producer of its group: all
the layers writing a residual stream's channel, a depthwise conv and the layer before it)
and, with ``outgoing=True`` (the default), its outgoing weights (the matching input channel,
block of flattened features or concatenation slice, of each consumer). Torch-Pruning's group
importances aggregate over the same set. The combination (Torch-Pruning's group reduction)
is the sum: for the non-negative criteria (SNIP, SynFlow) that is exactly the L1
norm the MIPP paper names; the signed criteria (GraSP, SOSP-H) keep the sign, which their
ranking rules depend on (an L1 norm would erase it).

An attention head is ``head_dim`` features (its output columns; MIPP and MINT test it so):
its sum is divided by ``group.features_per_unit``, so that it ranks as the mean of its
columns, on the scale of one FFN unit or channel. Deviation from a plain sum, measured:
with the plain sum a head of BERT-base adds 64 × 4 × 768 weights against an FFN unit's
2 × 768, and a global ranking at ``flops=0.5`` kept all 144 heads
(``docs/results/transformers-families.txt``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from infoprune.estimators.ranking import SCOPES, exponential_schedule, fewest_kept, keep_highest, ratio_within_budget
from infoprune.network import Budget, Network, check_method_budget
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_positive_int

Masks = dict[str, torch.Tensor]


@dataclass
class RankedPruningMethod(PruningMethod):
    """Score every unit of every group, remove the lowest-scored ``ratio`` of them.

    ``ratio``: the fraction of prunable units removed, in [0, 1) (the one budget argument
    counted as removed, see :mod:`infoprune.network.budget`); or instead a budget of what is
    kept, ``flops=`` / ``params=`` (a fraction ≤ 1 of the unpruned model's, or an absolute
    count): the fewest lowest-scored units are removed that bring the cost within it, costed by
    the exact forms of :mod:`infoprune.network.costs` (one unit fewer would exceed it). Give exactly one.
    ``scope``: ``"global"`` ranks all layers together (layer-wise ratios emerge, layers may
    collapse); ``"layer"`` removes the same fraction from every layer.
    ``min_units``: keep at least this many units per layer (0 = off, so collapse is honest;
    with ``scope="layer"`` the safeguard wins over the ratio in layers narrower than it).
    ``round_to``: each channel group keeps a multiple of this many units (or all of them), its
    best removed units put back, for widths fast kernels like (Torch-Pruning's ``round_to``);
    with a budget the ranking removes more elsewhere to meet it. Heads are not rounded.

    Subclasses are dataclasses too: their fields are their parameters, appended to these,
    and ``__post_init__`` validates them. Iterative methods override :attr:`rounds_to_run`:
    units are then re-scored with the current masks and re-ranked while the ratio follows an
    exponential schedule; pruned units stay pruned.
    """

    ratio: float | None = None
    scope: str = "global"
    min_units: int = 0
    flops: float | None = None
    params: float | None = None
    round_to: int = 1

    def __post_init__(self) -> None:
        check_method_budget(self)
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}.")
        self.min_units = check_positive_int("min_units", self.min_units, minimum=0)
        self.round_to = check_positive_int("round_to", self.round_to)

    def multiples(self, network: Network) -> dict[str, int]:
        """``round_to`` of each channel group (heads are whole units already)."""
        return {group.name: self.round_to for group in network.groups if group.heads is None}

    @property
    def rounds_to_run(self) -> int:
        """Score-and-rank rounds (1: one shot)."""
        return 1

    @abc.abstractmethod
    def unit_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        """Importance of each unit (higher = keep), ``(units,)`` per layer, given the current
        ``masks`` (empty in the first round; only iterative methods need to look at them)."""

    def budget(self, context: PruningContext) -> Budget | None:
        """The ``flops=`` / ``params=`` budget on this network (None for a ratio), refused when
        removing every unit the ranking may remove still exceeds it."""
        argument = next((a for a in ("flops", "params") if getattr(self, a) is not None), None)
        if argument is None:
            return None
        budget = Budget.on(context.network, argument, getattr(self, argument))
        sizes = {group.name: group.units for group in context.network.groups}
        least = fewest_kept(sizes, self.scope, self.min_units, self.multiples(context.network))
        budget.check_reachable(
            least, f"with every unit the ranking may remove removed (scope={self.scope!r}, min_units={self.min_units}; "
            "an emptied group keeps one physical unit)", "Raise the budget (or lower min_units)."
        )
        return budget

    def decide(self, context: PruningContext) -> MaskDecision:
        """Score, rank, remove; over :attr:`rounds_to_run` rounds for iterative methods.

        With a budget, each round re-computes the final ratio that meets it on the current
        scores and follows the schedule towards it (the ratio never decreases: pruned units
        stay pruned), so the last round meets the budget on the last scores.
        """
        budget = self.budget(context)
        multiples = self.multiples(context.network)
        masks: Masks = {}
        rounds, ratio = self.rounds_to_run, 0.0
        bar = context.progress(total=rounds, desc=self.name)
        try:
            for index in range(rounds):
                scores = self.unit_scores(context, masks)
                scores = {n: s.masked_fill(~masks[n], -torch.inf) if n in masks else s for n, s in scores.items()}
                final = self.ratio
                if budget is not None:
                    final = ratio_within_budget(scores, budget.of_widths, budget.target, self.scope, self.min_units,
                                                multiples)
                ratio = max(ratio, exponential_schedule(final, rounds)[index])
                masks = keep_highest(scores, ratio, self.scope, self.min_units, multiples)
                bar.update(1)
        finally:
            bar.close()
        details = {"units_removed": int(sum((~m).sum() for m in masks.values()))}
        if budget is not None:
            details["budget"] = {"target": budget.target, "cost": budget.of_masks(masks), "ratio": ratio}
        return MaskDecision(masks, details=details)


def input_rows(module: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """A consumer's weight-shaped ``values`` as ``(input features, -1)``: row f holds every
    entry that reads input feature f (a Linear's column; a conv's input channel, within its
    conv group for grouped convolutions)."""
    if isinstance(module, nn.Linear):
        return values.T
    groups = module.groups
    out, per_group = values.shape[:2]
    grouped = values.reshape(groups, out // groups, per_group, -1).transpose(1, 2)
    return grouped.reshape(groups * per_group, -1)


def producer_rows(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(units, -1)``: a producer's weight- or bias-shaped ``values`` gathered per unit."""
    return values[positions.to(values.device).flatten()].reshape(positions.shape[0], -1)


def group_parameters(network: Network, outgoing: bool) -> list[str]:
    """Names (as in ``named_parameters``) of every parameter associated with some unit."""
    names: list[str] = []
    for group in network.groups:
        for producer in group.producers:
            names.append(f"{producer.name}.weight")
            if producer.module.bias is not None:
                names.append(f"{producer.name}.bias")
        if outgoing:
            names += [f"{c.name}.weight" for c in group.consumers]
    return list(dict.fromkeys(names))


def unit_sums(network: Network, weight_scores: dict[str, torch.Tensor], outgoing: bool) -> dict[str, torch.Tensor]:
    """Per-unit sums of per-parameter scores (keyed as in ``named_parameters``) over each
    group's producers (incoming weights and biases) and, with ``outgoing``, its consumers;
    per feature for a unit of several (a head: divided by its ``head_dim`` columns)."""
    sums = {}
    for group in network.groups:
        total = torch.zeros(group.units, dtype=torch.float64)
        for producer in group.producers:
            total = total + producer_rows(weight_scores[f"{producer.name}.weight"], producer.positions).sum(dim=1).double()
            if producer.module.bias is not None:
                total = total + producer_rows(weight_scores[f"{producer.name}.bias"], producer.positions).sum(dim=1).double()
        if outgoing:
            for consumer in group.consumers:
                rows = input_rows(consumer.module, weight_scores[f"{consumer.name}.weight"])
                total = total + producer_rows(rows, consumer.positions).sum(dim=1).double()
        sums[group.name] = (total / group.features_per_unit).float()
    return sums


def detached_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's parameters that require grad, for ``torch.func.functional_call``:
    gradients land on the copies and the model stays untouched."""
    return {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}


def labelled_batches(
    inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
    """``(inputs, labels, share)`` batches on ``device``; the shares sum to 1 (for means over all)."""
    for start in range(0, inputs.shape[0], batch_size):
        x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
        yield x.to(device), y.to(device), x.shape[0] / inputs.shape[0]


def require_labels(context: PruningContext, method: str) -> torch.Tensor:
    """The calibration labels, or a clear error for label-free calibration data."""
    if context.labels is None:
        raise ValueError(
            f"Method {method!r} needs labels (it differentiates the classification loss): pass "
            "LabelledTensors or a DataLoader yielding (inputs, labels) as the calibration data."
        )
    return context.labels


@dataclass
class WeightScoreMethod(RankedPruningMethod):
    """A per-weight criterion made structured: unit score = Σ of its associated weights' scores.

    ``outgoing``: count each unit's outgoing weights (consumer input channels) as well as its
    incoming weights and bias. Subclasses implement :meth:`weight_scores`;
    ``removes_highest`` flips the ranking for criteria whose *highest* scores mark what to
    remove (GraSP); ``absolute`` ranks by ``|Σ|`` for criteria defined as the magnitude of the
    unit's summed term (SOSP-H).
    """

    removes_highest: ClassVar[bool] = False
    absolute: ClassVar[bool] = False

    outgoing: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.outgoing, bool):
            raise ValueError(f"outgoing must be True or False, got {self.outgoing!r}.")

    @abc.abstractmethod
    def weight_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        """Score of every parameter entry, keyed like ``named_parameters`` (CPU tensors)."""

    def unit_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        sums = unit_sums(context.network, self.weight_scores(context, masks), self.outgoing)
        if self.absolute:
            sums = {name: s.abs() for name, s in sums.items()}
        if self.removes_highest:
            sums = {name: -s for name, s in sums.items()}
        return sums
