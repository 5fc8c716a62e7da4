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

Two engines (``TercConfig.engine``). ``"reference"`` is the protocol above with every fit run
to its full length. ``"fast"`` makes two approximations, each measured on trained LeNet-5:
the initial fit stops once converged (``FIT_CHECK`` / ``FIT_TOLERANCE``), and the paired
re-fit is a group-sequential test (:func:`refit_looks`, :func:`look_thresholds`): it keeps a
unit early when its confidence clears a threshold that spends a tenth of 1 − x over the
early looks, removes it early when the confidence is below ``FUTILITY`` from the second look
on, and otherwise decides at ``refit_iterations`` as the reference does (at a slightly
stricter 1 − 0.9·(1 − x)). Measured: 1.79× fewer MLP iterations at x = 0.9, 1.19× at x = 0.999,
per-layer kept counts within 5 units (README, "Engines").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from scipy import stats

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


ENGINES = ("fast", "reference")

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


@dataclass(frozen=True)
class TercConfig:
    """Hyper-parameters of the test; defaults are MIPP App. D.3.2 (the MLP is 2 × 256).

    ``engine``: ``"reference"`` runs every re-fit for ``refit_iterations`` and the initial
    fit for ``fit_iterations``; ``"fast"`` stops both early (see :func:`refit_looks`).
    """

    confidence: float = 0.9
    repeats: int = 5
    hidden_size: int = 256
    fit_iterations: int = 1500
    refit_iterations: int = 150
    ordering_iterations: int = 35
    batch_size: int = 64
    learning_rate: float = 1e-3
    engine: str = "reference"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}.")


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
    if start.members is None:
        result.single_information = [0.0] * len(keep)
        return result
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


def _paired_test(
    members: PredictorEnsemble, x: Tensor, y: Tensor, split: CrossFitSplit, masks: Tensor, kept_without: Tensor,
    feature: slice, beta: Tensor, residual: Tensor, config: TercConfig, generator: torch.Generator,
) -> tuple[PredictorEnsemble, Tensor, float, int, bool]:
    """Re-fit "with" and "without" arms from the same state; returns
    ``(arms, arm masks, confidence_worse, iterations run, informative)``.

    Both arms start from W₁ re-expressed so that feature i (the columns ``feature``) enters
    only through its residual r_i; arm "with" reads r_i, arm "without" masks it. The arms are evaluated at
    each of :func:`refit_looks`; the fast engine decides at an early look when the
    confidence clears the early threshold (keep) or, from the second look on, falls below
    ``FUTILITY`` (remove).
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
    looks = refit_looks(config)
    early, last = look_thresholds(config)
    for index, look in enumerate(looks):
        session.run(look - session.steps)
        losses = arms.loss_on(arm_input_of, y, paired_heldout)
        confidence = confidence_loss_increased(losses[repeats:] - losses[:repeats])
        if look == looks[-1]:
            return arms, arm_masks, confidence, session.steps, confidence >= last
        if confidence >= early or (index > 0 and confidence < FUTILITY):
            return arms, arm_masks, confidence, session.steps, confidence >= early
    raise AssertionError("unreachable: the last look always decides")
