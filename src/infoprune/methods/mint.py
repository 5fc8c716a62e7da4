"""MINT (Ganesh, Corso & Yasaei Sekeh 2020): prune the connections that carry little information.

For every prunable layer l (the *parent*) and each layer l+1 that reads it (the *child*),
units are split into contiguous groups and every (child group i, parent group j) pair gets
the score ρ(i, j) = I(child group i ; parent group j | the other parent groups), the
conditional geometric MI of §III-A (:mod:`infoprune.estimators.geometric_mi`). Scores of all
pairs are pooled, a threshold δ is set (directly or as a quantile of the pooled scores), and
child group i keeps its connections from parent group j when ρ(i, j) ≥ δ (Alg. 1). The cap γ
(App. A) stops a layer pair from losing more than a fraction γ of its weights by re-deriving δ
from that pair's scores.

Two outputs:
- the paper's *connection-level* pruning: the weights of dropped parent-group→child-group
  blocks are zeroed. :func:`connection_masks` turns ``result.details`` into weight-shaped
  masks and :func:`apply_connection_masks` zeroes them in a copy of the original model;
  ``details["connections"]`` reports the fraction of weights pruned and the CSR memory
  (Table I); :func:`rethreshold` decides again from the stored scores with another δ or γ;
- the *structured* decision of the ``prune`` API: a parent unit none of whose connections
  survive (to any child group of any child) is removed, by the shared surgery. A surviving
  unit keeps all its connections there, so this model is the coarser of the two.

Our extension, the default (``conditioning="contribution"``): each pair is conditioned on the
other parents' contribution W_z z + b to child group i's pre-activation instead of on all
other parent units (:func:`other_parents_contribution`; the estimator's changes for it are in
:mod:`infoprune.estimators.geometric_mi`), and δ defaults to 2/√n1 (:func:`independence_delta`).
Reason: with hundreds of other units in Z the paper's statistic sees mostly Z — on a net with
20 dead units it keeps as many dead as live ones, and on the MNIST MLP random blocks re-train
better (``bench/mint_power.py``, ``docs/results/mint-*``). ``conditioning="others"`` is the
paper's estimator.

Activations are those of :meth:`infoprune.network.Network.record`: a parent as its child reads it,
a prunable child as *its* consumer reads it (σ(wx + b) of Eq. 5), a child that is the output
(or a layer that cannot be pruned) as its raw output; conv maps are averaged over H×W
(App. B: "the average activation across a filter's dimensions"). Samples are drawn per class
(App. B, m samples per class), and parent and child rows come from the same inputs.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from infoprune.estimators.geometric_mi import DEFAULT_BATCH_ELEMENTS, grouped_conditional_gmi
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_fraction, check_positive_int
from infoprune.metrics import csr_bytes
from infoprune.network import MapReduction, Network
from infoprune.progress import logger
from infoprune.running import evaluating

GroupCount = int | tuple[int, int]
"""G for a layer pair: one int for parent and child, or ``(parent G, child G)``."""


def contiguous_groups(width: int, groups: int) -> list[slice]:
    """Split ``width`` units into ``groups`` contiguous, balanced blocks (§III-B "Group Extension").

    Sizes differ by at most one, the larger blocks first (``width = 10, groups = 4`` gives
    3, 3, 2, 2). ``groups ≥ width`` gives one unit per group.
    """
    groups = min(groups, width)
    size, larger = divmod(width, groups)
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + size + (1 if g < larger else 0))
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


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


def _module_inputs(model: nn.Module, names: list[str], inputs: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """What each named module reads (its first input), for ``inputs``, in eval mode, on the CPU."""
    modules = dict(model.named_modules())
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    device = next(model.parameters()).device
    with evaluating(model) as hooks:
        for name in names:
            hooks.append(modules[name].register_forward_pre_hook(
                lambda _m, args, name=name: collected[name].append(args[0].detach().cpu())))
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


def keep_connections(
    scores: torch.Tensor, block_weights: torch.Tensor, delta: float, gamma: float | None
) -> tuple[torch.Tensor, float]:
    """Which (child group, parent group) blocks keep their weights, and the δ used (Alg. 1, App. A).

    A block is kept when its score ≥ δ. With a cap γ, when the dropped blocks hold more than
    a fraction γ of the pair's weights, δ is re-derived from this pair's scores: the lowest
    threshold at which the dropped blocks would exceed γ, so that at most γ is dropped.
    """
    kept = scores >= delta
    if gamma is None:
        return kept, float(delta)
    budget = gamma * float(block_weights.sum())
    if float(block_weights[~kept].sum()) <= budget:
        return kept, float(delta)
    flat_scores = scores.flatten()
    order = torch.argsort(flat_scores, stable=True)
    dropped_weights = block_weights.flatten()[order].cumsum(0)
    first_over = int((dropped_weights > budget).nonzero()[0])
    local_delta = float(flat_scores[order[first_over]])
    return scores >= local_delta, local_delta


def independence_delta(samples: int) -> float:
    """δ = 2 / √n1 (n1 = samples // 3, the joint set): about three standard deviations of Î
    above 0 when child and parent are conditionally independent (Î's null spread is
    ≈ 0.7 / √n1 for the Friedman–Rafsky count, measured in ``bench/mint_power.py``)."""
    return 2.0 / (samples // 3) ** 0.5


def check_threshold(
    delta: float | None, quantile: float | None, default_quantile: float | None = 0.5
) -> tuple[float | None, float | None]:
    """Validate δ given directly or as a quantile (at most one; ``default_quantile`` when neither)."""
    if delta is not None and quantile is not None:
        raise ValueError(f"Give either delta ({delta}) or quantile ({quantile}), not both.")
    if delta is None:
        if quantile is None and default_quantile is None:
            return None, None
        return None, check_fraction("quantile", default_quantile if quantile is None else quantile, low_open=False, high_open=False)
    try:
        return float(delta), None
    except (TypeError, ValueError):
        raise ValueError(f"delta must be a number, got {delta!r}.") from None


@dataclass(frozen=True)
class LayerPair:
    """One parent → child pair: group sizes, scores ρ (child groups × parent groups), decision.

    ``kept`` (bool, like ``scores``) and the ``delta`` used are set by :func:`threshold_pairs`.
    """

    parent: str
    child: str
    parent_sizes: list[int]
    child_sizes: list[int]
    scores: torch.Tensor
    kept: torch.Tensor | None = None
    delta: float | None = None

    def block_weights(self) -> torch.Tensor:
        """Connections in each (child group, parent group) block, per kernel position."""
        return torch.outer(torch.tensor(self.child_sizes), torch.tensor(self.parent_sizes))

    def unit_mask(self) -> torch.Tensor:
        """Kept connections expanded to units, ``(child units, parent units)``."""
        rows, cols = torch.tensor(self.child_sizes), torch.tensor(self.parent_sizes)
        return self.kept.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "child": self.child,
            "parent_group_sizes": self.parent_sizes,
            "child_group_sizes": self.child_sizes,
            "delta": self.delta,
            "scores": self.scores.tolist(),
            "kept": None if self.kept is None else self.kept.tolist(),
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> LayerPair:
        kept = None if entry["kept"] is None else torch.tensor(entry["kept"], dtype=torch.bool)
        scores = torch.tensor(entry["scores"], dtype=torch.float64)
        return cls(
            entry["parent"], entry["child"], entry["parent_group_sizes"], entry["child_group_sizes"], scores, kept, entry["delta"]
        )


Cap = float | dict[str, float] | None
"""γ: one cap for every layer pair, a cap per parent layer (layers not named are uncapped), or None."""


def check_gamma(gamma: Cap, parents: list[str] | None = None) -> Cap:
    """Validate γ. One γ lies in (0, 1]; per-layer caps lie in [0, 1], where 0 leaves that
    layer's connections unpruned (App. B skips some layers). With ``parents``, the names must
    be among them."""
    if gamma is None:
        return None
    if not isinstance(gamma, dict):
        return check_fraction("gamma", gamma, high_open=False)
    if parents is not None:
        unknown = sorted(set(gamma) - set(parents))
        if unknown:
            raise ValueError(f"gamma names layers that are not MINT parents: {unknown}; the parents are {parents}.")
    return {name: check_fraction(f"gamma[{name!r}]", cap, low_open=False, high_open=False) for name, cap in gamma.items()}


def threshold_pairs(
    pairs: list[LayerPair], delta: float | None, quantile: float | None, gamma: Cap
) -> tuple[float, list[LayerPair]]:
    """Pool the scores of all pairs, set δ (given, or their ``quantile``), decide every pair."""
    if delta is None:
        delta = float(torch.quantile(torch.cat([pair.scores.flatten() for pair in pairs]), quantile))
    decided = []
    for pair in pairs:
        cap = gamma.get(pair.parent) if isinstance(gamma, dict) else gamma
        kept, pair_delta = keep_connections(pair.scores, pair.block_weights(), delta, cap)
        decided.append(replace(pair, kept=kept, delta=pair_delta))
    return delta, decided


def _pairs_of(details: dict[str, Any]) -> list[LayerPair]:
    if "pairs" not in details:
        raise ValueError("These details hold no MINT layer pairs: pass result.details of a method='mint' run.")
    return [LayerPair.from_dict(entry) for entry in details["pairs"]]


def rethreshold(
    details: dict[str, Any], *, delta: float | None = None, quantile: float | None = None, gamma: Cap = None
) -> dict[str, Any]:
    """The details of a MINT run decided again with another δ, quantile or γ, without re-estimating.

    Returns ``delta``, ``samples`` and ``pairs`` like ``result.details`` (for sweeps over δ as
    in MINT Fig. 4 and A-1); :func:`connection_masks` and :func:`connection_summary` take it.
    """
    delta, quantile = check_threshold(delta, quantile)
    pairs = _pairs_of(details)
    gamma = check_gamma(gamma, sorted({pair.parent for pair in pairs}))
    delta, pairs = threshold_pairs(pairs, delta, quantile, gamma)
    return {"delta": delta, "samples": details.get("samples"), "pairs": [pair.as_dict() for pair in pairs]}


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
    for pair in _pairs_of(details):
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
    versus speed).
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
            child_inputs = _module_inputs(context.model, sorted({c.name for _, c in pairs}), inputs)

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
        delta, quantile = self.delta, self.quantile
        if delta is None and quantile is None:
            if self.conditioning == "contribution":
                delta = independence_delta(int(rows.numel()))
            else:
                quantile = 0.5
        delta, decided = threshold_pairs(scored, delta, quantile, self.gamma)

        masks = {}
        for layer in network.groups:
            used = torch.zeros(layer.units, dtype=torch.bool)
            for pair in decided:
                if pair.parent == layer.name:
                    used |= pair.unit_mask().any(dim=0)
            masks[layer.name] = used
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
