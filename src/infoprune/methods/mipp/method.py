"""The MIPP method object: settings, validation and :meth:`MIPP.decide` (the package docstring
describes the algorithm)."""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from infoprune.estimators.terc import DEFAULT_ENGINE, RIDGE, TercConfig
from infoprune.methods import register
from infoprune.methods.base import (
    CliOption, MaskDecision, PruningContext, PruningMethod, Resumable, check_fraction, check_positive_int,
)
from infoprune.methods.mipp.budget import search_confidence
from infoprune.methods.mipp.walk import Walk, check_spatial
from infoprune.network import MAP_REDUCTIONS, Budget, Group, Network, check_budgets

COUPLED = ("prune", "keep")
TRIMS = ("confidence", "cost")
DEFAULT_CONFIDENCE = 0.9


@register
class MIPP(PruningMethod):
    """Prune units that do not transfer entropy to the next layer, with ``confidence`` x.

    A unit is kept only if we are at least x sure that removing it makes the downstream
    layer harder to predict; higher x prunes more (§4.2.2, App. D.1). Iteration counts
    default to App. D.3.2 (1500 / 150 / 35; the paper uses 20 re-fit iterations for VGG).

    ``engine``: ``"gaussian"`` (default) runs the same test in closed form under a
    linear-Gaussian model, a ridge regression instead of the paper's MLP (transfer entropy =
    Granger causality for Gaussian variables; :mod:`infoprune.estimators.gaussian`, with
    ``ridge`` and ``copula``; a deviation from the paper, measured in docs/methods/mipp.md);
    ``"fast"`` is the paper's MLP test that stops fits once decided or converged, shares one
    "with" arm per kept set, removes blocks of clearly uninformative units at once and keeps
    clear-cut units by a linear screen (:mod:`infoprune.estimators.terc` names the five
    approximations); ``"reference"`` runs every MLP fit to its full length, as the paper.

    Budgets (instead of ``confidence``; :mod:`infoprune.network.budget`): ``flops=`` /
    ``params=``, what is kept (a fraction ≤ 1 of the full model's or an absolute count, as
    ITPruner's), or ``ratio=``, the fraction of the tested units *removed*, in (0, 1). MIPP
    then searches the confidence that lands the pruned model at most at the budget and within
    2 points of it (:func:`search_confidence`);
    ``max_passes`` bounds the number of MIPP walks. ``trim="cost"`` (the default) trims a
    walk over the budget by evidence per cost saved instead of by confidence alone
    (:func:`trim_by_cost`), and ``top_up=True`` (the default) then spends what the budget has
    left on removed units, most sure first, each that still fits (:func:`top_up`). Both are
    ours (budgets are not in the paper); ``trim="confidence", top_up=False`` is the plain
    search-and-trim finish. Measured on LeNet-5 at 10 / 25 / 50 % of the FLOPs (2 seeds) they
    re-train +0.7 / +0.7 / +0.05 points higher (docs/methods/mipp.md, "Budgets at high sparsity").

    ``coupled``: ``"prune"`` tests every group; ``"keep"`` leaves groups with several
    producers (residual streams) whole, as App. D.3.2.

    ``spatial``: a conv filter's map as g × g cells (an int g ≥ 1; 1 is one number per map,
    the paper's choice) or ``"flatten"`` (every position). ``input_spatial``: the grid of the
    first layer's maps that input features are tested against with ``select_inputs=True``
    (default 7 × 7 cells, so that a pixel's information about its neighbourhood is visible).
    ``input_patch=p`` tests p × p squares of pixels (all channels) as one feature each, kept
    or removed together; ``input_confidence`` tests the input features at their own
    confidence (default: the layers' confidence).

    ``checkpoint``: a state file written after every layer; a run with the same settings,
    model, data and seed continues from it and gives exactly the masks of an uninterrupted
    run. A state file from other settings is refused.
    """

    name = "mipp"
    cli_options = (
        CliOption("confidence", "confidence x needed to keep a unit (instead of a budget)"),
        CliOption("select_inputs", "also select input features (App. E.1)", bool),
    )
    resumable = Resumable("checkpoint", "finished MIPP layers")

    def __init__(
        self,
        confidence: float | None = None,
        flops: float | None = None,
        params: float | None = None,
        ratio: float | None = None,
        engine: str = DEFAULT_ENGINE,
        map_reduction: str = "l1",
        spatial: int | str = 1,
        select_inputs: bool = False,
        input_spatial: int | str = 7,
        input_patch: int = 1,
        input_confidence: float | None = None,
        coupled: str = "prune",
        hidden_size: int = 256,
        fit_iterations: int = 1500,
        refit_iterations: int = 150,
        ordering_iterations: int = 35,
        repeats: int = 5,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        max_passes: int = 8,
        top_up: bool = True,
        trim: str = "cost",
        checkpoint: str | Path | None = None,
        ridge: float = RIDGE,
        copula: bool = False,
    ) -> None:
        budgets = check_budgets(self.name, ("flops", "params", "ratio"), required=False, flops=flops, params=params, ratio=ratio)
        if budgets and confidence is not None:
            raise ValueError(
                f"Give MIPP either confidence= or a budget ({next(iter(budgets))}=), not both: with a budget "
                "MIPP searches the confidence itself."
            )
        self.confidence = None if budgets else check_fraction("confidence", DEFAULT_CONFIDENCE if confidence is None else confidence)
        self.flops, self.params, self.ratio = (budgets.get(argument) for argument in ("flops", "params", "ratio"))
        if map_reduction not in MAP_REDUCTIONS:
            raise ValueError(f"map_reduction must be one of {MAP_REDUCTIONS}, got {map_reduction!r}.")
        self.map_reduction = map_reduction
        self.spatial = check_spatial("spatial", spatial)
        self.input_spatial = check_spatial("input_spatial", input_spatial)
        self.input_patch = check_positive_int("input_patch", input_patch)
        self.input_confidence = None if input_confidence is None else check_fraction("input_confidence", input_confidence)
        if coupled not in COUPLED:
            raise ValueError(f"coupled must be one of {COUPLED}, got {coupled!r}.")
        self.coupled = coupled
        self.select_inputs = bool(select_inputs)
        self.max_passes = check_positive_int("max_passes", max_passes)
        self.top_up = bool(top_up)
        if trim not in TRIMS:
            raise ValueError(f"trim must be one of {TRIMS}, got {trim!r}.")
        self.trim = trim
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.test = TercConfig(
            confidence=self.confidence or DEFAULT_CONFIDENCE, repeats=repeats, hidden_size=hidden_size,
            fit_iterations=fit_iterations, refit_iterations=refit_iterations, ordering_iterations=ordering_iterations,
            batch_size=batch_size, learning_rate=learning_rate, engine=engine, ridge=ridge, copula=copula,
        )
        """The test's settings (one owner, validated there); each walk runs it at its own confidence."""

    def config(self) -> dict[str, Any]:
        """The method's parameters, the test's among them (for the JSON summary and the state file)."""
        own = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "test"}
        test = {f.name: getattr(self.test, f.name) for f in fields(self.test) if f.name != "confidence"}
        return {**own, **test}

    def minimum_samples(self, widest: int) -> int:
        """Samples needed: ≥ 10 per held-out fold, and twice the widest tested layer.

        With fewer samples than units, every unit is (on the calibration set) a linear
        combination of the others, and no test can see a unit's own contribution.
        """
        return max(10 * self.test.repeats, 2 * widest)

    def terc_config(self, confidence: float) -> TercConfig:
        """The test's settings at ``confidence``."""
        return replace(self.test, confidence=confidence)

    def decide(self, context: PruningContext) -> MaskDecision:
        self._check_samples(context)
        budget = None if self.confidence is not None else self._budget(context)
        start = time.perf_counter()
        walk = Walk(self, context)
        walk.seconds["recording"] = time.perf_counter() - start
        if budget is None:
            outcome = walk.run(self.confidence)
            details: dict[str, Any] = {}
        else:
            outcome, details = search_confidence(walk, budget)
            if self.select_inputs:
                walk.select_inputs(outcome)
        details.update(
            confidence=outcome.confidence, seconds=walk.seconds, iterations=walk.iterations, layers=outcome.details
        )
        return MaskDecision(masks=outcome.masks, input_mask=outcome.input_mask, details=details)

    def tested_groups(self, network: Network) -> list[Group]:
        """The groups MIPP decides, in forward order (all, or with ``coupled="keep"`` the
        groups of a single producer); the others stay whole."""
        return [group for group in network.groups if self.coupled == "prune" or not group.coupled]

    def _check_samples(self, context: PruningContext) -> None:
        widths = {group.name: group.units for group in self.tested_groups(context.network)}
        if self.select_inputs:
            widths["the input"] = context.inputs[0].numel()
        widest = max(widths, key=widths.get)
        samples, needed = context.inputs.shape[0], self.minimum_samples(widths[widest])
        if samples < needed:
            raise ValueError(
                f"MIPP needs at least {needed} calibration samples here ({self.test.repeats} cross-fitting "
                f"folds of ≥ 10, and twice the widest tested layer, {widest!r} with {widths[widest]} "
                f"units); got {samples}. Pass more calibration data."
            )

    def _budget(self, context: PruningContext) -> Budget:
        """The budget on the tested groups' widths (groups left whole count at full width; a
        ``ratio`` counts the tested groups' units), refused when every tested group at one unit
        still exceeds it."""
        tested = self.tested_groups(context.network)
        argument = next(a for a in ("flops", "params", "ratio") if getattr(self, a) is not None)
        budget = Budget.on(context.network, argument, getattr(self, argument), tested)
        budget.check_reachable(
            {group.name: 1 for group in tested}, "with every tested group at one unit (MIPP never empties a group; "
            "groups left whole, e.g. by coupled='keep', stay whole)"
        )
        return budget

    def settings(self) -> dict[str, Any]:
        """Everything that changes the decisions (for the state file's check)."""
        return {k: v for k, v in self.config().items() if k not in ("checkpoint", "max_passes")}
