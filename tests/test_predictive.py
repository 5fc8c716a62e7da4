"""The loss-reduction MI estimator (MIPP §4.2.2) on variables with a known answer."""

import torch

from infoprune.estimators.predictive import CrossFitSplit, predictive_information, standardise


def _estimate(x, y):
    return predictive_information(x, y, hidden_size=64, iterations=300, batch_size=64, seed=0).mean().item()


def test_independent_target_reads_near_zero():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 3, generator=g), torch.randn(600, 2, generator=g)
    assert abs(_estimate(x, y)) < 0.05


def test_copied_target_reads_clearly_positive():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 3, generator=g)
    assert _estimate(x, x[:, :2].clone()) > 0.8


def test_partial_dependence_sits_in_between():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(600, 2, generator=g)
    y = x[:, :1] + torch.randn(600, 1, generator=g)  # half the variance explained
    assert 0.3 < _estimate(x, y) < 0.7


def test_cross_fit_folds_are_disjoint_and_cover_training_rows():
    split = CrossFitSplit.make(53, 5, torch.Generator().manual_seed(0))
    assert split.heldout.shape == (5, 10)
    for k in range(5):
        held = set(split.heldout[k].tolist())
        train = set(split.train[k].tolist())
        assert not held & train and len(held | train) == 53


def test_standardise_flags_constant_columns():
    values = torch.stack([torch.arange(10.0), torch.full((10,), 3.0)], dim=1)
    scaled, constant = standardise(values)
    assert constant.tolist() == [False, True]
    assert torch.allclose(scaled[:, 0].std(unbiased=False), torch.tensor(1.0))
    assert (scaled[:, 1] == 0).all()
