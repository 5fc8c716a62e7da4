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
  layer's columns and of columns × target, so the data is read once (:class:`FoldFits`).
  Dropping feature i (columns S) from fold r's fit changes its coefficients by
  −A[:, S] (A[S, S])⁻¹ β[S] (A the inverse regularised Gram matrix); its held-out loss change is
  a w × q product; a removal is a rank-w down-date of A. Features are handled ``BLOCK`` at a
  time with matrix-matrix products (:class:`Block`), so a layer of p units costs O(R p²(p + n/R))
  multiply-adds in all, mostly in BLAS-3, with no re-fit.
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
redundancy rule above. Their measured effect on LeNet-5 is in docs/methods/mipp.md and docs/results/mipp-scaling.
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
    eye = torch.eye(width, dtype=torch.float64, device=x.device)
    cross = x.T @ y / n  # Σ_XY
    target = y.T @ y / n + 1e-9 * torch.eye(y.shape[1], dtype=torch.float64, device=y.device)
    weighted = torch.linalg.solve(target, cross.T).T.reshape(features, width, -1)  # Σ_XY Σ_YY⁻¹ per feature
    blocks = torch.einsum("fiq,fjq->fij", weighted, cross.reshape(features, width, -1))  # the diagonal blocks of Σ_XY Σ_YY⁻¹ Σ_YX only
    columns = x.reshape(n, features, width)
    variances = torch.einsum("nfi,nfj->fij", columns, columns) / n + 1e-9 * eye
    unexplained = eye - torch.linalg.solve(variances, blocks)
    return (-0.5 * torch.linalg.det(unexplained).clamp(min=1e-12).log()).clamp(min=0.0).float()


BLOCK = 64
"""Features whose statistics are gathered together with matrix-matrix products (:class:`FoldFits`)."""


class FoldFits:
    """The R cross-fitted ridge fits of ``y`` on the kept columns of ``x`` (module docstring),
    in the compact space of the kept columns: the inverse regularised Gram matrices A_r
    (R × K × K), the coefficients β_r (R × K × q), the held-out columns X_h and residuals
    E_h = Y_h − X_h β_r. Built from one Cholesky factorisation per fold."""

    def __init__(self, x: Tensor, y: Tensor, heldout: Tensor, kept_columns: Tensor, ridge: float = RIDGE) -> None:
        x, y = x.double(), y.double()
        self.columns = kept_columns.nonzero().flatten()  # compact index → column of x
        xk = x[:, self.columns]
        heldout_x, heldout_y = xk[heldout], y[heldout]  # (R, n_h, ·)
        heldout_gram = heldout_x.transpose(1, 2) @ heldout_x
        heldout_cross = heldout_x.transpose(1, 2) @ heldout_y
        self.train_rows = x.shape[0] - heldout.shape[1]
        train_gram = xk.T @ xk - heldout_gram + ridge * self.train_rows * torch.eye(len(self.columns), dtype=torch.float64, device=x.device)
        self.inverse = torch.cholesky_inverse(torch.linalg.cholesky(train_gram))
        self.coefficients = self.inverse @ (xk.T @ y - heldout_cross)
        self.heldout_x = heldout_x
        self.residual = heldout_y - heldout_x @ self.coefficients
        self.scale = 1.0 / (heldout.shape[1] * y.shape[1])  # squared error → mean per held-out entry
        self.pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # removals not yet folded into A, β, E
        self.removed: list[Tensor] = []  # their columns

    def block(self, columns: Tensor) -> Block:
        """The statistics of dropping each of ``columns`` (x's columns, kept) from the current fits."""
        index = torch.searchsorted(self.columns, columns)
        a = self.inverse[:, :, index]  # (R, K, B) columns of A
        u = self.heldout_x @ a  # X_h A[:, S]: the held-out prediction change per unit of a drop
        return Block(self, index, a, self.coefficients[:, index], u, u.transpose(1, 2) @ self.residual, u.transpose(1, 2) @ u)

    def refresh(self) -> None:
        """Fold the pending removals into A and β (one matrix product) and drop their columns."""
        if not self.pending:
            return
        a, t, c, u = (torch.cat(parts, dim) for parts, dim in zip(zip(*self.pending), (2, 1, 1, 2)))
        self.inverse -= a @ t
        self.coefficients -= a @ c
        self.residual += u @ c
        removed = torch.zeros(len(self.columns), dtype=torch.bool, device=self.columns.device)
        for columns in self.removed:
            removed[torch.searchsorted(self.columns, columns)] = True
        kept = ~removed
        self.inverse = self.inverse[:, kept][:, :, kept]
        self.coefficients, self.heldout_x = self.coefficients[:, kept], self.heldout_x[:, :, kept]
        self.columns = self.columns[kept]
        self.pending, self.removed = [], []


