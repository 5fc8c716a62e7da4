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

Three engines (``TercConfig.engine``). ``"gaussian"`` (the default) runs the same protocol with
a ridge regression in closed form instead of the MLP (:mod:`infoprune.estimators.gaussian`).
``"reference"`` is the protocol above with every fit run to its full length. ``"fast"``
(:func:`_test_fast`) approximates it in five named ways:

1. *Converged initial fit*: it stops once two held-out checks (every ``FIT_CHECK``) improved
   the loss by less than ``FIT_TOLERANCE``.
2. *Group-sequential re-fit*: the arms are evaluated at 40, 80, … and ``refit_iterations``
   (:func:`refit_looks`); a unit is kept early once two consecutive looks pass a threshold that
   spends a tenth of 1 − x over the early looks, and removed early below ``FUTILITY``
   (:func:`look_thresholds`, :func:`_sequential_decision`).
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

Measured agreement with the reference (trained LeNet-5, MNIST, paper counts; docs/methods/mipp.md "Engines"):
per-layer kept counts against the reference's seed-to-seed range and iteration / CPU-time
ratios (the fast engine is 1.2–2.8× cheaper in iterations).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from scipy import stats

from infoprune.estimators.gaussian import RIDGE, gaussian_copula, gaussian_sequential_test, single_gaussian_information
from infoprune.estimators.predictive import (
    CrossFitSplit,
    PredictorEnsemble,
    TrainingSession,
    single_feature_information,
    standardise,
)

Tensor = torch.Tensor


def confidence_loss_increased(differences: Tensor) -> float:
    """P-level at which mean(d) > 0 is accepted by a one-sided t-test (df = R − 1)."""
    d = differences.double().cpu()
    mean = d.mean().item()
    sd = d.std(unbiased=True).item() if d.numel() > 1 else 0.0
    if sd == 0.0 or not math.isfinite(sd):
        return 1.0 if mean > 0 else 0.0
    t_statistic = mean / (sd / math.sqrt(d.numel()))
    return float(stats.t.cdf(t_statistic, df=d.numel() - 1))


def _residualise(x: Tensor, feature: slice, kept: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares x_c ≈ X_K β_c over the ``kept`` columns, for each column c of ``feature``;
    returns ``(β, p × width; the residuals x_c − X_K β_c, n × width)``."""
    width = feature.stop - feature.start
    beta = torch.zeros(x.shape[1], width, dtype=x.dtype, device=x.device)
    others = kept.nonzero().flatten()
    if len(others) == 0:
        return beta, x[:, feature].clone()
    # gelsd (SVD): exact on rank-deficient X_K (copies); the default gelsy is not, here.
    columns, target = x[:, others].double().cpu(), x[:, feature].double().cpu()
    solution = torch.linalg.lstsq(columns, target, driver="gelsd").solution
    beta[others] = solution.to(x.dtype).to(x.device)
    return beta, torch.stack([x[:, feature.start + j] - x @ beta[:, j] for j in range(width)], dim=1)


def _shift_weights(first_layer: Tensor, beta: Tensor, feature: slice, sign: float) -> Tensor:
    """Rows k of W₁ += sign · β_kc · W₁[c] for each column c of ``feature``: re-expresses x_c as
    X_K β_c + r_c (sign +1) or back. (β is zero on ``feature``'s own rows, so the order is free.)"""
    for j in range(beta.shape[1]):
        column = feature.start + j
        first_layer = first_layer + sign * beta[None, :, j, None] * first_layer[:, column : column + 1, :]
    return first_layer


def _columns(units: Tensor, width: int) -> Tensor:
    """The per-column mask of a per-feature one (feature i owns columns i·width … i·width + width − 1)."""
    return units if width == 1 else units.repeat_interleave(width)


ENGINES = ("gaussian", "fast", "reference")
DEFAULT_ENGINE = "gaussian"
"""The engine MIPP uses unless told (docs/methods/mipp.md: the measured choice)."""

FIRST_LOOK = 40
"""Fast engine: the first look at the paired re-fit, after this many iterations (then doubling).

Earlier looks carry no evidence: measured on trained LeNet-5's fc2, the arms' gap is negative
for most units after 10–20 iterations (a fresh Adam state kicks the "with" arm's extra input
row) and settles only after 40–80 iterations."""
EARLY_SPEND = 0.1
"""Fast engine: the share of the error rate 1 − x that the early looks may spend together."""
FUTILITY = 0.3
"""Fast engine: from the second look on, a confidence below this removes the unit early
(on LeNet-5's fc2: 0 of the 6 units below 0.3 after 80 iterations reached 0.9 after 150)."""
FIT_CHECK = 100
"""Fast engine: the initial fit checks its held-out loss every this many iterations ..."""
FIT_TOLERANCE = 0.01
"""... and stops once two checks in a row improved it by less than this fraction."""
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


@dataclass(frozen=True)
class TercConfig:
    """Hyper-parameters of the test; defaults are MIPP App. D.3.2 (the MLP is 2 × 256).

    ``engine``: ``"gaussian"`` tests in closed form under a linear-Gaussian model
    (:mod:`infoprune.estimators.gaussian`; ``ridge`` and ``copula`` are its settings, the
    iteration counts and ``hidden_size`` are unused); ``"reference"`` runs every re-fit for
    ``refit_iterations`` and the initial fit for ``fit_iterations``; ``"fast"`` approximates it
    (the five ways of the module docstring).
    """

    confidence: float = 0.9
    repeats: int = 5
    hidden_size: int = 256
    fit_iterations: int = 1500
    refit_iterations: int = 150
    ordering_iterations: int = 35
    batch_size: int = 64
    learning_rate: float = 1e-3
    engine: str = DEFAULT_ENGINE
    ridge: float = RIDGE
    copula: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}.")
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float)) or not 0 < self.ridge < 1:
            raise ValueError(f"ridge must be a number in (0, 1) (the penalty per training row), got {self.ridge!r}.")


