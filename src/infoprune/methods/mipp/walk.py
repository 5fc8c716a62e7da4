"""One MIPP walk from the output to the input (Alg. 1), with results memoised per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from infoprune.estimators.terc import TercResult, TercStart, terc_prepare, terc_test
from infoprune.methods.base import PruningContext
from infoprune.methods.mipp.state import WalkState, content_digest

if TYPE_CHECKING:
    from infoprune.methods.mipp.method import MIPP

FLATTEN = "flatten"
"""``spatial=FLATTEN``: every position of a map is its own column (App. E.2's "flattening")."""
SNAPSHOT_SECONDS = 180.0
"""Inside a layer, the state file is also written at most this often (after a unit's decision)."""


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
        """Run TERC on one layer, re-using its ordering and initial fit when they exist.

        Only the MLP engines' starts are kept (their initial fit is costly); the closed-form
        engine's start is cheap beside the copies of the layer's data it holds, which on a
        network of thousands of units would pile up over the walks of a budget search."""
        config = self.method.terc_config(confidence)
        start = self.starts.get(target_key)
        if start is None:
            generator = torch.Generator().manual_seed(_layer_seed(self.context.seed, index))
            start = terc_prepare(self.recorded[name], target, config, generator, self.width[name])
            self.iterations += start.iterations
            self.seconds["ordering"] += start.seconds
            if config.engine != "gaussian":
                self.starts[target_key] = start
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
        target_key = f"{name}|{content_digest(target)}"
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
