"""TERC's fast MLP engine (``engine="fast"``): the reference protocol of
:mod:`infoprune.estimators.terc`, approximated in five named ways.

1. *Converged initial fit*: it stops once two held-out checks (every ``FIT_CHECK``) improved
   the loss by less than ``FIT_TOLERANCE``.
2. *Group-sequential re-fit*: the arms are evaluated at 40, 80, … and ``refit_iterations``
   (:func:`refit_looks`); a unit is kept early once two consecutive looks pass a threshold that
   spends a tenth of 1 − x over the early looks, and removed early below ``FUTILITY``
   (:func:`look_thresholds`, :func:`~infoprune.estimators.terc_protocol.sequential_decision`).
3. *One "with" arm per kept set*: the "with" arm re-fits the current predictors on the current
   kept set, in their own parameterisation (not the unit's residual one), on one mini-batch
   stream per kept set (:func:`_batch_stream`), and after a keep the predictors stay as they
   were (the reference continues from the re-fitted "with" arm). A keep changes nothing, so
   consecutive tests share one "with" arm and a keep costs one arm instead of two.
4. *Block removal*: the next k units in MI order are tested together (all masked, weights of
   each moved onto the units that stay); if the block's confidence is below ``BLOCK_REMOVE``
   (its loss did not get worse on average) all k go and k doubles (to ``MAX_BLOCK``), otherwise
   the block is split. By the chain rule, I(B; Y | R) = Σᵢ I(bᵢ; Y | R, b_{i+1..k}), so a block
   carrying no information means each sequential test would, in the population, remove. What
   changes: a block's single test replaces k tests, so a unit whose own gap is small but
   non-zero can go with its block; requiring mean gap ≤ 0 (not merely "not significant at x")
   is what keeps this rare: on LeNet-5's fc2 at x = 0.9, blocks removed at confidence < x kept
   52 of 84 units where single tests kept 62; with ``BLOCK_REMOVE`` = 0.5 they kept 60.
5. *Linear screen*: a unit is kept without any re-fit when its closed-form ridge leave-one-unit-
   out loss increase (:func:`linear_loss_increase`) is ≥ ``SCREEN_MARGIN`` × that of every unit
   the MLP test removed in this layer so far and the MLP test has kept ≥ ``SCREEN_EVIDENCE``
   units with a smaller one (calibrated on the layer's own tests; its confidence is recorded
   as 1). On fc2 → logits the linear increase orders the MLP's decisions almost perfectly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from infoprune.estimators.predictive import CrossFitSplit, PredictorEnsemble, TrainingSession
from infoprune.estimators.terc_protocol import (
    TercConfig, TercProgress, TercResult, TercStart, confidence_loss_increased, feature_columns, residualise,
    sequential_decision, shift_weights,
)

Tensor = torch.Tensor


MAX_BLOCK = 32
"""Fast engine: the most units one paired re-fit may remove together (:func:`_test_fast`)."""


BLOCK_REMOVE = 0.5
"""Fast engine: a block of k > 1 units goes at once only when its confidence is below this (its
loss did not get worse on average); otherwise it is split (measured on LeNet-5's fc2: removing
blocks at confidence < x removed 32 of 84 units at x = 0.9 where single tests removed 22)."""


SCREEN_MARGIN = 2.0
"""Fast engine: the linear screen keeps a unit without a re-fit when its linear loss increase
(:func:`linear_loss_increase`) is at least this many times that of every unit the re-fit test
has removed in the layer so far ..."""


SCREEN_EVIDENCE = 3
"""... and the re-fit test has kept at least this many units with a smaller linear increase."""


def _batch_stream(start: TercStart, tested_against: int) -> torch.Generator:
    """The mini-batch stream of the fast engine's arms while ``tested_against`` units are kept.

    Both arms of a test draw the same batches (they are paired), and so do all the tests against
    one kept set (they share the "with" arm); each kept set of the layer gets its own stream,
    derived from the layer's generator state and the kept count alone, so a resumed run draws
    the same batches. One stream for the whole layer (every arm replaying the same batches) made
    the walk remove far more than the reference: seed 2 of trained LeNet-5 kept 44 of fc1's 120
    units at x = 0.9 against 88–103 for the reference's seeds, and 96 with a stream per kept set.
    """
    layer = torch.Generator().set_state(start.generator_state)
    base = int(torch.randint(2**62, (1,), generator=layer))
    return torch.Generator().manual_seed(base + tested_against)


class _Arm:
    """One re-fit of the fast engine: fresh Adam from ``members`` on the ``kept`` columns, on the
    stream of the kept set it is tested against (:func:`_batch_stream`), evaluated lazily (a
    cached arm costs only the looks asked of it)."""

    def __init__(
        self, members: PredictorEnsemble, start: TercStart, kept: Tensor, config: TercConfig, tested_against: int,
        counted: int = 0,
    ) -> None:
        self.ensemble = members.clone()
        mask = feature_columns(kept, start.width).float()
        self.inputs_of = lambda rows: start.x[rows] * mask  # noqa: E731
        self.y, self.heldout = start.y, start.split.heldout
        stream = _batch_stream(start, tested_against)
        self.session = TrainingSession(
            self.ensemble, self.inputs_of, start.y, start.split.train, config.batch_size, config.learning_rate, stream
        )
        self.losses: dict[int, Tensor] = {}
        self.counted = counted  # iterations already charged (an arm re-built on resume)

    def losses_at(self, look: int) -> tuple[Tensor, int]:
        """Held-out loss per member after ``look`` iterations, and the newly charged iterations."""
        if look not in self.losses:
            self.session.run(look - self.session.steps)
            self.losses[look] = self.ensemble.loss_on(self.inputs_of, self.y, self.heldout)
        charged = max(0, self.session.steps - self.counted)
        self.counted += charged
        return self.losses[look], charged * self.ensemble.members


def test_fast(
    start: TercStart,
    config: TercConfig,
    result: TercResult,
    on_feature: Callable[[int, bool, float], None] | None,
    resume: TercProgress | None,
    snapshot: Callable[[TercProgress], None] | None,
    snapshot_seconds: float,
) -> TercResult:
    """The fast engine's walk: linear screen, shared "with" arm, adaptive blocks (module docstring).

    A unit the linear screen (:class:`_Screen`) calls clear-cut is kept without a re-fit.
    The others are tested in blocks of the next k in MI order (stopping before a screened
    unit): a block whose confidence is below ``BLOCK_REMOVE`` goes at once and k doubles (up
    to ``MAX_BLOCK``); any other block of k > 1 is re-tested as its first k / 2; a single
    unit is kept or removed as in the reference. The "with" arm re-fits the current
    predictors on the current kept set; a keep changes neither, so it is computed once per
    kept set. After a removal the predictors continue from the "without" arm.
    """
    clock = last_snapshot = time.perf_counter()
    keep, members, position, block, arm_steps = start.keep.to(start.x.device), start.members.clone(), 0, 1, 0
    if resume is not None:
        keep, members = resume.keep.to(start.x.device), PredictorEnsemble([w.to(start.x.device) for w in resume.weights])
        position, block, arm_steps = resume.tested, resume.block, resume.arm_steps
        result.confidence_worse, result.stopped_at = dict(resume.confidence_worse), dict(resume.stopped_at)
        result.iterations = resume.iterations
    screen = _Screen(start, keep, *(() if resume is None else resume.screen))
    with_arm = None
    while position < len(start.order) and keep.sum() > 1:
        units = start.order[position : position + min(block, int(keep.sum()) - 1)]
        screened = [screen.keeps(unit) for unit in units] + [True]
        units = units[: max(1, screened.index(True))]
        if screened[0]:
            confidence, steps, informative = 1.0, 0, True
        else:
            kept_without = keep.clone()
            kept_without[units] = False
            with_arm = with_arm or _Arm(members, start, keep, config, int(keep.sum()), counted=arm_steps)
            confidence, steps, informative, shifted, without = _block_test(
                start, config, members, with_arm, kept_without, units, result
            )
            if len(units) > 1 and (informative or confidence >= BLOCK_REMOVE):  # split: test its first half
                block = len(units) // 2
                continue
            screen.record(units, informative)
        if informative:
            block = 1
        else:
            keep, members, with_arm = kept_without, shifted if without is None else without.ensemble, None
            block = min(2 * len(units), MAX_BLOCK) if confidence < BLOCK_REMOVE else 1
            screen.refresh(keep)
        for unit in units:
            result.confidence_worse[unit], result.stopped_at[unit] = confidence, steps
            if on_feature is not None:
                on_feature(unit, informative, confidence)
        position += len(units)
        arm_steps = 0 if with_arm is None else with_arm.counted
        if snapshot is not None and time.perf_counter() - last_snapshot >= snapshot_seconds:
            snapshot(TercProgress(
                position, keep.cpu(), [w.cpu() for w in members.weights], start.generator_state,
                dict(result.confidence_worse), dict(result.stopped_at), result.iterations, block, arm_steps,
                (screen.removed, list(screen.kept_levels)),
            ))
            last_snapshot = time.perf_counter()
    result.keep = keep.cpu()
    result.seconds_testing = time.perf_counter() - clock
    return result


def _block_test(
    start: TercStart, config: TercConfig, members: PredictorEnsemble, with_arm: _Arm, kept_without: Tensor,
    units: list[int], result: TercResult,
) -> tuple[float, int, bool, PredictorEnsemble]:
    """The paired test of removing ``units`` together; returns ``(confidence_worse, iterations
    run, informative, the predictors to continue from if removed)``. Each unit's first-layer
    weights move onto the units that stay first; exact linear combinations of them are
    removed without a re-fit, as in the reference."""
    x, width = start.x, start.width
    shifted, exact = members.clone(), True
    for unit in units:
        columns = slice(unit * width, (unit + 1) * width)
        beta, residual = residualise(x, columns, feature_columns(kept_without, width))
        shifted.weights[0] = shift_weights(shifted.weights[0], beta, columns, +1.0)
        exact = exact and bool(residual.norm() <= 1e-5 * x[:, columns].norm())
    if exact:
        removed = torch.zeros(len(kept_without), dtype=torch.bool, device=x.device)
        removed[units] = True
        shifted.weights[0][:, feature_columns(removed, width), :] = 0.0
        return 0.0, 0, False, shifted, None
    without = _Arm(shifted, start, kept_without, config, int(kept_without.sum()) + len(units))

    def confidence_at(look: int) -> float:
        (loss_with, cost_with), (loss_without, cost) = with_arm.losses_at(look), without.losses_at(look)
        result.iterations += cost_with + cost
        return confidence_loss_increased(loss_without - loss_with)

    confidence, steps, informative = sequential_decision(confidence_at, config)
    return confidence, steps, informative, shifted, without


def linear_loss_increase(
    x: Tensor, y: Tensor, split: CrossFitSplit, kept: Tensor, ridge: float = 1e-3, width: int = 1
) -> Tensor:
    """Per feature i (``width`` adjacent columns): how much a ridge regression of ``y`` on the
    ``kept`` features loses on the held-out folds when feature i is dropped from it (mean over
    folds; 0 where not kept).

    Closed form: dropping the columns S from a least-squares fit changes its coefficients by
    −G⁻¹[:, S] (G⁻¹[S, S])⁻¹ B[S] (G the regularised Gram matrix), so a feature costs one
    width × width solve; with ``width = 1`` that is −G⁻¹[:, i] B[i] / G⁻¹[i, i].
    """
    units = kept.nonzero().flatten()
    xk, y = x[:, feature_columns(kept, width)].double(), y.double()
    count = len(units)
    increase = torch.zeros(len(kept), dtype=torch.float64, device=x.device)
    for train, heldout in zip(split.train, split.heldout):
        gram = xk[train].T @ xk[train] + ridge * len(train) * torch.eye(xk.shape[1], dtype=xk.dtype, device=x.device)
        inverse = torch.linalg.inv(gram)
        coefficients = inverse @ xk[train].T @ y[train]
        error = y[heldout] - xk[heldout] @ coefficients
        blocks = inverse.reshape(count, width, count, width).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
        drop = torch.linalg.solve(blocks, coefficients.reshape(count, width, -1))  # (G⁻¹_SS)⁻¹ B_S per feature
        shift = (xk[heldout] @ inverse).reshape(-1, count, width)  # prediction change per unit of the drop
        cross = (shift * torch.einsum("no,kwo->nkw", error, drop)).sum((0, 2))
        square = (torch.einsum("nkw,nkv->kwv", shift, shift) * torch.einsum("kwo,kvo->kwv", drop, drop)).sum((1, 2))
        increase[units] += (2 * cross + square) / error.numel() / split.folds
    return increase


class _Screen:
    """The fast engine's linear screen, calibrated on the layer's own re-fit tests (module docstring)."""

    def __init__(self, start: TercStart, keep: Tensor, removed: float = 0.0, kept_levels: list[float] | None = None) -> None:
        self.start, self.removed, self.kept_levels = start, removed, list(kept_levels or [])
        self.refresh(keep)

    def refresh(self, keep: Tensor) -> None:
        start = self.start
        self.increase = linear_loss_increase(start.x, start.y, start.split, keep, width=start.width).tolist()

    def keeps(self, unit: int) -> bool:
        level = self.increase[unit]
        evidence = sum(kept <= level for kept in self.kept_levels)
        return evidence >= SCREEN_EVIDENCE and level >= SCREEN_MARGIN * self.removed

    def record(self, units: list[int], informative: bool) -> None:
        levels = [self.increase[unit] for unit in units]
        if informative:
            self.kept_levels.extend(levels)
        else:
            self.removed = max(self.removed, *levels)
