"""MIPP: Mutual Information Preserving Pruning (Westphal et al.), Algorithm 1.

Walk the network from the output back to the input (§4.4). For each prunable layer, keep
the units whose activations transfer entropy to the *already pruned* downstream layer,
decided by TERC with MI ordering (Alg. 2, :mod:`infoprune.estimators.terc`):

* the last hidden layer is tested against the logits (the output layer is never pruned);
* an earlier group against the kept units of the groups its consumers produce; where that
  group is not decided yet (a residual stream read inside its own block) or kept whole, all
  its units; a consumer producing no prunable group (the output layer, a group left whole
  for a reason) through its raw output, reduced per channel;
* with ``select_inputs=True`` the input features are tested the same way against the pruned
  first layer (App. E.1).

Per-layer pruning ratios emerge from the test; every layer keeps at least one unit.
Activations are recorded once on the unpruned network (conv maps reduced over H×W by
``map_reduction``, App. E.2; L1 by default). The units are those of coupled channel groups
(:mod:`infoprune.network.groups`): a residual stream's channel is one feature, read where its
consumers read it. ``coupled="prune"`` (the default) tests every group, so residual streams,
depthwise convs and SE-gated channels shrink too; ``coupled="keep"`` leaves every group with
more than one producer whole, as the paper does for ResNets (App. D.3.2: "skip connections in
ResNets remain unaffected").
"""

from __future__ import annotations

import time

import torch

from infoprune.estimators.terc import TercConfig, TercResult, terc_select
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_fraction, check_positive_int

MAP_REDUCTIONS = ("l1", "l2", "mean", "std")
COUPLED = ("prune", "keep")


@register
class MIPP(PruningMethod):
    """Prune units that do not transfer entropy to the next layer, with ``confidence`` x.

    A unit is kept only if we are at least x sure that removing it makes the downstream
    layer harder to predict; higher x prunes more (§4.2.2, App. D.1). Iteration counts
    default to App. D.3.2 (1500 / 150 / 35; the paper uses 20 re-fit iterations for VGG).
    """

    name = "mipp"

    def __init__(
        self,
        confidence: float = 0.9,
        map_reduction: str = "l1",
        select_inputs: bool = False,
        coupled: str = "prune",
        hidden_size: int = 256,
        fit_iterations: int = 1500,
        refit_iterations: int = 150,
        ordering_iterations: int = 35,
        repeats: int = 5,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
    ) -> None:
        self.confidence = check_fraction("confidence", confidence)
        if map_reduction not in MAP_REDUCTIONS:
            raise ValueError(f"map_reduction must be one of {MAP_REDUCTIONS}, got {map_reduction!r}.")
        self.map_reduction = map_reduction
        if coupled not in COUPLED:
            raise ValueError(f"coupled must be one of {COUPLED}, got {coupled!r}.")
        self.coupled = coupled
        self.select_inputs = bool(select_inputs)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.fit_iterations = check_positive_int("fit_iterations", fit_iterations)
        self.refit_iterations = check_positive_int("refit_iterations", refit_iterations)
        self.ordering_iterations = check_positive_int("ordering_iterations", ordering_iterations)
        self.repeats = check_positive_int("repeats", repeats, minimum=2)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
        self.learning_rate = float(learning_rate)

    def minimum_samples(self, widest: int) -> int:
        """Samples needed: ≥ 10 per held-out fold, and twice the widest tested layer.

        With fewer samples than units, every unit is (on the calibration set) a linear
        combination of the others, and no test can see a unit's own contribution.
        """
        return max(10 * self.repeats, 2 * widest)

    def decide(self, context: PruningContext) -> MaskDecision:
        network = context.network
        tested = [g for g in network.groups if self.coupled == "prune" or not g.coupled]
        widths = {group.name: group.units for group in tested}
        if self.select_inputs:
            widths["the input"] = context.inputs[0].numel()
        widest = max(widths, key=widths.get)
        samples, needed = context.inputs.shape[0], self.minimum_samples(widths[widest])
        if samples < needed:
            raise ValueError(
                f"MIPP needs at least {needed} calibration samples here ({self.repeats} cross-fitting "
                f"folds of ≥ 10, and twice the widest tested layer, {widest!r} with {widths[widest]} "
                f"units); got {samples}. Pass more calibration data."
            )
        produced = {c.name: network.group_of_producer(c.name) for group in tested for c in group.consumers}
        raw_outputs = tuple(name for name, group in produced.items() if group is None)
        start = time.perf_counter()
        recorded = network.record(context.inputs, self.map_reduction, extra_outputs=raw_outputs)
        recorded = {name: values.to(context.device) for name, values in recorded.items()}
        seconds = {"recording": time.perf_counter() - start, "ordering": 0.0, "terc": 0.0}

        config = TercConfig(
            confidence=self.confidence,
            repeats=self.repeats,
            hidden_size=self.hidden_size,
            fit_iterations=self.fit_iterations,
            refit_iterations=self.refit_iterations,
            ordering_iterations=self.ordering_iterations,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
        )
        generator = torch.Generator().manual_seed(context.seed)
        total = sum(group.units for group in tested)
        if self.select_inputs:
            total += recorded["__input__"].shape[1]
        bar = context.progress(total=total, desc="MIPP")
        masks: dict[str, torch.Tensor] = {}
        layer_details: dict[str, dict] = {}

        def select(name: str, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            bar.set_description(f"MIPP {name}")
            result = terc_select(features, target, config, generator, on_feature=lambda *_: bar.update(1))
            bar.update(features.shape[1] - len(result.confidence_worse))  # untested features
            seconds["ordering"] += result.seconds_ordering
            seconds["terc"] += result.seconds_testing
            layer_details[name] = _describe(result)
            return result.keep

        try:
            for group in reversed(tested):
                targets = []
                for c in group.consumers:
                    target = produced[c.name]
                    if target is None:
                        targets.append(recorded[c.name])
                    elif target.name in masks:
                        targets.append(recorded[target.name][:, masks[target.name].to(context.device)])
                    else:  # not decided yet (read inside its own residual block) or kept whole
                        targets.append(recorded[target.name])
                masks[group.name] = select(group.name, recorded[group.name], torch.cat(targets, dim=1))
            input_mask = None
            if self.select_inputs:
                first = tested[0].name
                target = recorded[first][:, masks[first].to(context.device)]
                input_mask = select("__input__", recorded["__input__"], target)
        finally:
            bar.close()
        return MaskDecision(masks=masks, input_mask=input_mask, details={"seconds": seconds, "layers": layer_details})


def _describe(result: TercResult) -> dict:
    """JSON-friendly record of one layer's decisions."""
    return {
        "kept": result.keep.nonzero().flatten().tolist(),
        "test_order": result.order,
        "single_information": [round(v, 6) for v in result.single_information],
        "confidence_worse": {str(k): round(v, 6) for k, v in result.confidence_worse.items()},
        "constant_units": result.constant,
    }
