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
        infoprune.prune(build_model("lenet5"), torch.randn(20, 1, 28, 28), "mipp", **TINY)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.randn(0, 1, 28, 28), "mipp")
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.utils.data.DataLoader([]), "mipp")


def test_inputs_the_model_rejects():
    with pytest.raises(ValueError, match=r"rejects calibration inputs of shape \(3, 32, 32\)"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 3, 32, 32), "mipp")


def test_non_finite_activations():
    x = torch.randn(60, 1, 28, 28)
    x[3, 0, 10, 10] = float("nan")
    with pytest.raises(ValueError, match="Non-finite"):
        infoprune.prune(build_model("lenet5"), x, "mipp", **TINY)


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="Unknown pruning method 'nope'.*mipp"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "nope")
    with pytest.raises(TypeError, match="does not take \\['confidance'\\]"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", confidance=0.9)


def test_bad_collapse_function():
    with pytest.raises(ValueError, match="collapse must be one of"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", collapse="max")


def test_constant_unit_is_removed_not_crashing():
    model = build_model("lenet300")
    with torch.no_grad():  # hidden unit 0 is dead: constant zero after ReLU
        model.net[1].weight[0].zero_()
        model.net[1].bias[0] = -1.0
    result = infoprune.prune(model, torch.randn(60, 1, 28, 28), "mipp", device="cpu", **TINY)
    assert not result.masks["net.1"][0]
    assert 0 in result.details["layers"]["net.1"]["constant_units"]
