"""MIPP at a budget (FLOPs, params, units) and its input checks."""

import pytest
import torch

import infoprune
from infoprune.experiments.sweep_config import parse_config
from infoprune.models import build_model

TINY = dict(hidden_size=32, fit_iterations=30, refit_iterations=3, ordering_iterations=3, max_passes=3, device="cpu")


@pytest.fixture(scope="module")
def lenet_and_inputs():
    torch.manual_seed(0)
    return build_model("lenet5"), torch.randn(240, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("budget", [dict(flops=0.5), dict(params=0.25), dict(ratio=0.6)])
def test_budget_lands_at_or_under_and_within_two_points(lenet_and_inputs, budget):
    model, x = lenet_and_inputs
    result = infoprune.prune(model, x, "mipp", **budget, **TINY)
    (what, target), = budget.items()
    reached = {
        "flops": result.flops_after / result.flops_before,
        "params": result.params_after / result.params_before,
        "ratio": 1 - result.units_removed_fraction,
    }[what]
    goal = 1 - target if what == "ratio" else target
    assert goal - 0.02 <= reached <= goal + 1e-9, (what, reached)
    details = result.details
    assert details["passes"] >= 1 and 0.5 <= details["confidence"] < 1
    assert details["finish"] in ("search", "trim", "fill")
    assert not result.collapsed and all(s.kept >= 1 for s in result.layers.values())


def test_absolute_flops_budget(lenet_and_inputs):
    model, x = lenet_and_inputs
    full = infoprune.prune(model, x, "mipp", confidence=0.5, **TINY).flops_before
    result = infoprune.prune(model, x, "mipp", flops=0.4 * full, **TINY)
    assert 0.38 * full <= result.flops_after <= 0.4 * full


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(flops=0), r"FLOPs budget must be a positive number"),
        (dict(params=-0.5), r"params budget must be a positive number"),
        (dict(ratio=1.5), r"ratio must lie in \(0, 1\), got 1.5"),
        (dict(ratio=0), r"ratio must lie in \(0, 1\), got 0"),
        (dict(confidence=0.9, flops=0.5), r"either confidence= or a budget \(flops=\), not both"),
        (dict(flops=0.5, params=0.5), r"one budget, got \['flops', 'params'\]"),
        (dict(engine="turbo"), r"engine must be one of \('gaussian', 'fast', 'reference'\), got 'turbo'"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        infoprune.prune(build_model("lenet5"), torch.randn(240, 1, 28, 28), "mipp", **kwargs)


def test_unreachable_budget_names_the_smallest_reachable(lenet_and_inputs):
    model, x = lenet_and_inputs
    with pytest.raises(ValueError, match=r"FLOPs budget .* cannot be met: the smallest reachable is .* one unit"):
        infoprune.prune(model, x, "mipp", flops=0.001, **TINY)
    with pytest.raises(ValueError, match=r"FLOPs budget 1 .* cannot be met"):
        infoprune.prune(model, x, "mipp", flops=1.0000001, **TINY)  # > 1: an absolute count of ~1 FLOP


def test_a_sweep_can_run_mipp_at_budget_levels():
    config = parse_config(
        {
            "grid": {"models": ["lenet5"], "datasets": ["mnist"]},
            "methods": [{"name": "mipp", "levels": {"param": "flops", "values": [0.5, 0.25, 0.1]}}],
        }
    )
    entry = config.entry("mipp")
    assert entry.level_param == "flops" and entry.level_values == (0.5, 0.25, 0.1)
