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
``map_reduction``, App. E.2; L1 by default). ``spatial=g`` reduces each map per cell of a
g × g grid instead (``"flatten"``: every position, App. E.2's alternative): a filter is then a
group of g² columns that TERC keeps or removes together, and a layer tested against it sees
g² columns per kept filter (:func:`check_spatial`). The units are those of coupled channel groups
(:mod:`infoprune.network.groups`): a residual stream's channel is one feature, read where its
consumers read it. ``coupled="prune"`` (the default) tests every group, so residual streams,
depthwise convs and SE-gated channels shrink too; ``coupled="keep"`` leaves every group with
more than one producer whole, as the paper does for ResNets (App. D.3.2: "skip connections in
ResNets remain unaffected").

Beyond the paper: a FLOPs / params / units budget instead of a confidence (the confidence
is searched, :func:`search_confidence`), and a state file that makes a long run resumable
(:class:`WalkState`). Each layer's test draws from its own generator seeded by (seed,
layer), so a layer's decisions depend only on its inputs and settings, not on what ran
before it in the process.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from infoprune.estimators.terc import ENGINES, TercConfig, TercProgress, TercResult, TercStart, terc_prepare, terc_test
from infoprune.io import atomic_write_bytes
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_fraction, check_positive_int
from infoprune.network import Group, Network, check_target, resolve_target
from infoprune.validation import check_positive_number

MAP_REDUCTIONS = ("l1", "l2", "mean", "std")
FLATTEN = "flatten"
"""``spatial=FLATTEN``: every position of a map is its own column (App. E.2's "flattening")."""
COUPLED = ("prune", "keep")
TRIMS = ("confidence", "cost")
DEFAULT_CONFIDENCE = 0.9
BUDGET_TOLERANCE = 0.02
"""A budget is met when the cost is at most the target and at least target − 2 % of the full cost."""
SNAPSHOT_SECONDS = 180.0
"""Inside a layer, the state file is also written at most this often (after a unit's decision)."""
SEARCH_RANGE = (0.5, 1 - 1e-6)
"""The confidences a budget search may use (the lowest is App. D.1's x₀)."""


@register
class MIPP(PruningMethod):
    """Prune units that do not transfer entropy to the next layer, with ``confidence`` x.

    A unit is kept only if we are at least x sure that removing it makes the downstream
    layer harder to predict; higher x prunes more (§4.2.2, App. D.1). Iteration counts
    default to App. D.3.2 (1500 / 150 / 35; the paper uses 20 re-fit iterations for VGG).

    ``engine``: ``"fast"`` (default) stops fits once decided or converged, shares one "with"
    arm per kept set, removes blocks of clearly uninformative units at once and keeps
    clear-cut units by a linear screen (:mod:`infoprune.estimators.terc` names the five
    approximations); ``"reference"`` runs every fit to its full length, as the paper.

    Budgets (instead of ``confidence``): ``flops=`` / ``params=`` (a fraction ≤ 1 of the
    full model's or an absolute count, as ITPruner's) or ``ratio=`` (the fraction of
    prunable units to remove, in (0, 1)). MIPP then searches the confidence that lands the
    pruned model at most at the budget and within 2 points of it (:func:`search_confidence`);
    ``max_passes`` bounds the number of MIPP walks. ``trim="cost"`` (the default) trims a
    walk over the budget by evidence per cost saved instead of by confidence alone
    (:func:`trim_by_cost`), and ``top_up=True`` (the default) then spends what the budget has
    left on removed units, most sure first, each that still fits (:func:`top_up`). Both are
    ours (budgets are not in the paper); ``trim="confidence", top_up=False`` is the plain
    search-and-trim finish. Measured on LeNet-5 at 10 / 25 / 50 % of the FLOPs (2 seeds) they
    re-train +0.7 / +0.7 / +0.05 points higher (README, "Budgets at high sparsity").

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

    def __init__(
        self,
        confidence: float | None = None,
        flops: float | None = None,
        params: float | None = None,
        ratio: float | None = None,
        engine: str = "fast",
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
    ) -> None:
        budgets = {k: v for k, v in (("flops", flops), ("params", params), ("ratio", ratio)) if v is not None}
        if len(budgets) > 1:
            raise ValueError(f"Give MIPP one budget, got {sorted(budgets)}; pass only one of flops=, params=, ratio=.")
        if budgets and confidence is not None:
            raise ValueError(
                f"Give MIPP either confidence= or a budget ({next(iter(budgets))}=), not both: with a budget "
                "MIPP searches the confidence itself."
            )
        self.confidence = None if budgets else check_fraction("confidence", DEFAULT_CONFIDENCE if confidence is None else confidence)
        self.flops = None if flops is None else check_target("FLOPs", flops)
        self.params = None if params is None else check_target("params", params)
        self.ratio = None if ratio is None else check_fraction("ratio", ratio)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
        self.engine = engine
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
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.fit_iterations = check_positive_int("fit_iterations", fit_iterations)
        self.refit_iterations = check_positive_int("refit_iterations", refit_iterations)
        self.ordering_iterations = check_positive_int("ordering_iterations", ordering_iterations)
        self.repeats = check_positive_int("repeats", repeats, minimum=2)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.learning_rate = check_positive_number("learning_rate", learning_rate)
        self.max_passes = check_positive_int("max_passes", max_passes)
        self.top_up = bool(top_up)
        if trim not in TRIMS:
            raise ValueError(f"trim must be one of {TRIMS}, got {trim!r}.")
        self.trim = trim
        self.checkpoint = None if checkpoint is None else str(checkpoint)

    def minimum_samples(self, widest: int) -> int:
        """Samples needed: ≥ 10 per held-out fold, and twice the widest tested layer.

        With fewer samples than units, every unit is (on the calibration set) a linear
        combination of the others, and no test can see a unit's own contribution.
        """
        return max(10 * self.repeats, 2 * widest)

    def terc_config(self, confidence: float) -> TercConfig:
        return TercConfig(
            confidence=confidence,
            repeats=self.repeats,
            hidden_size=self.hidden_size,
            fit_iterations=self.fit_iterations,
            refit_iterations=self.refit_iterations,
            ordering_iterations=self.ordering_iterations,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            engine=self.engine,
        )

    def decide(self, context: PruningContext) -> MaskDecision:
        self._check_samples(context)
        start = time.perf_counter()
        walk = Walk(self, context)
        walk.seconds["recording"] = time.perf_counter() - start
        if self.confidence is not None:
            outcome = walk.run(self.confidence)
            details: dict[str, Any] = {}
        else:
            outcome, details = search_confidence(walk, self._budget(context))
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
                f"MIPP needs at least {needed} calibration samples here ({self.repeats} cross-fitting "
                f"folds of ≥ 10, and twice the widest tested layer, {widest!r} with {widths[widest]} "
                f"units); got {samples}. Pass more calibration data."
            )

    def _budget(self, context: PruningContext) -> CostBudget:
        """The budget as a cost of the tested groups' widths (the forms of
        :mod:`infoprune.network.costs`; groups left whole count at full width)."""
        network = context.network
        units = {group.name: group.units for group in self.tested_groups(network)}
        if self.ratio is not None:
            total = sum(units.values())
            return CostBudget("units", lambda w: float(sum(w.values())), float(total), (1 - self.ratio) * total, units)
        what, target, cost = (
            ("FLOPs", self.flops, network.flops_cost()) if self.flops is not None else ("params", self.params, network.params_cost())
        )
        return CostBudget(what, cost.at_widths, cost.full, resolve_target(cost, target, what), units)

    def settings(self) -> dict[str, Any]:
        """Everything that changes the decisions (for the state file's check)."""
        return {k: v for k, v in self.config().items() if k not in ("checkpoint", "max_passes")}


# ---------------------------------------------------------------------------------------------
# One walk from the output to the input (Alg. 1), with results memoised per layer


@dataclass
class WalkOutcome:
    """The masks of one MIPP pass at ``confidence`` and the per-layer records."""

    confidence: float
    masks: dict[str, torch.Tensor]
    input_mask: torch.Tensor | None
    details: dict[str, dict]


def check_spatial(name: str, value: int | str) -> int | str:
    """A spatial grid: an int ≥ 1 (g × g cells per map) or ``"flatten"``."""
    if value == FLATTEN:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a grid size, an integer ≥ 1 (1: one value per map), or {FLATTEN!r} (every "
            f"position), got {value!r}."
        )
    return value


def input_patches(shape: torch.Size, patch: int) -> torch.Tensor:
    """``(patches, C · patch²)``: the flattened input's indices of each ``patch`` × ``patch``
    square over all channels, squares in row-major order (one column per feature if 1)."""
    if patch == 1:
        return torch.arange(math.prod(shape))[:, None]
    if len(shape) != 3 or shape[1] % patch or shape[2] % patch:
        raise ValueError(
            f"input_patch={patch} needs inputs of shape (channels, height, width) with height and width "
            f"divisible by {patch}; got {tuple(shape)}. Use input_patch=1 (one feature per input value)."
        )
    channels, height, width = shape
    index = torch.arange(math.prod(shape)).reshape(channels, height // patch, patch, width // patch, patch)
    return index.permute(1, 3, 0, 2, 4).reshape((height // patch) * (width // patch), -1)


def _grid(spatial: int | str) -> int | None:
    """:func:`infoprune.network.activations.reduce_on_grid`'s ``grid`` for a ``spatial`` setting."""
    return None if spatial == FLATTEN else int(spatial)


class Walk:
    """MIPP's walk over the tested groups; runs it at any confidence, re-using what it can.

    A layer's result depends only on (layer, kept downstream units, confidence), because
    each layer seeds its own generator; results are memoised on that key (and written to the
    state file when there is one). The ordering and initial fit (:class:`TercStart`) depend
    only on (layer, kept downstream units) and are shared across confidences.
    """

    def __init__(self, method: MIPP, context: PruningContext) -> None:
        self.method, self.context = method, context
        network = context.network
        self.groups = method.tested_groups(network)
        self.produced = {c.name: network.group_of_producer(c.name) for group in self.groups for c in group.consumers}
        raw_outputs = tuple(name for name, produced in self.produced.items() if produced is None)
        recorded = network.record(context.inputs, method.map_reduction, extra_outputs=raw_outputs, grid=_grid(method.spatial))
        self.recorded = {name: values.to(context.device) for name, values in recorded.items()}
        self.width = {group.name: self.recorded[group.name].shape[1] // group.units for group in self.groups}
        self.width["__input__"] = 1
        if method.select_inputs:
            self.patches = input_patches(context.inputs.shape[1:], method.input_patch)
            self.recorded["__input__"] = self.recorded["__input__"][:, self.patches.flatten().to(context.device)]
            self.width["__input__"] = self.patches.shape[1]
            first = self.groups[0].name
            pixels_target = network.record(context.inputs, method.map_reduction, grid=_grid(method.input_spatial))[first]
            self.input_target = pixels_target.to(context.device)
        self.starts: dict[str, TercStart] = {}
        self.seconds = {"recording": 0.0, "ordering": 0.0, "terc": 0.0}
        self.iterations = 0
        self.passes = 0
        self.state = WalkState.open(method.checkpoint, method.settings(), context) if method.checkpoint else WalkState()

    def run(self, confidence: float, inputs: bool = True) -> WalkOutcome:
        """One walk at ``confidence``; with ``inputs`` also the input features (``select_inputs``)."""
        context = self.context
        self.passes += 1
        total = sum(group.units for group in self.groups)
        if inputs and self.method.select_inputs:
            total += self.patches.shape[0]
        bar = context.progress(total=total, desc=f"MIPP x={confidence:.6g}")
        outcome = WalkOutcome(confidence, {}, None, {})
        try:
            for index in reversed(range(len(self.groups))):
                group = self.groups[index]
                targets = [self._target(c.name, outcome.masks) for c in group.consumers]
                outcome.masks[group.name] = self._layer(index, group.name, torch.cat(targets, dim=1), confidence, outcome, bar)
            if inputs and self.method.select_inputs:
                self._select_inputs(outcome, bar)
        finally:
            bar.close()
        return outcome

    def select_inputs(self, outcome: WalkOutcome) -> None:
        """Select ``outcome``'s input features against its first layer (after a budget search,
        whose walks skip them: they do not change the cost)."""
        bar = self.context.progress(total=self.patches.shape[0], desc="MIPP inputs")
        try:
            self._select_inputs(outcome, bar)
        finally:
            bar.close()

    def _select_inputs(self, outcome: WalkOutcome, bar: Any) -> None:
        """App. E.1: test the input features (pixels or patches) against the kept first-layer
        units, on the ``input_spatial`` grid; sets ``outcome.input_mask`` over input values."""
        first = self.groups[0].name
        cells = self.input_target.shape[1] // self.groups[0].units
        target = self.input_target[:, outcome.masks[first].to(self.context.device).repeat_interleave(cells)]
        x = outcome.confidence if self.method.input_confidence is None else self.method.input_confidence
        kept = self._layer(len(self.groups), "__input__", target, x, outcome, bar)
        outcome.input_mask = torch.zeros(self.patches.numel(), dtype=torch.bool)
        outcome.input_mask[self.patches[kept.cpu()].flatten()] = True

    def _target(self, consumer: str, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """What a tested group's consumer is read as: the kept units of the group it produces
        (all of them while that group is undecided or whole), or its raw output."""
        produced = self.produced[consumer]
        if produced is None:
            return self.recorded[consumer]
        if produced.name in masks:
            kept = masks[produced.name].to(self.context.device).repeat_interleave(self.width[produced.name])
            return self.recorded[produced.name][:, kept]
        return self.recorded[produced.name]

    def _test(
        self, index: int, name: str, target: torch.Tensor, target_key: str, confidence: float, bar: Any
    ) -> tuple[torch.Tensor, dict]:
        """Run TERC on one layer, re-using its ordering and initial fit when they exist."""
        config = self.method.terc_config(confidence)
        if target_key not in self.starts:
            generator = torch.Generator().manual_seed(_layer_seed(self.context.seed, index))
            self.starts[target_key] = terc_prepare(self.recorded[name], target, config, generator, self.width[name])
            self.iterations += self.starts[target_key].iterations
            self.seconds["ordering"] += self.starts[target_key].seconds
        start = self.starts[target_key]
        key = f"{target_key}|x={confidence!r}"
        resume = self.state.get_progress(key)
        bar.update(0 if resume is None else resume.tested)
        result = terc_test(
            start, config, on_feature=lambda *_: bar.update(1), resume=resume,
            snapshot=lambda progress: self.state.put_progress(key, progress), snapshot_seconds=SNAPSHOT_SECONDS,
        )
        self.iterations += result.iterations - (start.iterations if resume is None else resume.iterations)
        self.seconds["terc"] += result.seconds_testing
        return result.keep, _describe(result)

    def _layer(
        self, index: int, name: str, target: torch.Tensor, confidence: float, outcome: WalkOutcome, bar: Any
    ) -> torch.Tensor:
        """One layer's TERC (memoised); records its details in ``outcome``."""
        units = self.recorded[name].shape[1] // self.width[name]
        target_key = f"{name}|{_digest(target)}"
        key = f"{target_key}|x={confidence!r}"
        bar.set_description(f"MIPP {name}")
        stored = self.state.get(key)
        if stored is None:
            stored = self._test(index, name, target, target_key, confidence, bar)
            self.state.put(key, *stored)
            bar.update(units - len(stored[1]["confidence_worse"]))  # the untested units
        else:
            bar.update(units)
        outcome.details[name] = stored[1]
        return stored[0]


def _layer_seed(seed: int, index: int) -> int:
    """Each layer's own generator seed (stable across processes, unlike ``hash``)."""
    return (seed * 1_000_003 + index) % (2**63)


def _digest(values: torch.Tensor) -> str:
    """A short content hash of a tensor (which downstream units a layer is tested against)."""
    array = values.detach().cpu().contiguous()
    return hashlib.sha256(array.numpy().tobytes() + str(tuple(array.shape)).encode()).hexdigest()[:16]


def _describe(result: TercResult) -> dict:
    """JSON-friendly record of one layer's decisions."""
    return {
        "kept": result.keep.nonzero().flatten().tolist(),
        "test_order": result.order,
        "single_information": [round(v, 6) for v in result.single_information],
        "confidence_worse": {str(k): round(v, 6) for k, v in result.confidence_worse.items()},
        "refit_iterations_run": {str(k): v for k, v in result.stopped_at.items()},
        "constant_units": result.constant,
        "iterations": result.iterations,
    }


# ---------------------------------------------------------------------------------------------
# Resumable runs


class WalkState:
    """Finished layers of a MIPP run: ``{key: (mask, details)}``, and with a ``path`` on disk.

    Written atomically after every layer (and inside a layer every ``SNAPSHOT_SECONDS``, the
    unfinished TERC as ``key|partial``), with what made it. Opening it checks that the method's settings, the
    seed, the model's weights and the calibration data are those it was written with, and
    refuses it with a message naming what differs otherwise.
    """

    VERSION = 1

    def __init__(self, path: Path | None = None, identity: dict[str, Any] | None = None, layers: dict | None = None) -> None:
        self.path, self.identity, self.layers = path, identity or {}, layers or {}

    @classmethod
    def open(cls, path: str | Path, settings: dict[str, Any], context: PruningContext) -> WalkState:
        path = Path(path)
        identity = {
            "version": cls.VERSION,
            "settings": json.loads(json.dumps(settings)),
            "seed": context.seed,
            "model": _digest_module(context.model),
            "data": _digest(context.inputs),
        }
        if not path.exists():
            return cls(path, identity, {})
        try:
            stored = torch.load(path, weights_only=True)
            old = json.loads(stored["identity"])
        except Exception as error:  # unreadable or foreign file: never reuse it silently
            raise ValueError(
                f"The MIPP state file {path} cannot be read ({type(error).__name__}): it is not one, or it is "
                "damaged; delete it to start afresh."
            ) from None
        if old != identity:
            differ = sorted(k for k in identity if old.get(k) != identity[k])
            if "settings" in differ:
                a, b = old.get("settings", {}), identity["settings"]
                differ += [f"settings.{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(b) if a.get(k) != b.get(k)]
            raise ValueError(
                f"The MIPP state file {path} was written by a run with other settings ({'; '.join(differ)}); "
                "delete it, or pass another checkpoint=, to start afresh."
            )
        return cls(path, identity, stored["layers"])

    def get(self, key: str) -> tuple[torch.Tensor, dict] | None:
        entry = self.layers.get(key)
        return None if entry is None else (entry["mask"], json.loads(entry["details"]))

    def put(self, key: str, mask: torch.Tensor, details: dict) -> None:
        self.layers[key] = {"mask": mask.cpu(), "details": json.dumps(details)}
        self.layers.pop(f"{key}|partial", None)
        self._write()

    def get_progress(self, key: str) -> TercProgress | None:
        """A layer's unfinished TERC, snapshotted by :meth:`put_progress`."""
        entry = self.layers.get(f"{key}|partial")
        if entry is None:
            return None
        decisions = json.loads(entry["decisions"])
        return TercProgress(
            int(entry["tested"]), entry["keep"], list(entry["weights"]), entry["generator"],
            {int(k): v for k, v in decisions["confidence_worse"].items()},
            {int(k): v for k, v in decisions["stopped_at"].items()}, decisions["iterations"],
            decisions["block"], decisions["arm_steps"], tuple(decisions["screen"]),
        )

    def put_progress(self, key: str, progress: TercProgress) -> None:
        decisions = {"confidence_worse": progress.confidence_worse, "stopped_at": progress.stopped_at,
                     "iterations": progress.iterations, "block": progress.block, "arm_steps": progress.arm_steps,
                     "screen": progress.screen}
        self.layers[f"{key}|partial"] = {
            "tested": torch.tensor(progress.tested), "keep": progress.keep, "weights": progress.weights,
            "generator": progress.generator_state, "decisions": json.dumps(decisions),
        }
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        state = {"identity": json.dumps(self.identity), "layers": self.layers}
        atomic_write_bytes(self.path, lambda f: torch.save(state, f))


def _digest_module(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Budgets: search the confidence, then trim or fill to land on the budget


@dataclass(frozen=True)
class CostBudget:
    """``cost(widths) ≤ target``, with ``full`` the unpruned model's cost (``units``: full widths)."""

    what: str
    cost: Callable[[dict[str, int]], float]
    full: float
    target: float
    units: dict[str, int]

    def of(self, masks: dict[str, torch.Tensor]) -> float:
        return self.cost({name: int(masks[name].sum()) if name in masks else u for name, u in self.units.items()})

    def met(self, cost: float) -> bool:
        return self.target - BUDGET_TOLERANCE * self.full <= cost <= self.target

    def check_reachable(self) -> None:
        least = self.cost({name: 1 for name in self.units})
        if self.target < least:
            raise ValueError(
                f"The {self.what} budget {self.target:,.0f} ({self.target / self.full:.1%} of the full model's "
                f"{self.full:,.0f}) cannot be met: the smallest reachable is {least:,.0f} {self.what} "
                f"({least / self.full:.1%}), with every tested group at one unit (MIPP never empties a group; "
                "groups left whole, e.g. by coupled='keep', stay whole). Raise the budget."
            )


def search_confidence(walk: Walk, budget: CostBudget) -> tuple[WalkOutcome, dict[str, Any]]:
    """The MIPP pass whose cost lands within 2 points under ``budget``, and how it was found.

    The search runs on u = −log₁₀(1 − x) (x = 0.9, 0.99, 0.999 are u = 1, 2, 3) from x = 0.9.
    After each walk, the confidence it *implies* is tried next: a unit stays iff its TERC
    confidence is ≥ x, so the x at which trimming (or filling) the walk's masks by their
    confidences lands on the budget predicts the walk that will (a secant step that ignores
    how removals change later tests). The prediction is kept inside the bracket of walks over
    and under the budget, and replaced by bisection when it falls outside. After
    ``max_passes`` walks without landing, the closest one is trimmed or filled
    (:func:`trim_or_fill`).
    """
    budget.check_reachable()
    low, high = (-math.log10(1 - x) for x in SEARCH_RANGE)
    under: tuple[float, WalkOutcome] | None = None  # the costliest pass at or under the target
    over: tuple[float, WalkOutcome] | None = None  # the cheapest pass over it
    u, trace = 1.0, []
    for _ in range(walk.method.max_passes):
        outcome = walk.run(1 - 10.0**-u, inputs=False)
        cost = budget.of(outcome.masks)
        trace.append({"confidence": outcome.confidence, budget.what: cost})
        if budget.met(cost):
            return top_up(outcome, budget) if walk.method.top_up else outcome, _search_details(budget, walk, trace, "search")
        if cost > budget.target:
            low = u
            over = (cost, outcome) if over is None or cost < over[0] else over
        else:
            high = u
            under = (cost, outcome) if under is None or cost > under[0] else under
        _masks, boundary = trim_or_fill(outcome, budget)
        step = 0.01 if cost > budget.target else -0.01  # just past the boundary unit's confidence
        guess = -math.log10(1 - min(boundary, SEARCH_RANGE[1])) + step if 0 < boundary < 1 else math.nan
        if low < guess < high and abs(guess - u) > 1e-3:
            u = guess
        elif under is not None and over is not None and high - low > 1e-3:
            u = (low + high) / 2
        elif (under is None or over is None) and low < u + (1 if over is not None else -1) < high:
            u += 1 if over is not None else -1  # no bracket yet and no usable guess: step u by 1
        else:
            break  # nothing left to try: trimming or filling lands it
    closest = min((p for p in (under, over) if p is not None), key=lambda p: abs(p[0] - budget.target))
    start = closest[1]
    if walk.method.trim == "cost" and closest is over:
        start = replace(start, masks=trim_by_cost(start, budget))
    masks, _boundary = trim_or_fill(start, budget)
    finish = "trim" if closest is over else "fill"
    outcome = replace(closest[1], masks=masks)
    return top_up(outcome, budget) if walk.method.top_up else outcome, _search_details(budget, walk, trace, finish)


def _search_details(budget: CostBudget, walk: Walk, trace: list[dict], finish: str) -> dict[str, Any]:
    return {
        "budget": {"what": budget.what, "target": budget.target, "full": budget.full},
        "passes": walk.passes,
        "search": trace,
        "finish": finish,
    }


def trim_or_fill(outcome: WalkOutcome, budget: CostBudget) -> tuple[dict[str, torch.Tensor], float]:
    """Land ``outcome``'s masks within the budget by MIPP's confidences; returns the masks and
    the confidence of the last unit changed (nan when none was).

    Over budget: remove kept units, least sure first (lowest ``confidence_worse``; a unit
    kept untested, a layer's last, counts as sure), never a layer's last unit. Under by
    more than 2 points: add back removed units, most sure first, while the cost stays at
    or under the target. Approximation: layers upstream of a changed layer were tested
    against its pass's masks, not the trimmed ones.
    """
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    scores = _unit_scores(outcome)
    cost, boundary = budget.of(masks), math.nan
    if cost > budget.target:
        for score, name, unit in sorted(s for s in scores if masks[s[1]][s[2]]):
            if cost <= budget.target:
                break
            if masks[name].sum() > 1:
                masks[name][unit] = False
                cost, boundary = budget.of(masks), score
    for score, name, unit in sorted((s for s in scores if not masks[s[1]][s[2]]), reverse=True):
        if budget.met(cost):
            break
        masks[name][unit] = True
        trial = budget.of(masks)
        if trial > budget.target:
            masks[name][unit] = False
        else:
            cost, boundary = trial, score
    return masks, boundary


def _unit_scores(outcome: WalkOutcome) -> list[tuple[float, str, int]]:
    """(TERC confidence, group, unit) of every unit of ``outcome``'s masks; an untested unit
    counts as sure (inf) when kept (a layer's last) and as −inf when removed (constant)."""
    scores = []
    for name, record in outcome.details.items():
        if name not in outcome.masks:
            continue
        mask, tested = outcome.masks[name], {int(k): v for k, v in record["confidence_worse"].items()}
        scores += [(tested.get(unit, math.inf if mask[unit] else -math.inf), name, unit) for unit in range(len(mask))]
    return scores


def top_up(outcome: WalkOutcome, budget: CostBudget) -> WalkOutcome:
    """``outcome`` with removed units added back, most sure first, each one that keeps the cost
    at or under the target (beyond the paper: the budget's room, up to 2 points, is spent on
    the units it can still pay for, mostly cheap dense-layer units at a FLOPs budget)."""
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    removed = (s for s in _unit_scores(outcome) if not masks[s[1]][s[2]] and s[0] > -math.inf)  # never a constant unit
    for _score, name, unit in sorted(removed, reverse=True):
        masks[name][unit] = True
        if budget.of(masks) > budget.target:
            masks[name][unit] = False
    return replace(outcome, masks=masks)


def trim_by_cost(outcome: WalkOutcome, budget: CostBudget) -> dict[str, torch.Tensor]:
    """``outcome``'s masks trimmed to the budget, removing first the kept unit with the least
    evidence per cost saved (a greedy knapsack; beyond the paper).

    A unit's evidence is its TERC confidence in nines, −log₁₀(1 − c); the saving is what
    removing one unit of its group saves at the current widths (recomputed after each
    removal). Confidence alone (:func:`trim_or_fill`) removes the least sure units, which at
    a FLOPs budget are mostly dense-layer units that save little each, so it empties the
    dense layers to pay for a conv filter; this removes the filter. Never a group's last unit.
    """
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    nines = {(name, unit): -math.log10(max(1.0 - score, 1e-12)) for score, name, unit in _unit_scores(outcome)}
    while budget.of(masks) > budget.target:
        cost, choice = budget.of(masks), None
        for name, mask in masks.items():
            if mask.sum() <= 1:
                continue
            unit = min(mask.nonzero().flatten().tolist(), key=lambda u: nines[(name, u)])
            mask[unit] = False
            saving = cost - budget.of(masks)
            mask[unit] = True
            ratio = nines[(name, unit)] / saving if saving > 0 else math.inf
            choice = (ratio, name, unit) if choice is None or ratio < choice[0] else choice
        if choice is None or choice[0] == math.inf:
            break
        masks[choice[1]][choice[2]] = False
    return masks
