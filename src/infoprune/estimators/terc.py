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
    single_feature_information,
    standardise,
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class TercConfig:
    """Hyper-parameters of the test; defaults are MIPP App. D.3.2 (the MLP is 2 × 256)."""

    confidence: float = 0.9
    repeats: int = 5
    hidden_size: int = 256
    fit_iterations: int = 1500
    refit_iterations: int = 150
    ordering_iterations: int = 35
    batch_size: int = 64
    learning_rate: float = 1e-3


@dataclass
class TercResult:
    """Which features were kept, and why."""

    keep: Tensor  # bool (p,)
    order: list[int]  # test order (least informative first)
    single_information: list[float]  # I(X_i; Y) estimates used for the order
    confidence_worse: dict[int, float] = field(default_factory=dict)  # per tested feature
    constant: list[int] = field(default_factory=list)
    seconds_ordering: float = 0.0
    seconds_testing: float = 0.0


def confidence_loss_increased(differences: Tensor) -> float:
    """P-level at which mean(d) > 0 is accepted by a one-sided t-test (df = R − 1)."""
    d = differences.double().cpu()
    mean = d.mean().item()
    sd = d.std(unbiased=True).item() if d.numel() > 1 else 0.0
    if sd == 0.0 or not math.isfinite(sd):
        return 1.0 if mean > 0 else 0.0
    t_statistic = mean / (sd / math.sqrt(d.numel()))
    return float(stats.t.cdf(t_statistic, df=d.numel() - 1))


def _residualise(x: Tensor, feature: int, kept: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares x_i ≈ X_K β over the ``kept`` columns; returns ``(β over all p, x_i − X_K β)``."""
    beta = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    others = kept.nonzero().flatten()
    if len(others) == 0:
        return beta, x[:, feature].clone()
    # gelsd (SVD): exact on rank-deficient X_K (copies); the default gelsy is not, here.
    columns, target = x[:, others].double().cpu(), x[:, feature : feature + 1].double().cpu()
    solution = torch.linalg.lstsq(columns, target, driver="gelsd").solution
    beta[others] = solution.flatten().to(x.dtype).to(x.device)
    return beta, x[:, feature] - x @ beta


def _shift_weights(first_layer: Tensor, beta: Tensor, feature: int, sign: float) -> Tensor:
    """Rows k of W₁ += sign · β_k · W₁[feature]: re-expresses x_i as X_K β + r_i (sign +1) or back."""
    return first_layer + sign * beta[None, :, None] * first_layer[:, feature : feature + 1, :]


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
    x, constant_x = standardise(x.float())
    y, constant_y = standardise(y.float())
    y = y[:, ~constant_y]
    n, p = x.shape
    keep = ~constant_x
    if not keep.any():  # every feature constant: keep one so the layer does not collapse
        keep[0] = True
    constant = constant_x.nonzero().flatten().tolist()
    if y.shape[1] == 0 or keep.sum() == 1:
        # Nothing downstream to preserve (or nothing to choose): keep the single most
        # variable feature, the minimum that avoids collapse.
        if y.shape[1] == 0:
            keep = torch.zeros(p, dtype=torch.bool)
            keep[int(torch.argmax((~constant_x).float()))] = True
        return TercResult(keep.cpu(), [], [0.0] * p, constant=constant)

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
    )
    candidates = keep.nonzero().flatten()
    order = candidates[torch.argsort(single[candidates].cpu(), stable=True)].tolist()
    seconds_ordering = time.perf_counter() - start

    start = time.perf_counter()
    repeats = config.repeats
    members = PredictorEnsemble.initialise(repeats, p, config.hidden_size, y.shape[1], generator, x.device)
    masks = keep.to(x.device).float().expand(repeats, -1).clone()
    members.fit(
        x, y, split.train, masks, config.fit_iterations, config.batch_size, config.learning_rate, generator
    )
    paired_train = torch.cat([split.train, split.train])
    paired_heldout = torch.cat([split.heldout, split.heldout])
    confidences: dict[int, float] = {}
    for feature in order:
        if keep.sum() == 1:
            break
        kept_without = keep.clone()
        kept_without[feature] = False
        beta, residual = _residualise(x, feature, kept_without)
        if residual.norm() <= 1e-5 * x[:, feature].norm():
            # An exact linear combination of the kept features: both arms would be the same
            # network on the same data, so the loss cannot get worse. Remove without re-fit.
            members.weights[0] = _shift_weights(members.weights[0], beta, feature, +1.0)
            members.weights[0][:, feature, :] = 0.0
            keep, masks = kept_without, kept_without.to(x.device).float().expand(repeats, -1).clone()
            confidences[feature] = 0.0
            if on_feature is not None:
                on_feature(feature, False, 0.0)
            continue
        # Both arms: W₁ re-expressed so that feature i enters only through its residual r_i.
        shifted = members.clone()
        shifted.weights[0] = _shift_weights(shifted.weights[0], beta, feature, +1.0)
        arms = PredictorEnsemble.concat([shifted, shifted.clone()])
        x_with = x.clone()
        x_with[:, feature] = residual
        arm_inputs = torch.stack([x_with, x])  # arm "with" reads r_i, arm "without" masks it
        arm_of_member = torch.arange(2 * repeats, device=x.device) // repeats
        arm_masks = torch.cat([masks, kept_without.to(x.device).float().expand(repeats, -1)])
        arm_input_of = lambda rows: arm_inputs[arm_of_member[:, None], rows] * arm_masks[:, None, :]  # noqa: E731
        arms.train_on(
            arm_input_of,
            y,
            paired_train,
            config.refit_iterations,
            config.batch_size,
            config.learning_rate,
            generator,
            batch_streams=repeats,
        )
        losses = arms.loss_on(arm_input_of, y, paired_heldout)
        confidence = confidence_loss_increased(losses[repeats:] - losses[:repeats])
        confidences[feature] = confidence
        informative = confidence >= config.confidence
        if informative:
            members = arms.take(slice(0, repeats))
            members.weights[0] = _shift_weights(members.weights[0], beta, feature, -1.0)
        else:
            keep = kept_without
            masks = arm_masks[repeats:]
            members = arms.take(slice(repeats, 2 * repeats))
        if on_feature is not None:
            on_feature(feature, informative, confidence)
    return TercResult(
        keep=keep.cpu(),
        order=order,
        single_information=single.cpu().tolist(),
        confidence_worse=confidences,
        constant=constant,
        seconds_ordering=seconds_ordering,
        seconds_testing=time.perf_counter() - start,
    )
