"""One budget type for every method: one validation, one message, one convention (kept)."""

import pytest
import torch

import infoprune
from infoprune.methods import get_method
from infoprune.models import build_model
from infoprune.network import Budget, Network, check_budgets


def lenet_and_inputs(n: int = 240):
    torch.manual_seed(0)
    return build_model("lenet5").eval(), torch.randn(n, 1, 28, 28)


@pytest.mark.parametrize("method", ["mipp", "itpruner", "tp-magnitude", "l1"])
def test_every_method_refuses_a_bad_flops_value_with_the_same_message(method):
    with pytest.raises(ValueError) as refused:
        get_method(method)(flops=-0.5)
    assert str(refused.value) == (
        "The FLOPs budget must be a positive number: flops= is a fraction of the full model's FLOPs "
        "(0 < flops ≤ 1, e.g. 0.5) or an absolute count (> 1), got -0.5."
    )


def test_the_count_rules_name_the_method_and_the_accepted_budgets():
    assert check_budgets("x", ("flops", "params"), several=True, flops=0.5, params=2000) == {"flops": 0.5, "params": 2000.0}
    with pytest.raises(ValueError, match=r"^Method 'x' takes one budget, got \['ratio', 'flops'\]; pass only one of ratio=, flops=\.$"):
        check_budgets("x", ("ratio", "flops"), ratio=0.5, flops=0.5)
    with pytest.raises(ValueError, match=r"^Method 'x' needs a budget: pass flops= .* and/or params= .*; got none\.$"):
        check_budgets("x", ("flops", "params"), several=True)
    assert check_budgets("x", ("flops",), required=False) == {}
    with pytest.raises(TypeError, match=r"takes no budget \['ratio'\]"):
        check_budgets("x", ("flops",), ratio=0.5)
    with pytest.raises(ValueError, match=r"ratio must lie in \(0, 1\), got 0.0"):
        check_budgets("x", ("ratio",), ratio=0)
    assert check_budgets("x", ("ratio",), allow_zero_ratio=True, ratio=0) == {"ratio": 0.0}


def test_a_budget_bounds_what_is_kept_and_ratio_is_the_fraction_removed():
    model, inputs = lenet_and_inputs()
    network = Network(model, inputs[:2])
    flops = Budget.on(network, "flops", 0.25)
    assert flops.what == "FLOPs" and flops.target == pytest.approx(0.25 * flops.full)
    assert Budget.on(network, "params", 5000).target == 5000  # > 1: an absolute count
    units = Budget.on(network, "ratio", 0.75, network.groups[:2])  # conv1, conv2: 6 + 16 units
    assert units.what == "units" and units.full == 22 and units.target == pytest.approx(5.5)
    assert units.of_widths({"conv1": 3, "conv2": 2}) == 5 and units.met_by_widths({"conv1": 3, "conv2": 2})
    assert flops.of_widths({"conv1": 0}) == flops.of_widths({"conv1": 1})  # an emptied group keeps one physical unit


@pytest.mark.parametrize("method, extra", [("mipp", {"repeats": 2, "fit_iterations": 5}), ("itpruner", {}),
                                           ("tp-magnitude", {})])
def test_an_unreachable_budget_gets_the_same_message_from_every_method(method, extra):
    model, inputs = lenet_and_inputs()
    with pytest.raises(ValueError, match=r"^The FLOPs budget 1 \(0\.0% of the full model's [\d,]+\) cannot be met: "
                                         r"the smallest reachable is [\d,]+ FLOPs \([\d.]+%\), with .*\.$"):
        infoprune.prune(model, inputs, method, flops=1.0000001, device="cpu", progress=None, **extra)


def test_a_configured_method_object_is_a_budgeted_call_too():
    """The collapse policy reads the budget from a configured object as from keywords."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                torch.nn.Linear(10, 2)).eval()
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # global l1 at ratio 0.5 empties this layer: a dead network
    with pytest.raises(ValueError, match=r"^Method 'l1' at ratio=0.5 collapses the network"):
        infoprune.prune(model, torch.randn(8, 20), get_method("l1")(ratio=0.5), device="cpu", progress=None)
