"""ITPruner: the budget forms, the width solver, and end-to-end pruning under a budget."""

import numpy as np
import pytest
import torch
from torch import nn

import infoprune
from infoprune.methods.itpruner import (
    ITPruner,
    keep_largest,
    layer_importance,
    repair_widths,
    smallest_widths,
    solve_multipliers,
)
from infoprune.metrics import count_flops, count_params
from infoprune.models import build_model
from infoprune.network import Budget, Network, QuadraticCost


class TinyResidual(nn.Module):
    """conv-BN stem, one residual block (prunable inner conv, coupled outer), a hidden fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.inner = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.inner_bn = nn.BatchNorm2d(12)
        self.outer = nn.Conv2d(12, 8, 3, padding=1, bias=False)
        self.outer_bn = nn.BatchNorm2d(8)
        self.hidden = nn.Linear(8 * 4 * 4, 20)
        self.out = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(x + self.outer_bn(self.outer(torch.relu(self.inner_bn(self.inner(x))))))
        x = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


def lenet_and_inputs(n: int = 120):
    torch.manual_seed(0)
    return build_model("lenet5").eval(), torch.randn(n, 1, 28, 28)


def tiny_residual_and_inputs(n: int = 40):
    torch.manual_seed(0)
    model = TinyResidual().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model, torch.randn(n, 3, 8, 8)


def cifar_model_and_inputs(name: str, n: int = 16):
    torch.manual_seed(0)
    return build_model(name).eval(), torch.randn(n, 3, 32, 32)


def random_masks(structure, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for layer in structure.groups:
        keep = int(torch.randint(1, layer.units + 1, (1,), generator=generator))
        masks[layer.name] = keep_largest(torch.rand(layer.units, generator=generator), keep)
    return masks


@pytest.mark.parametrize(
    "make",
    [lenet_and_inputs, tiny_residual_and_inputs, lambda: cifar_model_and_inputs("vgg11"), lambda: cifar_model_and_inputs("resnet20")],
    ids=["lenet5", "tiny-residual", "vgg11", "resnet20"],
)
def test_budget_forms_equal_the_counts_of_physically_pruned_models(make):
    model, inputs = make()
    example = inputs[:2]
    structure = Network(model, example)
    flops, params = structure.flops_cost(), structure.params_cost()
    assert flops.full == count_flops(model, example)
    assert params.full == count_params(model)
    for seed in range(3):
        masks = random_masks(structure, seed)
        pruned = structure.apply_masks(masks)
        widths = {name: int(mask.sum()) for name, mask in masks.items()}
        assert flops.at_widths(widths) == pytest.approx(count_flops(pruned, example), rel=1e-9)
        assert params.at_widths(widths) == pytest.approx(count_params(pruned), rel=1e-9)


def test_lenet_flops_form_has_linear_ends_and_cross_terms_between_adjacent_layers():
    model, inputs = lenet_and_inputs(2)
    structure = Network(model, inputs)
    form = structure.flops_cost()
    assert form.names == ("conv1", "conv2", "fc1", "fc2")
    # conv1 reads the fixed input; fc3 (the output layer) reads fc2: linear terms.
    np.testing.assert_allclose(form.linear, [2 * 1 * 6 * 25 * 28 * 28, 0, 0, 2 * 84 * 10])
    # conv2 reads conv1, fc1 reads conv2 (5×5 maps), fc2 reads fc1: cross terms only there.
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[2, 3] = 2 * 6 * 16 * 25 * 10 * 10, 2 * 400 * 120, 2 * 120 * 84
    np.testing.assert_allclose(form.quadratic, expected)
    x = np.array([0.5, 0.25, 0.8, 0.1])
    step = 1e-6 * np.eye(4)
    numeric = [(form(x + step[i]) - form(x - step[i])) / 2e-6 for i in range(4)]
    np.testing.assert_allclose(form.gradient(x), numeric, rtol=1e-6)


def test_a_residual_stream_is_one_variable_with_cross_terms_to_the_layers_it_connects():
    model, inputs = tiny_residual_and_inputs(2)
    structure = Network(model, inputs)
    assert structure.names == ["stem", "inner", "hidden"]
    assert [p.name for p in structure.group("stem").producers] == ["stem", "outer"]
    form = structure.flops_cost()
    conv = 2 * 8 * 12 * 9 * 64  # inner reads the stream (8 -> 12), outer writes it (12 -> 8), 8×8 maps
    # rows: the group a layer reads, columns: the group it writes
    np.testing.assert_allclose(form.quadratic, [[0, conv, 2 * 128 * 20], [conv, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(form.linear, [2 * 3 * 8 * 9 * 64, 0, 2 * 20 * 5])


def test_importance_is_exp_of_minus_beta_times_normalised_similarity():
    similarity = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.4], [0.2, 0.4, 1.0]])
    s = np.array([0.8, 1.0, 0.6])
    np.testing.assert_allclose(layer_importance(similarity, beta=3.0), np.exp(-3.0 * s / s.sum()))
    assert layer_importance(torch.ones(1, 1), beta=5.0).tolist() == [1.0]


def test_solver_keeps_the_important_layer_and_spends_the_rest_on_the_other():
    # cost = 100 x0 + 100 x1, budget 150: the LP optimum is x0 = 1, x1 = 0.5 when α0 > α1.
    cost = QuadraticCost(("a", "b"), np.array([10.0, 10.0]), 0.0, np.array([100.0, 100.0]), np.zeros((2, 2)))
    solution = solve_multipliers(np.array([1.0, 0.5]), [Budget("FLOPs", cost, 150.0)], np.array([0.1, 0.1]))
    assert solution.success
    np.testing.assert_allclose(solution.x, [1.0, 0.5], atol=1e-6)


def test_repair_shrinks_rounded_widths_into_the_budget_then_fills_the_slack():
    cost = QuadraticCost(("a", "b"), np.array([10.0, 10.0]), 0.0, np.array([100.0, 100.0]), np.zeros((2, 2)))
    budget = Budget("FLOPs", cost, 149.0)  # 10 + 5 units = 150 is over, so one unit must go
    units, lower = np.array([10.0, 10.0]), np.array([1.0, 1.0])
    repaired = repair_widths(np.array([10.0, 5.0]), units, lower, 1, np.array([1.0, 0.5]), [budget])
    assert repaired.tolist() == [10.0, 4.0]
    grown = repair_widths(np.array([7.0, 4.0]), units, lower, 1, np.array([1.0, 0.5]), [budget])
    assert grown.tolist() == [10.0, 4.0]


def test_smallest_widths_respect_min_width_one_unit_and_the_grid():
    units = np.array([6.0, 16.0, 120.0])
    assert smallest_widths(units, 0.1, 1).tolist() == [1, 2, 12]
    assert smallest_widths(units, 0.1, 8).tolist() == [6, 8, 16]


@pytest.mark.parametrize("budget", [{"flops": 0.5}, {"flops": 0.25}, {"params": 0.3}, {"flops": 0.6, "params": 0.4}])
def test_lenet_pruned_under_a_budget_meets_it_and_matches_the_form(budget):
    model, inputs = lenet_and_inputs()
    result = infoprune.prune(model, inputs, method="itpruner", device="cpu", **budget)
    predicted = result.details["budgets"]
    if "flops" in budget:
        assert result.flops_after <= budget["flops"] * result.flops_before
        assert result.flops_after == pytest.approx(predicted["FLOPs"]["predicted"], rel=0.01)
    if "params" in budget:
        assert result.params_after <= budget["params"] * result.params_before
        assert result.params_after == pytest.approx(predicted["params"]["predicted"], rel=0.01)
    assert {name: s.kept for name, s in result.layers.items()} == result.details["widths"]
    assert all(s.kept >= 1 for s in result.layers.values())


@pytest.mark.parametrize("name", ["vgg11", "resnet20"])
def test_cifar_models_pruned_to_48_percent_of_flops_meet_the_budget(name):
    model, inputs = cifar_model_and_inputs(name)
    result = infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=0.48, beta=246, samples=16)
    assert result.flops_after <= 0.48 * result.flops_before
    assert result.flops_after == pytest.approx(result.details["budgets"]["FLOPs"]["predicted"], rel=0.01)
    assert result.flops_after >= 0.45 * result.flops_before  # rounding leaves little of the budget unused
    with torch.no_grad():
        assert result.model(inputs[:2]).shape == (2, 10)


def test_absolute_budget_and_round_to():
    model, inputs = lenet_and_inputs()
    result = infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=300_000, round_to=4)
    assert result.flops_after <= 300_000
    for summary in result.layers.values():
        assert summary.kept % 4 == 0 or summary.kept == summary.total


def test_kept_filters_have_the_largest_l1_norms():
    model, inputs = lenet_and_inputs()
    result = infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=0.3)
    for name, mask in result.masks.items():
        norms = dict(model.named_modules())[name].weight.detach().flatten(1).abs().sum(1)
        if not mask.all():
            assert norms[mask].min() >= norms[~mask].max()


def test_infeasible_budget_names_the_smallest_reachable_one():
    model, inputs = lenet_and_inputs()
    least = Network(model, inputs[:2]).flops_cost().at_widths(np.array([1, 2, 12, 9]))
    with pytest.raises(ValueError, match=f"smallest reachable is {least:,.0f} FLOPs"):
        infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=0.01)


def test_rbf_kernel_and_activation_criterion_run_and_meet_the_budget():
    model, inputs = tiny_residual_and_inputs()
    result = infoprune.prune(
        model, inputs, method="itpruner", device="cpu", flops=0.5, kernel="rbf", criterion="activation", samples=40
    )
    assert result.flops_after <= 0.5 * result.flops_before
    assert set(result.details["importance"]) == {"stem", "inner", "hidden"}


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="needs a budget"):
        ITPruner()
    with pytest.raises(ValueError, match="FLOPs budget must be a positive number"):
        ITPruner(flops=-0.5)
    with pytest.raises(ValueError, match="Unknown kernel"):
        ITPruner(flops=0.5, kernel="cosine")
    with pytest.raises(ValueError, match="Unknown criterion"):
        ITPruner(flops=0.5, criterion="taylor")
    with pytest.raises(ValueError, match="min_width"):
        ITPruner(flops=0.5, min_width=0)
    model, inputs = lenet_and_inputs(50)
    with pytest.raises(ValueError, match="samples=100"):
        infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=0.5)