@dataclass
class TercResult:
    """Which features were kept, and why."""

    keep: Tensor  # bool (p,)
    order: list[int]  # test order (least informative first)
    single_information: list[float]  # I(X_i; Y) estimates used for the order
    confidence_worse: dict[int, float] = field(default_factory=dict)  # per tested feature
    stopped_at: dict[int, int] = field(default_factory=dict)  # re-fit iterations run per tested feature
    constant: list[int] = field(default_factory=list)
    iterations: int = 0  # MLP optimiser steps, summed over predictors (ordering, fit, re-fits)
    seconds_ordering: float = 0.0
    seconds_testing: float = 0.0


@dataclass
class TercStart:
    """What TERC computes before its first test (standardised data, order, initial fit).

    It depends on the data and on every setting but ``confidence``, so a search over
    confidences re-uses it (:func:`terc_test` never modifies it).
    """

    x: Tensor
    y: Tensor
    keep: Tensor
    constant: list[int]
    split: CrossFitSplit | None = None
    single: Tensor | None = None
    order: list[int] = field(default_factory=list)
    members: PredictorEnsemble | None = None
    generator_state: Tensor | None = None
    iterations: int = 0
    seconds: float = 0.0
    width: int = 1


def refit_looks(config: TercConfig) -> tuple[int, ...]:
    """Iteration counts at which the paired re-fit is evaluated.

    Reference: only at ``refit_iterations`` (the paper). Fast: at 40, 80, … and
    ``refit_iterations`` (a group-sequential test, see :func:`look_thresholds`).
    """
    if config.engine == "reference":
        return (config.refit_iterations,)
    looks, k = [], FIRST_LOOK
    while k < config.refit_iterations:
        looks.append(k)
        k *= 2
    return (*looks, config.refit_iterations)


def look_thresholds(config: TercConfig) -> tuple[float, float]:
    """(confidence to keep at an early look, confidence to keep at the last look).

    Keeping a unit is the claim that must hold with confidence x. The fast engine lets
    its L − 1 early looks spend ``EARLY_SPEND`` of the error rate 1 − x together and the
    last look the rest: by the union bound the probability of keeping a unit whose
    removal leaves the loss unchanged at every look stays ≤ 1 − x, as for one test at x.
    """
    looks = len(refit_looks(config))
    if looks == 1:
        return config.confidence, config.confidence
    error = 1 - config.confidence
    return 1 - EARLY_SPEND * error / (looks - 1), 1 - (1 - EARLY_SPEND) * error


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
    masks = _columns(keep.to(x.device), width).float().expand(config.repeats, -1).clone()
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


