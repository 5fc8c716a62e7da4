"""The MINT method object: settings, validation and :meth:`MINT.decide` (the package docstring
describes the method)."""

from __future__ import annotations

import typing

import torch

from infoprune.estimators.geometric_mi import DEFAULT_BATCH_ELEMENTS, grouped_conditional_gmi
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_positive_int
from infoprune.methods.mint.connections import connection_summary
from infoprune.methods.mint.scores import (
    Conditioning, child_channels, draw_per_class, independence_delta, module_inputs,
    other_parents_contribution,
)
from infoprune.methods.mint.selection import (
    Cap, LayerPair, check_gamma, check_threshold, delta_within_budget, threshold_pairs,
)
from infoprune.network import Budget, MapReduction, Network, check_budgets
from infoprune.network.groups import contiguous_groups

def unit_masks(network: Network, pairs: list[LayerPair]) -> dict[str, torch.Tensor]:
    """The structured decision: a parent unit is kept when any of its connections, to any child
    group of any child, survives the threshold."""
    masks = {}
    for layer in network.groups:
        used = torch.zeros(layer.units, dtype=torch.bool)
        for pair in pairs:
            if pair.parent == layer.name:
                used |= pair.unit_mask().any(dim=0)
        masks[layer.name] = used
    return masks


GroupCount = int | tuple[int, int]
"""G for a layer pair: one int for parent and child, or ``(parent G, child G)``."""


