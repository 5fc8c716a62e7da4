"""TERC under a linear-Gaussian model: MIPP's test in closed form (``engine="gaussian"``).

For jointly Gaussian variables transfer entropy equals Granger causality (Barnett, Barrett &
Seth 2009, PRL 103, 238701): the information feature i adds about the target Y, given the
kept features K \\ i, is

    I(X_i ; Y | X_{K∖i}) = ½ log det Σ_{Y|K∖i} − ½ log det Σ_{Y|K}             (1)

the log-ratio of the residual covariances of two nested least-squares fits
(:func:`gaussian_conditional_information`). The engine keeps MIPP's protocol and only swaps
the predictor: the MLP of §4.2.2 becomes a ridge regression, so every re-fit is a closed-form
update instead of hundreds of optimiser steps.

* **Same test, same meaning of ``confidence``.** R = ``repeats`` cross-fitted folds; fold r's
  ridge fit on the other folds is evaluated on fold r with and without feature i, and
  d_r = loss_without − loss_with (mean squared error per target column, as the MLP engine's
  loss) goes into the same one-sided t-test with R − 1 degrees of freedom
  (:func:`infoprune.estimators.terc.confidence_loss_increased`).
* **One factorisation per fold and layer.** Everything comes from the Gram matrices of the
  layer's columns and of columns × target, so the data is read once (:class:`FoldStatistics`).
  Dropping feature i (columns S) from fold r's fit changes its coefficients by
  −A[:, S] (A[S, S])⁻¹ β[S] (A the inverse regularised Gram matrix); its held-out loss change is
  a w × q product; a removal is a rank-w down-date of A (:meth:`FoldStatistics.remove`). A
  layer of p units costs O(R p²) per test and per removal, O(R p³) in all, with no re-fit.
* **Ordering** by each feature's own Gaussian MI with Y (−½ log det(I − Σ_SS⁻¹Σ_SY Σ_YY⁻¹ Σ_YS)),
  least informative first (§4.2.1).
* **Redundant features.** A feature whose columns the kept features explain up to the ridge's
  resolution (unexplained variance ≤ ``REDUNDANT`` × ridge, in every direction of a group) is
  removed without a test, confidence 0: it is the closed-form analogue of the MLP engines'
  exact-linear-combination rule, and without it the ridge's shrinkage (two copies share the
  penalty) would make every copy of a unit look informative.

Deviations from the paper, named: a linear predictor instead of an MLP (information a unit
carries only non-linearly is invisible; ``copula=True`` rank-transforms every column to normal
scores first, Ince et al. 2017, so monotone non-linear relations become linear), and the
redundancy rule above. Their measured effect on LeNet-5 is in the README ("Engines").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy import special, stats

Tensor = torch.Tensor

RIDGE = 1e-3
"""Ridge penalty λ per training row on standardised columns (the fast engine's screen uses the same)."""
REDUNDANT = 3.0
"""A feature is redundant when its unexplained variance (a fraction) is at most this many ridges:
an exact copy of a kept column still shows ≈ 2 λ (the ridge shrinks the copy's re-expression)."""


def gaussian_copula(values: Tensor) -> Tensor:
    """Each column replaced by the normal scores of its ranks, Φ⁻¹(rank / (n + 1)) (ties share
    their mean rank), so any monotone transform of a column gives the same result."""
    ranks = stats.rankdata(values.detach().cpu().double().numpy(), axis=0)
    scores = special.ndtri(ranks / (values.shape[0] + 1))
    return torch.from_numpy(scores).to(values.device, values.dtype)


def gaussian_conditional_information(x: Tensor, y: Tensor, given: Tensor | None = None) -> float:
    """Eq. (1): I(X ; Y | Z) in nats from the sample covariance, for jointly Gaussian columns
    (``x`` n × a, ``y`` n × b, ``given`` n × c or None for the unconditional I(X ; Y))."""
    z = given if given is not None else x[:, :0]
    data = torch.cat([x, y, z], 1).double()
    covariance = torch.cov(data.T).reshape(data.shape[1], data.shape[1])
    a, b = x.shape[1], y.shape[1]
    ys, xz, zs = slice(a, a + b), [*range(a), *range(a + b, data.shape[1])], list(range(a + b, data.shape[1]))
    return 0.5 * (_residual_logdet(covariance, ys, zs) - _residual_logdet(covariance, ys, xz))


def _residual_logdet(covariance: Tensor, target: slice, regressors: list[int]) -> float:
    """log det of the covariance of the ``target`` block given the ``regressors`` columns."""
    block = covariance[target, target]
    if regressors:
        cross = covariance[target][:, regressors]
        block = block - cross @ torch.linalg.solve(covariance[regressors][:, regressors], cross.T)
    return float(torch.linalg.slogdet(block).logabsdet)


def single_gaussian_information(x: Tensor, y: Tensor, width: int = 1) -> Tensor:
    """I(X_i ; Y) for each feature (``width`` adjacent columns) of standardised ``x`` against
    standardised ``y``, under the Gaussian model (the ordering of §4.2.1)."""
    n = x.shape[0]
    x, y = x.double(), y.double()
    features = x.shape[1] // width
    cross = x.T @ y / n  # Σ_XY
    target = y.T @ y / n + 1e-9 * torch.eye(y.shape[1], dtype=torch.float64, device=y.device)
    explained = cross @ torch.linalg.solve(target, cross.T)  # Σ_XY Σ_YY⁻¹ Σ_YX
    own = x.T @ x / n
    index = torch.arange(features * width, device=x.device).reshape(features, width)
    blocks = explained[index[:, :, None], index[:, None, :]]
    variances = own[index[:, :, None], index[:, None, :]] + 1e-9 * torch.eye(width, dtype=torch.float64, device=x.device)
    unexplained = torch.eye(width, dtype=torch.float64, device=x.device) - torch.linalg.solve(variances, blocks)
    return (-0.5 * torch.linalg.det(unexplained).clamp(min=1e-12).log()).clamp(min=0.0).float()


class FoldStatistics:
    """The R cross-fitted ridge fits of ``y`` on the kept columns of ``x``, as Gram-matrix
    statistics (module docstring): ``inverse`` A_r (R × P × P, zero outside the kept columns),
    ``coefficients`` β_r (R × P × q), ``residual_cross`` M_r = X_hᵀ(Y_h − X_h β_r) and
    ``heldout_gram`` H_r = X_hᵀX_h on each held-out fold h."""

    def __init__(self, x: Tensor, y: Tensor, heldout: Tensor, kept_columns: Tensor, ridge: float = RIDGE) -> None:
        x, y = x.double(), y.double()
        n, folds = x.shape[0], heldout.shape[0]
        gram, cross = x.T @ x, x.T @ y
        xh, yh = x[heldout], y[heldout]  # (R, n_h, ·)
        self.heldout_gram = xh.transpose(1, 2) @ xh
        heldout_cross = xh.transpose(1, 2) @ yh
        self.train_rows = n - heldout.shape[1]
        self.ridge = ridge * self.train_rows
        self.scale = 1.0 / (heldout.shape[1] * y.shape[1])  # squared error → mean per held-out entry
        columns = kept_columns.nonzero().flatten()
        train_gram = (gram - self.heldout_gram)[:, columns[:, None], columns[None, :]]
        train_gram = train_gram + self.ridge * torch.eye(len(columns), dtype=torch.float64, device=x.device)
        self.inverse = torch.zeros(folds, x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        self.inverse[:, columns[:, None], columns[None, :]] = torch.cholesky_inverse(torch.linalg.cholesky(train_gram))
        self.coefficients = self.inverse @ (cross - heldout_cross)
        self.residual_cross = heldout_cross - self.heldout_gram @ self.coefficients

    def unexplained(self, columns: slice) -> float:
        """The largest fraction of variance of ``columns`` (one direction) that the other kept
        columns leave unexplained under the ridge, averaged over folds (1 / A_ii for one column)."""
        block = self.inverse[:, columns, columns]
        schur = torch.linalg.eigvalsh(torch.linalg.inv(block)).amax(dim=1)  # the conditional Gram's largest
        return float(schur.mean() / self.train_rows)

    def loss_increase(self, columns: slice) -> tuple[Tensor, Tensor, Tensor]:
        """Per fold, the held-out loss increase of dropping ``columns``; also what
        :meth:`remove` needs (A[:, S], H A[:, S] and c = (A[S, S])⁻¹ β[S])."""
        a = self.inverse[:, :, columns].clone()  # (R, P, w); a copy: remove() changes the inverse in place
        change = torch.linalg.solve(self.inverse[:, columns, columns], self.coefficients[:, columns])  # (R, w, q)
        heldout_a = self.heldout_gram @ a  # (R, P, w)
        cross = (change * (a.transpose(1, 2) @ self.residual_cross)).sum((1, 2))
        square = (change * ((a.transpose(1, 2) @ heldout_a) @ change)).sum((1, 2))
        return (2 * cross + square) * self.scale, a, (heldout_a, change)

    def remove(self, columns: slice, a: Tensor, parts: tuple[Tensor, Tensor]) -> None:
        """Drop ``columns`` from every fold's fit (rank-w down-date; β and M follow)."""
        heldout_a, change = parts
        alpha = a[:, columns]
        self.inverse -= a @ torch.linalg.solve(alpha, a.transpose(1, 2))
        self.inverse[:, columns, :] = 0.0
        self.inverse[:, :, columns] = 0.0
        self.coefficients -= a @ change
        self.coefficients[:, columns] = 0.0
        self.residual_cross += heldout_a @ change


@dataclass
class GaussianOutcome:
    """What :func:`gaussian_sequential_test` decided: the kept features, each tested feature's
    confidence and mean held-out loss increase, and the work done (tests, down-dates)."""

    keep: Tensor
    confidence_worse: dict[int, float]
    loss_increase: dict[int, float]
    redundant: list[int]
    tests: int
    removals: int
    seconds: float


def gaussian_sequential_test(
    x: Tensor,
    y: Tensor,
    heldout: Tensor,
    keep: Tensor,
    order: list[int],
    confidence: float,
    test: Callable[[Tensor], float],
    width: int = 1,
    ridge: float = RIDGE,
    on_feature: Callable[[int, bool, float], None] | None = None,
) -> GaussianOutcome:
    """Alg. 2's loop in closed form: features in ``order``; feature i stays iff
    ``test(d) ≥ confidence`` for its per-fold held-out loss increases d. Never the last kept one."""
    clock = time.perf_counter()
    keep = keep.clone()
    statistics = FoldStatistics(x, y, heldout, keep.repeat_interleave(width), ridge)
    outcome = GaussianOutcome(keep, {}, {}, [], 0, 0, 0.0)
    for feature in order:
        if keep.sum() <= 1:
            break
        columns = slice(feature * width, (feature + 1) * width)
        increase, a, parts = statistics.loss_increase(columns)
        if statistics.unexplained(columns) <= REDUNDANT * ridge:
            informative, score = False, 0.0
            outcome.redundant.append(feature)
        else:
            outcome.tests += 1
            score = test(increase)
            informative = score >= confidence
        outcome.confidence_worse[feature] = score
        outcome.loss_increase[feature] = float(increase.mean())
        if not informative:
            statistics.remove(columns, a, parts)
            keep[feature] = False
            outcome.removals += 1
        if on_feature is not None:
            on_feature(feature, informative, score)
    outcome.keep = keep
    outcome.seconds = time.perf_counter() - clock
    return outcome