class Block:
    """The drop statistics of a block of B columns, kept current through removals inside the
    block by rank-w corrections (each O(R · B · (K + n_h + q))): A's columns ``a``, β's rows
    ``beta``, ``u`` = X_h a, ``cross`` = uᵀE and ``gram`` = uᵀu."""

    def __init__(self, fits: FoldFits, index: Tensor, a: Tensor, beta: Tensor, u: Tensor, cross: Tensor, gram: Tensor) -> None:
        self.fits, self.index, self.a, self.beta, self.u, self.cross, self.gram = fits, index, a, beta, u, cross, gram

    def loss_increase(self, s: slice) -> tuple[Tensor, Tensor, Tensor]:
        """Per fold, the held-out loss increase of dropping the block's columns ``s``; also
        α = A[S, S] and c = α⁻¹ β[S] (the coefficient change is −A[:, S] c)."""
        alpha = self.a[:, self.index[s], s]  # (R, w, w)
        change = torch.linalg.solve(alpha, self.beta[:, s])  # (R, w, q)
        cross = (change * self.cross[:, s]).sum((1, 2))
        square = (change * (self.gram[:, s, s] @ change)).sum((1, 2))
        return (2 * cross + square) * self.fits.scale, alpha, change

    def unexplained(self, alpha: Tensor) -> float:
        """The largest fraction of variance of the columns (one direction) that the other kept
        columns leave unexplained under the ridge, averaged over folds (1 / A_ii for one column)."""
        if alpha.shape[1] == 1:
            return float((1 / alpha).mean() / self.fits.train_rows)
        return float(torch.linalg.eigvalsh(torch.linalg.inv(alpha)).amax(dim=1).mean() / self.fits.train_rows)

    def remove(self, s: slice, alpha: Tensor, change: Tensor) -> None:
        """Drop the columns ``s``: the block's statistics follow (a rank-w down-date each);
        A, β and the residuals E (which gain u c) follow at the next :meth:`FoldFits.refresh`,
        in one matrix product for the whole block."""
        fits, a_s, u_s = self.fits, self.a[:, :, s].clone(), self.u[:, :, s].clone()
        t = torch.linalg.solve(alpha, a_s[:, self.index].transpose(1, 2))  # α⁻¹ A[S, block]
        gram_s, gram_ss, cross_s = self.gram[:, :, s].clone(), self.gram[:, s, s].clone(), self.cross[:, s].clone()
        fits.pending.append((a_s, torch.linalg.solve(alpha, a_s.transpose(1, 2)), change, u_s))
        fits.removed.append(fits.columns[self.index[s]])
        self.beta -= a_s[:, self.index] @ change
        self.cross += gram_s @ change - t.transpose(1, 2) @ (cross_s + gram_ss @ change)
        self.gram += t.transpose(1, 2) @ gram_ss @ t - gram_s @ t - t.transpose(1, 2) @ gram_s.transpose(1, 2)
        self.a -= a_s @ t
        self.u -= u_s @ t


@dataclass
class GaussianOutcome:
    """What :func:`gaussian_sequential_test` decided: the kept features, each decided feature's
    confidence (0 for a redundant one, removed untested), and the work done (tests, removals)."""

    keep: Tensor
    confidence_worse: dict[int, float]
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
    ``test(d) ≥ confidence`` for its per-fold held-out loss increases d. Never the last kept one.

    Features are taken ``BLOCK`` at a time: their statistics come from matrix products, and a
    removal inside the block corrects the rest (:class:`Block`), so each decision is exactly
    the sequential one."""
    clock = time.perf_counter()
    keep = keep.clone()
    fits = FoldFits(x, y, heldout, keep.repeat_interleave(width), ridge)
    outcome = GaussianOutcome(keep, {}, 0, 0, 0.0)
    offsets = torch.arange(width, device=x.device)
    for first in range(0, len(order), BLOCK):
        if keep.sum() <= 1:
            break
        features = order[first : first + BLOCK]
        block = fits.block((torch.tensor(features, device=x.device)[:, None] * width + offsets).flatten())
        for position, feature in enumerate(features):
            if keep.sum() <= 1:
                break
            s = slice(position * width, (position + 1) * width)
            increase, alpha, change = block.loss_increase(s)
            if block.unexplained(alpha) <= REDUNDANT * ridge:
                informative, score = False, 0.0
            else:
                outcome.tests += 1
                score = test(increase)
                informative = score >= confidence
            outcome.confidence_worse[feature] = score
            if not informative:
                block.remove(s, alpha, change)
                keep[feature] = False
                outcome.removals += 1
            if on_feature is not None:
                on_feature(feature, informative, score)
        fits.refresh()
    outcome.keep = keep
    outcome.seconds = time.perf_counter() - clock
    return outcome
