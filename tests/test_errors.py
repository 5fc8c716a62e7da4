"""Bad input gets a clear error that names the problem."""

import pytest
import torch
from torch import nn

import infoprune
from infoprune.models import build_model

TINY = dict(hidden_size=8, fit_iterations=2, refit_iterations=1, ordering_iterations=1)


def test_confidence_outside_unit_interval():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence must lie in"):
            infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", confidence=bad)


def test_model_without_prunable_layer():
    with pytest.raises(ValueError, match="no prunable hidden layer"):
        infoprune.prune(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.randn(60, 1, 28, 28), "mipp")


def test_too_few_samples_says_how_many():
    with pytest.raises(ValueError, match="at least 50 calibration samples"):
        infoprune.prune(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.randn(20, 4), "mipp", **TINY)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.randn(0, 1, 28, 28), "mipp")
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.utils.data.DataLoader([]), "mipp")


def test_inputs_the_model_rejects():
    with pytest.raises(ValueError, match=r"rejects calibration inputs of shape \(3, 32, 32\)"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 3, 32, 32), "mipp")


def test_non_finite_activations():
    x = torch.randn(240, 1, 28, 28)
    x[3, 0, 10, 10] = float("nan")
    with pytest.raises(ValueError, match="Non-finite"):
        infoprune.prune(build_model("lenet5"), x, "mipp", **TINY)


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="Unknown pruning method 'nope'.*mipp"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "nope")
    with pytest.raises(TypeError, match="does not take \\['confidance'\\]"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", confidance=0.9)


def test_bad_map_reduction():
    with pytest.raises(ValueError, match="map_reduction must be one of"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", map_reduction="max")


def test_constant_unit_is_removed_not_crashing():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # hidden unit 0 is dead: constant zero after ReLU
        model[0].weight[0].zero_()
        model[0].bias[0] = -1.0
    result = infoprune.prune(model, torch.randn(60, 6), "mipp", device="cpu", **TINY)
    assert not result.masks["0"][0]
    assert 0 in result.details["layers"]["0"]["constant_units"]
