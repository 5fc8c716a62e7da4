"""The parts of TERC (MIPP Alg. 2) every engine shares: settings, results, the t-test, the
sequential decision over looks, and the least-squares re-expression of a feature on the kept
ones (:mod:`infoprune.estimators.terc` describes the protocol)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from scipy import stats

from infoprune.estimators.gaussian import RIDGE
from infoprune.estimators.predictive import CrossFitSplit, PredictorEnsemble
from infoprune.validation import check_count, check_positive_number

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


def residualise(x: Tensor, feature: slice, kept: Tensor) -> tuple[Tensor, Tensor]:
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


def shift_weights(first_layer: Tensor, beta: Tensor, feature: slice, sign: float) -> Tensor:
    """Rows k of W₁ += sign · β_kc · W₁[c] for each column c of ``feature``: re-expresses x_c as
    X_K β_c + r_c (sign +1) or back. (β is zero on ``feature``'s own rows, so the order is free.)"""
    for j in range(beta.shape[1]):
        column = feature.start + j
        first_layer = first_layer + sign * beta[None, :, j, None] * first_layer[:, column : column + 1, :]
    return first_layer


def feature_columns(units: Tensor, width: int) -> Tensor:
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
        """Validate every setting, with a message naming the value and what is accepted."""
        if not _is_number(self.confidence) or not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence!r}.")
        for name in ("hidden_size", "fit_iterations", "refit_iterations", "ordering_iterations", "batch_size"):
            check_count(name, getattr(self, name), 1)
        check_count("repeats", self.repeats, 2)
        check_positive_number("learning_rate", self.learning_rate)
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}.")
        if not _is_number(self.ridge) or not 0 < self.ridge < 1:
            raise ValueError(f"ridge must be a number in (0, 1) (the penalty per training row), got {self.ridge!r}.")
        if not isinstance(self.copula, bool):
            raise ValueError(f"copula must be True or False, got {self.copula!r}.")


def _is_number(value: object) -> bool:
    """A real number (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


def sequential_decision(confidence_at: Callable[[int], float], config: TercConfig) -> tuple[float, int, bool]:
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
    if _every_look is not None:  # inside every_look(): the full-length test, each look recorded
        confidences = [confidence_at(look) for look in looks]
        _every_look.append(confidences)
        return confidences[-1], looks[-1], confidences[-1] >= last
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


_every_look: list[list[float]] | None = None
"""The list :func:`every_look` records into while it is active (None: decide as usual)."""


@contextmanager
def every_look() -> Iterator[list[list[float]]]:
    """Within the block, :func:`sequential_decision` evaluates every look and decides at the last
    one (the full-length test, no early keep or removal), and appends each test's confidences at
    all its looks to the yielded list, in test order.

    A measurement hook: what the early looks would have decided, against the full-length test
    (``bench/mipp_looks.py``). Not thread-safe; the previous state is restored on exit.
    """
    global _every_look
    previous, _every_look = _every_look, []
    try:
        yield _every_look
    finally:
        _every_look = previous
