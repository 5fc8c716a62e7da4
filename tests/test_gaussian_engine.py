"""The closed-form (linear-Gaussian) TERC engine: known answers and its algebra against re-solving."""

import math
import re

import pytest
import torch

from infoprune.estimators import gaussian
from infoprune.estimators.gaussian import (
    gaussian_conditional_information,
    gaussian_copula,
    gaussian_sequential_test,
    single_gaussian_information,
)
from infoprune.estimators.predictive import CrossFitSplit
from infoprune.estimators.terc import TercConfig, confidence_loss_increased, terc_select


def test_conditional_information_matches_the_analytic_value_on_gaussian_data():
    """X, Y, Z jointly Gaussian with a known covariance: I(X;Y|Z) = ½ log(det Σ_Y|Z / det Σ_Y|XZ)."""
    covariance = torch.tensor([
        [1.0, 0.6, 0.3, 0.5],
        [0.6, 1.0, 0.2, 0.4],
        [0.3, 0.2, 1.0, 0.1],
        [0.5, 0.4, 0.1, 1.0],
    ], dtype=torch.float64)  # columns: x, y1, y2, z

    def residual(target: list[int], given: list[int]) -> torch.Tensor:
        block = covariance[target][:, target]
        if given:
            cross = covariance[target][:, given]
            block = block - cross @ torch.linalg.inv(covariance[given][:, given]) @ cross.T
        return torch.linalg.det(block)

    analytic = 0.5 * math.log(residual([1, 2], [3]) / residual([1, 2], [0, 3]))
    unconditional = 0.5 * math.log(residual([1, 2], []) / residual([1, 2], [0]))
    generator = torch.Generator().manual_seed(0)
    samples = torch.randn(1_000_000, 4, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(covariance).T
    x, y, z = samples[:, :1], samples[:, 1:3], samples[:, 3:]
    assert gaussian_conditional_information(x, y, z) == pytest.approx(analytic, abs=2e-3)
    assert gaussian_conditional_information(x, y) == pytest.approx(unconditional, abs=2e-3)
    assert analytic > 0.05  # the test has something to find


def test_single_information_is_the_closed_form_and_orders_features():
    generator = torch.Generator().manual_seed(1)
    y = torch.randn(50_000, 1, generator=generator)
    rho = torch.tensor([0.0, 0.3, 0.9])
    x = rho * y + (1 - rho**2).sqrt() * torch.randn(50_000, 3, generator=generator)
    information = single_gaussian_information((x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std())
    assert torch.allclose(information, -0.5 * torch.log(1 - rho**2), atol=5e-3)


@pytest.mark.parametrize("width", [1, 3])
def test_sequential_decisions_equal_re_solving_the_ridge_fits(width: int, monkeypatch):
    """Every tested feature's per-fold held-out loss increase, with removals down-dated inside
    and across blocks, equals that of ridge regressions re-solved from scratch each step."""
    monkeypatch.setattr(gaussian, "BLOCK", 4)  # several blocks on 12 features
    generator = torch.Generator().manual_seed(0)
    features = 12
    x = torch.randn(300, features * width, generator=generator, dtype=torch.float64)
    y = x[:, : 3 * width] @ torch.randn(3 * width, 2, generator=generator, dtype=torch.float64)
    y = y + 2.0 * torch.randn(300, 2, generator=generator, dtype=torch.float64)
    split = CrossFitSplit.make(300, 5, generator)
    ridge = 1e-3

    def heldout_losses(kept: torch.Tensor) -> torch.Tensor:
        losses = []
        for train, heldout in zip(split.train, split.heldout):
            xk = x[:, kept.repeat_interleave(width)]
            gram = xk[train].T @ xk[train] + ridge * len(train) * torch.eye(xk.shape[1], dtype=torch.float64)
            error = y[heldout] - xk[heldout] @ torch.linalg.solve(gram, xk[train].T @ y[train])
            losses.append(error.pow(2).mean())
        return torch.stack(losses)

    order = torch.randperm(features, generator=generator).tolist()
    increases = []

    def recorded_test(difference: torch.Tensor) -> float:
        increases.append(difference)
        return confidence_loss_increased(difference)

    outcome = gaussian_sequential_test(
        x, y, split.heldout, torch.ones(features, dtype=torch.bool), order, 0.9, recorded_test, width, ridge
    )
    kept, expected = torch.ones(features, dtype=torch.bool), []
    for feature in order:
        if kept.sum() == 1:
            break
        without = kept.clone()
        without[feature] = False
        difference = heldout_losses(without) - heldout_losses(kept)
        expected.append(difference)
        if confidence_loss_increased(difference) < 0.9:
            kept = without
    assert torch.equal(outcome.keep, kept)
    assert 0 < kept.sum() < features  # the check covers keeps and removals
    assert len(increases) == len(expected)
    for got, want in zip(increases, expected):
        assert torch.allclose(got, want, atol=1e-10)


def teacher_layer(samples=600, copies=3, dead=3, seed=0):
    """As tests/test_terc.py: a singleton, two units copied ``copies`` times, dead units."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, 6, generator=g)
    teacher = torch.relu(z @ torch.randn(6, 3, generator=g))
    readout = torch.randn(3, 4, generator=g)
    readout[0] *= 3
    columns = [teacher[:, :1]] + [teacher[:, j : j + 1].repeat(1, copies) for j in (1, 2)]
    columns.append(torch.relu(z @ torch.randn(6, dead, generator=g)))
    return torch.cat(columns, 1), teacher @ readout


def test_gaussian_engine_keeps_singleton_one_copy_each_and_no_dead_unit():
    x, y = teacher_layer()
    result = terc_select(x, y, TercConfig(engine="gaussian"), torch.Generator().manual_seed(0))
    assert result.keep[0] and result.keep[1:4].sum() == 1 and result.keep[4:7].sum() == 1
    assert not result.keep[7:].any()
    assert set(result.order[:3]) == {7, 8, 9}
    # copies of a kept unit are redundant: removed untested (confidence 0), never by a t-test
    assert sum(result.confidence_worse[u] == 0.0 for u in range(1, 7)) == 4


def test_duplicated_and_constant_units_do_not_break_the_factorisation():
    """A singular covariance (exact duplicates, a constant column) is handled: duplicates go as
    redundant, the constant as constant, the informative unit stays."""
    generator = torch.Generator().manual_seed(2)
    signal = torch.randn(400, 1, generator=generator)
    x = torch.cat([signal, signal, signal, torch.ones(400, 1), torch.randn(400, 2, generator=generator)], 1)
    result = terc_select(x, 2 * signal, TercConfig(engine="gaussian"), torch.Generator().manual_seed(0))
    assert result.keep.tolist().count(True) == 1 and result.keep[:3].sum() == 1
    assert result.constant == [3]


def test_copula_makes_the_test_invariant_to_monotone_transforms():
    generator = torch.Generator().manual_seed(3)
    signal = torch.randn(500, 2, generator=generator)
    x = torch.cat([signal, torch.randn(500, 3, generator=generator)], 1)
    y = (signal[:, :1] + signal[:, 1:]) ** 3
    config = TercConfig(engine="gaussian", copula=True)
    plain = terc_select(x, y, config, torch.Generator().manual_seed(0))
    warped = terc_select(torch.exp(x), y, config, torch.Generator().manual_seed(0))
    assert torch.equal(plain.keep, warped.keep) and plain.confidence_worse == warped.confidence_worse
    assert plain.keep[:2].all()
    assert torch.equal(gaussian_copula(torch.exp(x)), gaussian_copula(x))


def test_sequential_test_never_empties_a_layer_and_counts_its_work():
    generator = torch.Generator().manual_seed(4)
    x, y = torch.randn(300, 6, generator=generator), torch.randn(300, 2, generator=generator)
    split = CrossFitSplit.make(300, 5, generator)
    outcome = gaussian_sequential_test(
        x, y, split.heldout, torch.ones(6, dtype=torch.bool), list(range(6)), 0.9, confidence_loss_increased
    )
    assert outcome.keep.sum() == 1 and outcome.tests == 5 and outcome.removals == 5


def test_ridge_setting_is_validated():
    with pytest.raises(ValueError, match=r"ridge must be a number in \(0, 1\) \(the penalty per training row\), got 0"):
        TercConfig(ridge=0)


def test_too_few_samples_for_the_widest_group_is_refused_before_any_work():
    import infoprune
    from torch import nn

    net = nn.Sequential(nn.Linear(8, 40), nn.ReLU(), nn.Linear(40, 3))
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    message = (
        "MIPP needs at least 80 calibration samples here (5 cross-fitting folds of ≥ 10, and twice the widest "
        "tested layer, '0' with 40 units); got 60. Pass more calibration data."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        infoprune.prune(net, x, "mipp", engine="gaussian", progress=None)


def test_non_finite_activations_are_named_not_spread_through_the_algebra():
    import infoprune
    from torch import nn

    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x)

    net = nn.Sequential(nn.Linear(4, 6), Exp(), nn.Linear(6, 2))
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    x[-1] = 1e4  # exp overflows to inf on this sample
    with pytest.raises(ValueError, match=r"Non-finite \(NaN or inf\) activations at the units of '0'"):
        infoprune.prune(net, x, "mipp", engine="gaussian", progress=None)