@dataclass
class TercProgress:
    """Where :func:`terc_test` stands after its first ``tested`` features: enough to continue
    it exactly (the predictors' weights, the kept set, the generator, the decisions so far)."""

    tested: int
    keep: Tensor
    weights: list[Tensor]
    generator_state: Tensor
    confidence_worse: dict[int, float]
    stopped_at: dict[int, int]
    iterations: int
    block: int = 1  # fast engine: the size of the next block test
    arm_steps: int = 0  # fast engine: iterations the cached "with" arm had run (already counted)
    screen: tuple[float, list[float]] = (0.0, [])  # fast engine: the linear screen's calibration


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
        return _test_fast(start, config, result, on_feature, resume, snapshot, snapshot_seconds)
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
    masks = _columns(keep, width).float().expand(repeats, -1).clone()
    for position, feature in enumerate(start.order):
        if resume is not None and position < resume.tested:
            continue
        if keep.sum() == 1:
            break
        kept_without = keep.clone()
        kept_without[feature] = False
        columns = slice(feature * width, (feature + 1) * width)
        beta, residual = _residualise(x, columns, _columns(kept_without, width))
        if residual.norm() <= 1e-5 * x[:, columns].norm():
            # An exact linear combination of the kept features: both arms would be the same
            # network on the same data, so the loss cannot get worse. Remove without re-fit.
            members.weights[0] = _shift_weights(members.weights[0], beta, columns, +1.0)
            members.weights[0][:, columns, :] = 0.0
            keep, masks = kept_without, _columns(kept_without, width).float().expand(repeats, -1).clone()
            informative, confidence, steps = False, 0.0, 0
        else:
            arms, arm_masks, confidence, steps, informative = _paired_test(
                members, x, y, start.split, masks, _columns(kept_without, width), columns, beta, residual, config,
                generator,
            )
            if informative:
                members = arms.take(slice(0, repeats))
                members.weights[0] = _shift_weights(members.weights[0], beta, columns, -1.0)
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
    shifted.weights[0] = _shift_weights(shifted.weights[0], beta, feature, +1.0)
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

    confidence, steps, informative = _sequential_decision(confidence_at, config)
    return arms, arm_masks, confidence, steps, informative


def _sequential_decision(confidence_at: Callable[[int], float], config: TercConfig) -> tuple[float, int, bool]:
    """Evaluate ``confidence_at(look)`` at each of :func:`refit_looks` until one decides;
    returns ``(confidence, look, informative)``. From the second look on, a unit is kept early
    when this look and the one before both reached the early threshold (:func:`look_thresholds`)
    and removed early below ``FUTILITY``.

    Two looks, not one: with ``repeats`` = 5 (4 degrees of freedom) a unit's t statistic swings
    widely between looks (measured on trained LeNet-5: t = 29.2, 15.7, 6.3 at 40, 80, 150
    iterations), so keeping on the first look above the threshold kept units that the full-length
    test removes: 1 of 65 early keeps at x = 0.9, 7 of 35 at 0.999 and 3 of 6 at 0.9999 (seed 0,
    every look evaluated). Requiring two consecutive looks kept 0 of 34, 1 of 6 and none, and
    it only tightens the union bound of :func:`look_thresholds`."""
    looks = refit_looks(config)
    early, last = look_thresholds(config)
    previous = 0.0
    for index, look in enumerate(looks):
        confidence = confidence_at(look)
        if look == looks[-1]:
            return confidence, look, confidence >= last
        if index > 0 and min(confidence, previous) >= early:
            return confidence, look, True
        if index > 0 and confidence < FUTILITY:
            return confidence, look, False
        previous = confidence
    raise AssertionError("unreachable: the last look always decides")


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
        mask = _columns(kept, start.width).float()
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


def _test_fast(
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
        beta, residual = _residualise(x, columns, _columns(kept_without, width))
        shifted.weights[0] = _shift_weights(shifted.weights[0], beta, columns, +1.0)
        exact = exact and bool(residual.norm() <= 1e-5 * x[:, columns].norm())
    if exact:
        removed = torch.zeros(len(kept_without), dtype=torch.bool, device=x.device)
        removed[units] = True
        shifted.weights[0][:, _columns(removed, width), :] = 0.0
        return 0.0, 0, False, shifted, None
    without = _Arm(shifted, start, kept_without, config, int(kept_without.sum()) + len(units))

    def confidence_at(look: int) -> float:
        (loss_with, cost_with), (loss_without, cost) = with_arm.losses_at(look), without.losses_at(look)
        result.iterations += cost_with + cost
        return confidence_loss_increased(loss_without - loss_with)

    confidence, steps, informative = _sequential_decision(confidence_at, config)
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
    xk, y = x[:, _columns(kept, width)].double(), y.double()
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
