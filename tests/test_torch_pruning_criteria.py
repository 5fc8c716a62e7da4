"""Torch-Pruning's criteria (``tp-*``): scores equal torch-pruning's own, budgets, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

import infoprune
from infoprune.data import LabelledTensors
from infoprune.estimators.ranking import ratio_within_budget
from infoprune.methods import PruningContext, get_method
from infoprune.models import build_model
from infoprune.network import Network
from infoprune.progress import progress_bar


def small_bn_cnn() -> nn.Sequential:
    """Conv-BN-ReLU twice, then two Linear layers: every tp criterion has something to score."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3),
    )  # fmt: skip


@pytest.fixture
def trained_looking_net():
    """The small net with non-trivial BatchNorm parameters and statistics, and labelled data."""
    torch.manual_seed(0)
    model = small_bn_cnn()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.2, 2.0)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model.eval()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,))
    return model, x, y


def torch_pruning_reference(model: nn.Module, x: torch.Tensor, importance) -> dict[str, torch.Tensor]:
    """Scores the way torch-pruning's MetaPruner gets them: every group of the dependency graph
    rooted at a Conv/Linear layer (the output layer ignored), scored by ``importance``."""
    names = {module: name for name, module in model.named_modules()}
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:2])
    scores = {}
    for group in dg.get_all_groups(ignored_layers=[model[-1]], root_module_types=[nn.Conv2d, nn.Linear]):
        score = importance(group)
        if score is not None:  # MetaPruner skips a group its importance cannot score
            scores[names[group[0].dep.target.module]] = score
    return scores


def our_scores(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **options) -> dict[str, torch.Tensor]:
    method = get_method(name)(ratio=0.5, **options)
    context = PruningContext(model, Network(model, x[:2]), x, y, torch.device("cpu"), 0, progress_bar)
    return method.unit_scores(context, {})


def with_loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return model


def with_fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """``.grad`` = the mean over samples of the squared per-sample loss gradient (OBD's ``h``)."""
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            fisher[name] += p.grad.pow(2) / x.shape[0]
    for name, p in model.named_parameters():
        p.grad = fisher[name]
    return model


CASES = {
    "tp-magnitude p=1": ("tp-magnitude", {"p": 1}, lambda: tp.importance.GroupMagnitudeImportance(p=1), None),
    "tp-magnitude p=2": ("tp-magnitude", {"p": 2}, lambda: tp.importance.GroupMagnitudeImportance(p=2), None),
    "tp-lamp": ("tp-lamp", {}, lambda: tp.importance.LAMPImportance(), None),
    "tp-bn-scale": ("tp-bn-scale", {}, lambda: tp.importance.BNScaleImportance(), None),
    "tp-taylor": ("tp-taylor", {}, lambda: tp.importance.GroupTaylorImportance(), with_loss_gradients),
    "tp-hessian": ("tp-hessian", {}, lambda: tp.importance.GroupHessianImportance(), with_fisher_diagonal),
}


@pytest.mark.parametrize("case", CASES)
def test_scores_equal_torch_pruning_own(case, trained_looking_net):
    name, options, importance, prepare = CASES[case]
    model, x, y = trained_looking_net
    ours = our_scores(name, model, x, y, **options)
    reference_model = prepare(model, x, y) if prepare else model
    reference = torch_pruning_reference(reference_model, x, importance())
    assert set(ours) == set(reference) == ({"0", "3"} if name == "tp-bn-scale" else {"0", "3", "7"})
    for layer, score in ours.items():
        assert torch.allclose(score, reference[layer].float(), rtol=1e-4, atol=1e-7), layer
        assert score.std() > 0  # a real ranking, not a constant


def test_the_methods_leave_the_model_and_its_gradients_untouched(trained_looking_net):
    model, x, y = trained_looking_net
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("tp-taylor", "tp-hessian"):
        our_scores(name, model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bn_scale_without_batchnorm_and_taylor_without_labels_are_clear_errors():
    model = build_model("lenet5").eval()
    x = torch.randn(16, 1, 28, 28)
    with pytest.raises(ValueError, match=r"BNScaleImportance finds nothing to score in any prunable group"):
        infoprune.prune(model, LabelledTensors(x, torch.arange(16) % 10), method="tp-bn-scale", ratio=0.5, device="cpu")
    with pytest.raises(ValueError, match="'tp-taylor' needs labels"):
        infoprune.prune(model, x, method="tp-taylor", ratio=0.5, device="cpu")


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="p must be 1"):
        get_method("tp-magnitude")(ratio=0.5, p=3)
    with pytest.raises(ValueError, match="needs a budget"):
        get_method("tp-lamp")()
    with pytest.raises(ValueError, match=r"got \['ratio', 'flops'\]"):
        get_method("tp-lamp")(ratio=0.5, flops=0.5)
    with pytest.raises(ValueError, match="normalizer must be one of"):
        get_method("tp-taylor")(ratio=0.5, normalizer="median")
    with pytest.raises(ValueError, match="The FLOPs budget must be a positive number"):
        get_method("tp-taylor")(flops=-1)


# --- budgets -----------------------------------------------------------------------------


def test_ratio_within_budget_is_the_least_removal_that_meets_the_budget():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([2.0, 4.0, 0.5, 6.0])}
    cost = lambda widths: 10 * widths["a"] + widths["b"]  # noqa: E731  (a unit of a costs 10)
    # removal order: b(0.5), a(1.0), b(2.0), a(3.0), ...; full cost 34
    assert ratio_within_budget(scores, cost, 34) == 0
    assert ratio_within_budget(scores, cost, 33) == pytest.approx(1 / 7)
    assert ratio_within_budget(scores, cost, 32) == pytest.approx(2 / 7)  # 23 after two removals
    assert ratio_within_budget(scores, cost, 22) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="cannot be met"):
        ratio_within_budget(scores, cost, 5, min_units=1)  # at best 10·1 + 1 = 11


@pytest.mark.parametrize("what", ["flops", "params"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_budgets_are_met_within_one_unit_of_the_physical_cost(what, scope):
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    x = torch.randn(32, 1, 28, 28)
    result = infoprune.prune(model, x, method="tp-magnitude", device="cpu", scope=scope, **{what: 0.3})
    before, after = getattr(result, f"{what}_before"), getattr(result, f"{what}_after")
    budget = result.details["budget"]
    assert budget["target"] == pytest.approx(0.3 * before) and after == pytest.approx(budget["cost"])
    assert after <= 0.3 * before
    # the ratio one unit below the one the budget chose would have exceeded it
    fewer = infoprune.prune(model, x, method="tp-magnitude", device="cpu", scope=scope, ratio=budget["ratio"] - 1 / 226)
    assert getattr(fewer, f"{what}_after") > 0.3 * before


@pytest.mark.parametrize("method", ["tp-taylor", "tp-hessian"])
def test_a_zero_initialised_output_layer_is_refused_with_the_cause(method):
    model = build_model("lenet5")
    with torch.no_grad():
        model.fc3.weight.zero_()
        model.fc3.bias.zero_()
    data = (torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 10)
    with pytest.raises(ValueError) as error:
        infoprune.prune(model, data, method=method, ratio=0.5, device="cpu", progress=None)
    assert str(error.value) == (
        f"Every gradient of the calibration loss at the prunable layers is 0, so {method!r} would score every unit 0. "
        "Is the output layer zero-initialised (a freshly built torchvision ViT's head is)? Train the model first, or "
        "choose a criterion that needs no gradients (tp-magnitude, l1)."
    )
