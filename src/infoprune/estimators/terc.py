"""TERC with MI ordering: keep the features that transfer entropy to a target (MIPP Alg. 2).

Features are ordered by their own MI with the target (least informative first, so that the
informative ones are tested last, when fewer of their twins remain, §4.2.1), then tested
one by one on top of the features already removed. Feature i stays only when we are at
least ``confidence`` sure that I(X' ; Y) > I(X' \\ X_i ; Y), i.e. that the prediction loss
got worse without it (§4.3, Eq. 1).

The re-fit protocol (each choice below is deliberate; see the notes in shared/notes and the
known-answer tests in tests/test_terc.py):

* **Cross-fitted repeats.** The R = ``repeats`` estimates come from R predictors, each
  trained on all folds but one and evaluated on its own held-out fold, so the R loss
  differences are nearly independent and their spread includes sampling noise, not only
  optimiser noise. The losses are never measured on rows a predictor trained on.
* **Paired arms.** For each repeat, the current predictor is re-fitted twice for
  ``refit_iterations`` steps from the same state with the same mini-batches and a fresh
  optimiser each: once with the current feature set ("with") and once with feature i
  masked ("without"). Comparing "without" to the un-re-fitted loss instead would be biased
  against removal (a fresh Adam state perturbs a converged fit), and comparing to a
  separately trained predictor would drown small effects in initialisation noise.
* **Weight transfer before the "without" arm.** The masked feature's first-layer weights
  are first moved onto the remaining features by least squares (x_i ≈ Σ β_k x_k). A feature
  that is a copy or a linear combination of others is then removed without any loss at all,
  so the short re-fit only has to recover what is genuinely missing. Without it, the re-fit
  cannot move a copy's weight onto its twins in 150 steps and every copy looks informative.
* **Test.** d_r = loss_without,r − loss_with,r; one-sided t-test of mean(d) > 0 with R − 1
  degrees of freedom (Student's t quantile, small-sample correct). ``confidence_worse`` =
  F_t(mean / (sd / √R)); the feature is kept iff confidence_worse ≥ ``confidence``. A
  feature whose removal changes nothing (all d equal and ≤ 0) has confidence 0.
* After a decision the predictors continue from the arm that matches it.
* A feature that is an exact linear combination of the kept ones (zero residual) makes
  the two arms identical; it is removed without running them (confidence 0).
* At least one feature is always kept (no layer collapse): the last remaining one is never
  tested. Constant features carry no information and are removed without a test.
* A feature may be a *group* of ``width`` adjacent columns (a conv filter's map on a g × g
  grid, :mod:`infoprune.methods.mipp`): its columns are masked, re-expressed on the kept
  columns (one least-squares fit per column) and ordered by their joint MI together, so the
  test asks whether the whole group adds information. ``width = 1`` is one column per feature.
  Both engines take widths: the fast engine's blocks and linear screen drop a feature's
  columns together (:func:`linear_loss_increase` solves one width × width system per feature).

Three engines (``TercConfig.engine``): ``"gaussian"`` (the default) runs this protocol with a
ridge regression in closed form instead of the MLP (:mod:`infoprune.estimators.gaussian`);
``"reference"`` is the protocol above with every fit run to its full length; ``"fast"``
approximates it in five named ways (:mod:`infoprune.estimators.terc_fast`). The shared types
and the sequential decision are in :mod:`infoprune.estimators.terc_protocol`; the measured
agreement of the engines is in docs/methods/mipp.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from infoprune.estimators.gaussian import gaussian_copula, gaussian_sequential_test, single_gaussian_information
from infoprune.estimators.predictive import (
    CrossFitSplit,
    PredictorEnsemble,
    TrainingSession,
    single_feature_information,
    standardise,
)
from infoprune.estimators.terc_fast import linear_loss_increase, test_fast
from infoprune.estimators.terc_protocol import (
    DEFAULT_ENGINE, ENGINES, RIDGE, TercConfig, TercProgress, TercResult, TercStart, confidence_loss_increased,
    every_look, feature_columns, look_thresholds, refit_looks, residualise, sequential_decision, shift_weights,
)

__all__ = [
    "DEFAULT_ENGINE", "ENGINES", "RIDGE", "TercConfig", "TercProgress", "TercResult", "TercStart",
    "confidence_loss_increased", "every_look", "linear_loss_increase", "look_thresholds", "refit_looks", "terc_prepare",
    "terc_select", "terc_test",
]

Tensor = torch.Tensor


FIT_CHECK = 100
"""Fast engine: the initial fit checks its held-out loss every this many iterations ..."""


FIT_TOLERANCE = 0.01
"""... and stops once two checks in a row improved it by less than this fraction."""


def terc_prepare(x: Tensor, y: Tensor, config: TercConfig, generator: torch.Generator, width: int = 1) -> TercStart:
    """Standardise, order the features by their own MI with ``y`` and fit the predictors.

    ``width``: each feature is that many adjacent columns of ``x``, kept or removed together.
    """
    if width < 1 or x.shape[1] % width:
        raise ValueError(f"x has {x.shape[1]} columns, not a whole number of features of width {width}.")
    if config.engine == "gaussian" and config.copula:
        x, y = gaussian_copula(x.float()), gaussian_copula(y.float())
    x, constant_columns = standardise(x.float())
    y, constant_y = standardise(y.float())
    y = y[:, ~constant_y]
    n, p = x.shape[0], x.shape[1] // width
    constant_x = constant_columns if width == 1 else constant_columns.reshape(p, width).all(dim=1)
    keep = ~constant_x
    constant = constant_x.nonzero().flatten().tolist()
    if not keep.any():  # every feature constant: keep one so the layer does not collapse
        keep[0] = True
    if y.shape[1] == 0:
        # Nothing downstream to preserve: keep the single most variable feature, the
        # minimum that avoids collapse.
        keep = torch.zeros(p, dtype=torch.bool)
        keep[int(torch.argmax((~constant_x).float()))] = True
    if y.shape[1] == 0 or keep.sum() == 1:
        return TercStart(x, y, keep.cpu(), constant, width=width)

    start = time.perf_counter()
    split = CrossFitSplit.make(n, config.repeats, generator)
    if config.engine == "gaussian":
        single = single_gaussian_information(x, y, width)
        candidates = keep.nonzero().flatten()
        order = candidates[torch.argsort(single[candidates].cpu(), stable=True)].tolist()
        return TercStart(x, y, keep.cpu(), constant, split, single, order, None, generator.get_state(),
                         seconds=time.perf_counter() - start, width=width)
    single = single_feature_information(
        x,
        y,
        split,
        hidden_size=config.hidden_size,
        iterations=config.ordering_iterations,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        generator=generator,
        width=width,
    )
    candidates = keep.nonzero().flatten()
    order = candidates[torch.argsort(single[candidates].cpu(), stable=True)].tolist()
    members = PredictorEnsemble.initialise(config.repeats, x.shape[1], config.hidden_size, y.shape[1], generator, x.device)
    masks = feature_columns(keep.to(x.device), width).float().expand(config.repeats, -1).clone()
    steps = _initial_fit(members, x, y, split, masks, config, generator)
    return TercStart(
        x, y, keep.cpu(), constant, split, single, order, members, generator.get_state(),
        iterations=p * config.ordering_iterations + config.repeats * steps,
        seconds=time.perf_counter() - start, width=width,
    )


def _initial_fit(
    members: PredictorEnsemble, x: Tensor, y: Tensor, split: CrossFitSplit, masks: Tensor,
    config: TercConfig, generator: torch.Generator,
) -> int:
    """Fit the predictors on all kept features; returns the iterations run.

    Reference: ``fit_iterations``. Fast: stops early once the mean held-out loss has
    improved by less than ``FIT_TOLERANCE`` at two checks in a row (converged).
    """
    inputs_of = lambda rows: x[rows] * masks[:, None, :]  # noqa: E731
    session = TrainingSession(members, inputs_of, y, split.train, config.batch_size, config.learning_rate, generator)
    if config.engine == "reference":
        session.run(config.fit_iterations)
        return session.steps
    best, stalled = math.inf, 0
    while session.steps < config.fit_iterations and stalled < 2:
        session.run(min(FIT_CHECK, config.fit_iterations - session.steps))
        loss = members.loss_on(inputs_of, y, split.heldout).mean().item()
        stalled = stalled + 1 if loss > best * (1 - FIT_TOLERANCE) else 0
        best = min(best, loss)
    return session.steps


def terc_select(
    x: Tensor,
    y: Tensor,
    config: TercConfig,
    generator: torch.Generator,
    on_feature: Callable[[int, bool, float], None] | None = None,
) -> TercResult:
    """Select the columns of ``x`` (n × p) that transfer entropy to ``y`` (n × q).

    ``on_feature(index, kept, confidence_worse)`` is called after each decision (progress).
    """
    return terc_test(terc_prepare(x, y, config, generator), config, on_feature)


def terc_test(
    start: TercStart,
    config: TercConfig,
    on_feature: Callable[[int, bool, float], None] | None = None,
    resume: TercProgress | None = None,
    snapshot: Callable[[TercProgress], None] | None = None,
    snapshot_seconds: float = 180.0,
) -> TercResult:
    """Test the features of ``start`` one by one in MI order (Alg. 2, lines 2–5).

    ``snapshot(progress)`` is called at most every ``snapshot_seconds`` (after a decision);
    ``resume=progress`` continues from such a snapshot to the same result.
    """
    x, y, keep = start.x, start.y, start.keep.to(start.x.device)
    result = TercResult(
        keep.cpu(), start.order, [] if start.single is None else start.single.cpu().tolist(),
        constant=start.constant, iterations=start.iterations, seconds_ordering=start.seconds,
    )
    if start.split is None:
        result.single_information = [0.0] * len(keep)
        return result
    if config.engine == "gaussian":
        return _test_gaussian(start, config, result, on_feature)
    if config.engine == "fast":
        return test_fast(start, config, result, on_feature, resume, snapshot, snapshot_seconds)
    clock = last_snapshot = time.perf_counter()
    generator = torch.Generator().set_state(start.generator_state)
    repeats = config.repeats
    members = start.members.clone()
    if resume is not None:
        keep, members = resume.keep.to(x.device), PredictorEnsemble([w.to(x.device) for w in resume.weights])
        generator.set_state(resume.generator_state)
        result.confidence_worse, result.stopped_at = dict(resume.confidence_worse), dict(resume.stopped_at)
        result.iterations = resume.iterations
    width = start.width
    masks = feature_columns(keep, width).float().expand(repeats, -1).clone()
    for position, feature in enumerate(start.order):
        if resume is not None and position < resume.tested:
            continue
        if keep.sum() == 1:
            break
        kept_without = keep.clone()
        kept_without[feature] = False
        columns = slice(feature * width, (feature + 1) * width)
        beta, residual = residualise(x, columns, feature_columns(kept_without, width))
        if residual.norm() <= 1e-5 * x[:, columns].norm():
            # An exact linear combination of the kept features: both arms would be the same
            # network on the same data, so the loss cannot get worse. Remove without re-fit.
            members.weights[0] = shift_weights(members.weights[0], beta, columns, +1.0)
            members.weights[0][:, columns, :] = 0.0
            keep, masks = kept_without, feature_columns(kept_without, width).float().expand(repeats, -1).clone()
            informative, confidence, steps = False, 0.0, 0
        else:
            arms, arm_masks, confidence, steps, informative = _paired_test(
                members, x, y, start.split, masks, feature_columns(kept_without, width), columns, beta, residual, config,
                generator,
            )
            if informative:
                members = arms.take(slice(0, repeats))
                members.weights[0] = shift_weights(members.weights[0], beta, columns, -1.0)
            else:
                keep, masks = kept_without, arm_masks[repeats:]
                members = arms.take(slice(repeats, 2 * repeats))
        result.confidence_worse[feature] = confidence
        result.stopped_at[feature] = steps
        result.iterations += 2 * repeats * steps
        if on_feature is not None:
            on_feature(feature, informative, confidence)
        if snapshot is not None and time.perf_counter() - last_snapshot >= snapshot_seconds:
            snapshot(TercProgress(
                position + 1, keep.cpu(), [w.cpu() for w in members.weights], generator.get_state(),
                dict(result.confidence_worse), dict(result.stopped_at), result.iterations,
            ))
            last_snapshot = time.perf_counter()
    result.keep = keep.cpu()
    result.seconds_testing = time.perf_counter() - clock
    return result


def _test_gaussian(
    start: TercStart, config: TercConfig, result: TercResult, on_feature: Callable[[int, bool, float], None] | None
) -> TercResult:
    """The closed-form engine's walk (:func:`infoprune.estimators.gaussian.gaussian_sequential_test`).

    A layer takes seconds, so it is not snapshotted inside; a resumed run re-tests it from
    the start (deterministic: the same decisions)."""
    outcome = gaussian_sequential_test(
        start.x, start.y, start.split.heldout, start.keep.to(start.x.device), start.order, config.confidence,
        confidence_loss_increased, start.width, config.ridge, on_feature,
    )
    result.keep, result.confidence_worse = outcome.keep.cpu(), outcome.confidence_worse
    result.stopped_at = {feature: 0 for feature in outcome.confidence_worse}
    result.seconds_testing = outcome.seconds
    return result


def _paired_test(
    members: PredictorEnsemble, x: Tensor, y: Tensor, split: CrossFitSplit, masks: Tensor, kept_without: Tensor,
    feature: slice, beta: Tensor, residual: Tensor, config: TercConfig, generator: torch.Generator,
) -> tuple[PredictorEnsemble, Tensor, float, int, bool]:
    """Re-fit "with" and "without" arms from the same state; returns
    ``(arms, arm masks, confidence_worse, iterations run, informative)``.

    Both arms start from W₁ re-expressed so that feature i (the columns ``feature``) enters
    only through its residual r_i; arm "with" reads r_i, arm "without" masks it (the reference
    engine's test).
    """
    repeats = config.repeats
    shifted = members.clone()
    shifted.weights[0] = shift_weights(shifted.weights[0], beta, feature, +1.0)
    arms = PredictorEnsemble.concat([shifted, shifted.clone()])
    x_with = x.clone()
    x_with[:, feature] = residual
    arm_inputs = torch.stack([x_with, x])
    arm_of_member = torch.arange(2 * repeats, device=x.device) // repeats
    arm_masks = torch.cat([masks, kept_without.float().expand(repeats, -1)])
    arm_input_of = lambda rows: arm_inputs[arm_of_member[:, None], rows] * arm_masks[:, None, :]  # noqa: E731
    paired_train = torch.cat([split.train, split.train])
    paired_heldout = torch.cat([split.heldout, split.heldout])
    session = TrainingSession(
        arms, arm_input_of, y, paired_train, config.batch_size, config.learning_rate, generator, batch_streams=repeats
    )

    def confidence_at(look: int) -> float:
        session.run(look - session.steps)
        losses = arms.loss_on(arm_input_of, y, paired_heldout)
        return confidence_loss_increased(losses[repeats:] - losses[:repeats])

    confidence, steps, informative = sequential_decision(confidence_at, config)
    return arms, arm_masks, confidence, steps, informative