@register
class MINT(PruningMethod):
    """Mutual Information-based Neuron Trimming (MINT §III, Alg. 1, App. A–B).

    ``samples_per_class``: m, distinct samples drawn per class for the estimates (App. B uses
    650 on MNIST; cost grows as m²); a class with fewer gives all it has (logged, and counted
    in ``details["samples_per_class"]``). ``groups``: G, the number of contiguous groups of a
    layer, as one int for every layer, or a dict naming every prunable (parent) layer with an
    int or ``(parent G, child G)`` for its pairs (App. B, MNIST MLP:
    ``{"net.1": (250, 100), "net.4": (300, 10)}``); a G above a layer's width means one unit
    per group. ``delta``: δ, the score threshold; or ``quantile``: δ as this quantile of the
    pooled scores (0.5 when neither is given). ``gamma``: γ, the most a layer pair may lose,
    as a fraction of its weights: one value for all pairs, or a dict of caps per parent layer
    (App. B caps only some layers; 0 leaves a layer's connections whole), None for no cap.
    ``conditioning``: ``"others"`` is the paper's ρ(i, j) = Î(child i; parent j | all other
    parent units); ``"contribution"`` (our extension, the default, chosen by
    ``bench/mint_power.py``) conditions instead on the other parents' contribution to child
    group i's pre-activation, W_z z + b per child unit (:func:`other_parents_contribution`):
    a parent whose weights into the child are zero then scores ≈ 0, which the paper's
    estimator, whose distances are dominated by the many other units, does not see.
    ``map_reduction``: how conv maps become one value per sample (``"signed_mean"`` is the
    paper's). ``batch_elements``: distance entries held per batch of spanning trees (memory
    versus speed). ``flops=`` / ``params=``: instead of δ, a budget (kept: a fraction ≤ 1 of the
    full model's, or an absolute count): δ becomes the smallest pooled score whose structured
    decision meets it (:func:`delta_within_budget`; our addition, so that MINT can be compared at
    equal FLOPs; the paper sets δ directly).
    """

    name = "mint"

    def __init__(
        self,
        samples_per_class: int = 250,
        groups: int | dict[str, GroupCount] = 16,
        delta: float | None = None,
        quantile: float | None = None,
        gamma: Cap = None,
        conditioning: Conditioning = "contribution",
        map_reduction: MapReduction = "signed_mean",
        batch_elements: int = DEFAULT_BATCH_ELEMENTS,
        flops: float | None = None,
        params: float | None = None,
    ) -> None:
        self.samples_per_class = check_positive_int("samples_per_class", samples_per_class, minimum=2)
        self.groups = self._check_groups(groups)
        self.delta, self.quantile = check_threshold(delta, quantile, default_quantile=None)
        self.gamma = check_gamma(gamma)
        if conditioning not in typing.get_args(Conditioning):
            raise ValueError(f"conditioning must be one of {typing.get_args(Conditioning)}, got {conditioning!r}.")
        self.conditioning = conditioning
        if map_reduction not in typing.get_args(MapReduction):
            raise ValueError(f"map_reduction must be one of {typing.get_args(MapReduction)}, got {map_reduction!r}.")
        self.map_reduction = map_reduction
        self.batch_elements = check_positive_int("batch_elements", batch_elements)
        budget = check_budgets(self.name, ("flops", "params"), required=False, flops=flops, params=params)
        if budget and (delta is not None or quantile is not None):
            raise ValueError("MINT takes a threshold (delta= or quantile=) or a budget (flops= or params=), not both.")
        self.flops, self.params = budget.get("flops"), budget.get("params")

    @staticmethod
    def _check_groups(groups: int | dict[str, GroupCount]) -> int | dict[str, tuple[int, int]]:
        if not isinstance(groups, dict):
            return check_positive_int("groups", groups)
        checked = {}
        for name, count in groups.items():
            pair = (count, count) if isinstance(count, int) and not isinstance(count, bool) else count
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"groups[{name!r}] must be an int or a (parent G, child G) pair, got {count!r}.")
            checked[name] = (
                check_positive_int(f"groups[{name!r}] parent G", pair[0]),
                check_positive_int(f"groups[{name!r}] child G", pair[1]),
            )
        return checked

    def _group_counts(self, network: Network) -> dict[str, tuple[int, int]]:
        """(parent G, child G) for every prunable layer; unknown or missing names are errors."""
        if isinstance(self.groups, int):
            return {name: (self.groups, self.groups) for name in network.names}
        unknown = sorted(set(self.groups) - set(network.names))
        missing = [name for name in network.names if name not in self.groups]
        if unknown or missing:
            raise ValueError(
                f"groups must name every prunable layer and only those ({network.names}); "
                f"unknown: {unknown}, missing: {missing}. Or pass one int for all layers."
            )
        return dict(self.groups)

    def decide(self, context: PruningContext) -> MaskDecision:
        network = context.network
        counts = self._group_counts(network)
        check_gamma(self.gamma, network.names)
        for layer in network.groups:
            if self.conditioning == "others" and min(counts[layer.name][0], layer.units) < 2:
                raise ValueError(
                    f"Parent layer {layer.name!r} would have a single group ({layer.units} units, "
                    f"G = {counts[layer.name][0]}): MINT conditions on the other groups, so use G ≥ 2."
                )
        rows = draw_per_class(context.labels, self.samples_per_class, context.seed)
        pairs = [(layer, consumer) for layer in network.groups for consumer in layer.consumers]
        # a child that produces a prunable group is read as that group's units, else by its raw output
        child_key = {c.name: getattr(network.group_of_producer(c.name), "name", c.name) for _, c in pairs}
        other_children = tuple(sorted({key for key in child_key.values() if key not in network.names}))
        inputs = context.inputs[rows]
        activations = network.record(inputs, self.map_reduction, extra_outputs=other_children)
        if self.conditioning == "contribution":
            child_inputs = module_inputs(context.model, sorted({c.name for _, c in pairs}), inputs)

        scored = []
        for layer, child in pairs:
            parent_groups = contiguous_groups(layer.units, counts[layer.name][0])
            width = activations[layer.name].shape[1] // layer.units  # columns per unit: head_dim for a head
            parent_columns = [slice(g.start * width, g.stop * width) for g in parent_groups]
            child_groups = contiguous_groups(activations[child_key[child.name]].shape[1], counts[layer.name][1])
            given = None
            if self.conditioning == "contribution":
                contribution = other_parents_contribution(child.module, child_inputs[child.name], child.positions, parent_groups)
                channels = child_channels(network, child.name)
                given = lambda j, contribution=contribution, channels=channels: contribution(j)[:, channels]
            bar = context.progress(total=len(parent_groups) * len(child_groups), desc=f"MINT {layer.name}→{child.name}")
            try:
                scores = grouped_conditional_gmi(
                    activations[layer.name],
                    activations[child_key[child.name]],
                    parent_columns,
                    child_groups,
                    given=given,
                    seed=context.seed,
                    device=context.device,
                    batch_elements=self.batch_elements,
                    on_pairs_done=bar.update,
                )
            finally:
                bar.close()
            sizes = [[g.stop - g.start for g in groups] for groups in (parent_groups, child_groups)]
            scored.append(LayerPair(layer.name, child.name, *sizes, scores))
        argument = "flops" if self.flops is not None else "params" if self.params is not None else None
        if argument is not None:
            budget = Budget.on(network, argument, getattr(self, argument))
            delta, decided = delta_within_budget(scored, self.gamma, lambda pairs: unit_masks(network, pairs), budget)
        else:
            delta, quantile = self.delta, self.quantile
            if delta is None and quantile is None:
                if self.conditioning == "contribution":
                    delta = independence_delta(int(rows.numel()))
                else:
                    quantile = 0.5
            delta, decided = threshold_pairs(scored, delta, quantile, self.gamma)
        masks = unit_masks(network, decided)
        classes, per_class = context.labels[rows].unique(return_counts=True)
        details = {
            "delta": delta,
            "samples": int(rows.numel()),
            "samples_per_class": dict(zip(classes.tolist(), per_class.tolist())),
            "conditioning": self.conditioning,
            "pairs": [pair.as_dict() for pair in decided],
        }
        try:
            details["connections"] = connection_summary(context.model, details)
        except ValueError as error:  # connection masks need one parent per child
            details["connections"] = {"unavailable": str(error)}
        return MaskDecision(masks=masks, details=details)
