"""Baselines behind ``infoprune.prune``: known answers per method, and every method on LeNet-5."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch import nn

import infoprune
from families import assert_physical_model_is_the_masked_one
from infoprune.data import LabelledTensors
from infoprune.estimators.ranking import exponential_schedule, keep_highest
from infoprune.estimators.reconstruction import greedy_removal, least_squares_scales
from infoprune.methods import PruningContext, get_method
from infoprune.models import build_model
from infoprune.network import Network
from infoprune.progress import progress_bar


def mlp(*widths: int) -> nn.Sequential:
    """Linear layers of the given widths with ReLUs between them."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def context_for(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> PruningContext:
    model = model.eval()
    return PruningContext(model, Network(model, inputs[:2]), inputs, labels, torch.device("cpu"), 0, progress_bar)


def kept(result) -> dict[str, int]:
    return {name: summary.kept for name, summary in result.layers.items()}


# --- ranking ---------------------------------------------------------------------------


def test_global_ranking_removes_the_lowest_scores_across_layers():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([2.0, 4.0, 0.5, 6.0])}
    masks = keep_highest(scores, ratio=3 / 7)  # floor(3/7 · 7) = 3 removed: 0.5, 1.0, 2.0
    assert masks["a"].tolist() == [True, False, True]
    assert masks["b"].tolist() == [False, True, False, True]


def test_layer_ranking_never_empties_a_layer_and_min_units_protects_the_best():
    scores = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([9.0, 8.0, 7.0, 6.0])}
    per_layer = keep_highest(scores, ratio=0.9, scope="layer")  # floor(1.8) = 1, floor(3.6) = 3
    assert per_layer["a"].tolist() == [False, True] and per_layer["b"].tolist() == [True, False, False, False]
    collapsed = keep_highest(scores, ratio=2 / 6)
    assert not collapsed["a"].any()
    protected = keep_highest(scores, ratio=2 / 6, min_units=1)
    assert protected["a"].tolist() == [False, True] and protected["b"].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="min_units"):
        keep_highest(scores, ratio=5 / 6, min_units=2)


def test_round_to_puts_back_a_layers_best_removed_units_up_to_a_multiple():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0, 0.2, 0.3]), "b": torch.tensor([2.0, 4.0, 0.5, 6.0])}
    plain = keep_highest(scores, ratio=5 / 9)  # removes 0.2, 0.3, 0.5, 1.0, 2.0: a keeps 2, b keeps 2
    assert plain["a"].tolist() == [True, False, True, False, False] and plain["b"].tolist() == [False, True, False, True]
    rounded = keep_highest(scores, ratio=5 / 9, round_to={"a": 4, "b": 4})
    assert rounded["a"].tolist() == [True, True, True, False, True]  # 1.0 and 0.3 back: 4 kept
    assert rounded["b"].tolist() == [True, True, True, True]  # a multiple of 4: all 4
    emptied = keep_highest({"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([5.0, 6.0])}, ratio=0.5, round_to={"a": 2})
    assert not emptied["a"].any()  # an emptied layer stays empty


def test_round_to_keeps_channel_widths_multiples_and_meets_a_flops_budget():
    model = build_model("lenet5")
    data = (torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10)
    result = infoprune.prune(model, data, method="l1", flops=0.5, round_to=4, min_units=1, device="cpu",
                             progress=None)
    assert result.flops_after <= 0.5 * result.flops_before
    assert all(layer.kept % 4 == 0 or layer.kept == layer.total for layer in result.layers.values())
    with pytest.raises(ValueError, match="round_to"):
        infoprune.prune(model, data, method="l1", flops=0.5, round_to=0, device="cpu", progress=None)


def test_ranking_rejects_nan_and_breaks_ties_by_index():
    with pytest.raises(ValueError, match="NaN"):
        keep_highest({"a": torch.tensor([1.0, float("nan")])}, ratio=0.5)
    assert keep_highest({"a": torch.ones(4)}, ratio=0.5)["a"].tolist() == [False, False, True, True]


def test_exponential_schedule_ends_at_the_ratio():
    schedule = exponential_schedule(0.99, 2)
    assert schedule[0] == pytest.approx(0.9) and schedule[-1] == 0.99


# --- random, l1 ------------------------------------------------------------------------


def hand_set_mlp() -> nn.Sequential:
    model = mlp(3, 3, 2, 2)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 1.0], [0.1, 0.1, -0.1], [-2.0, 2.0, 2.0]]))  # L1: 3, 0.3, 6
        model[0].bias.fill_(100.0)  # biases do not count for L1 (Li et al.)
        model[2].weight.copy_(torch.tensor([[0.5, 0.5, -0.5], [4.0, 0.0, 0.0]]))  # L1: 1.5, 4
    return model


def test_l1_removes_the_smallest_incoming_weight_norms():
    x = torch.randn(8, 3)
    # Unit scores: layer "0" [3, 0.3, 6], layer "2" [1.5, 4]; 3 of 5 go globally: 0.3, 1.5, 3.
    global_result = infoprune.prune(hand_set_mlp(), x, method="l1", ratio=0.6, device="cpu", allow_collapse=True)
    assert global_result.masks["0"].tolist() == [False, False, True]
    assert global_result.masks["2"].tolist() == [False, True]
    # Per layer: floor(0.6 · 3) = 1 and floor(0.6 · 2) = 1 go: 0.3 and 1.5.
    per_layer = infoprune.prune(hand_set_mlp(), x, method="l1", ratio=0.6, scope="layer", device="cpu", allow_collapse=True)
    assert per_layer.masks["0"].tolist() == [True, False, True] and per_layer.masks["2"].tolist() == [False, True]


def test_random_is_seeded_and_hits_the_ratio():
    model, x = build_model("lenet300"), torch.randn(4, 1, 28, 28)
    first = infoprune.prune(model, x, method="random", ratio=0.5, device="cpu", seed=1)
    again = infoprune.prune(model, x, method="random", ratio=0.5, device="cpu", seed=1)
    other = infoprune.prune(model, x, method="random", ratio=0.5, device="cpu", seed=2)
    assert all(torch.equal(first.masks[n], again.masks[n]) for n in first.masks)
    assert any(not torch.equal(first.masks[n], other.masks[n]) for n in first.masks)
    assert first.units_removed_fraction == pytest.approx(0.5)


def test_parameters_are_validated_with_clear_messages():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="needs a budget"):
        infoprune.prune(hand_set_mlp(), x, method="l1", device="cpu")
    with pytest.raises(ValueError, match=r"ratio must lie in \[0, 1\)"):
        infoprune.prune(hand_set_mlp(), x, method="l1", ratio=1.0, device="cpu")
    with pytest.raises(ValueError, match="scope must be one of"):
        infoprune.prune(hand_set_mlp(), x, method="snip", ratio=0.5, scope="row", device="cpu")


@pytest.mark.parametrize("method", ["snip", "grasp", "sosp"])
def test_loss_based_methods_need_labels(method):
    with pytest.raises(ValueError, match="needs labels"):
        infoprune.prune(hand_set_mlp(), torch.randn(8, 3), method=method, ratio=0.5, device="cpu")


# --- SNIP and GraSP sign conventions ---------------------------------------------------


def tiny_classifier() -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return mlp(3, 5, 2), torch.randn(24, 3), torch.randint(0, 2, (24,))


def flat_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0):
    """The loss as a function of one flat parameter vector, and that vector."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts, start = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = flat[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        logits = torch.func.functional_call(model, parts, (x,))
        return nn.functional.cross_entropy(logits / temperature, y)

    return loss, theta


def unit_totals(model: nn.Sequential, per_param: torch.Tensor) -> torch.Tensor:
    """Per hidden unit of ``mlp(3, 5, 2)``: Σ over W1[u, :], b1[u] and W2[:, u] (by hand)."""
    w1, b1, w2 = per_param[:15].reshape(5, 3), per_param[15:20], per_param[20:30].reshape(2, 5)
    return w1.sum(1) + b1 + w2.sum(0)


def test_snip_scores_are_summed_sensitivities_and_the_lowest_go():
    model, x, y = tiny_classifier()
    loss, theta = flat_loss(model, x, y)
    expected = unit_totals(model, (theta * torch.func.grad(loss)(theta)).abs())
    method = get_method("snip")(ratio=0.4, batch_size=24)
    scores = method.unit_scores(context_for(model, x, y), {})["0"]
    assert torch.allclose(scores, expected, atol=1e-6)
    keep = method.decide(context_for(model, x, y)).masks["0"]
    assert set((~keep).nonzero().flatten().tolist()) == set(expected.argsort()[:2].tolist())


def test_grasp_scores_are_minus_theta_hessian_gradient_and_the_highest_go():
    model, x, y = tiny_classifier()
    loss, theta = flat_loss(model, x, y, temperature=2.0)
    g = torch.func.grad(loss)(theta)
    hessian_gradient = torch.func.hessian(loss)(theta) @ g
    expected = unit_totals(model, -theta * hessian_gradient)
    method = get_method("grasp")(ratio=0.4, samples_per_class=100, temperature=2.0)
    scores = method.unit_scores(context_for(model, x, y), {})["0"]
    assert torch.allclose(-scores, expected, atol=1e-6)  # ranked by −S: highest S removed
    keep = method.decide(context_for(model, x, y)).masks["0"]
    assert set((~keep).nonzero().flatten().tolist()) == set(expected.argsort(descending=True)[:2].tolist())


def test_sosp_matches_the_explicit_gauss_newton_saliency():
    model, x, y = tiny_classifier()
    _, theta = flat_loss(model, x, y)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def logits(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, [t.reshape(p.shape) for t, p in zip(flat.split(sizes), model.parameters())]))
        return torch.func.functional_call(model, parts, (x,))

    jacobian = torch.func.jacrev(logits)(theta)  # (N, classes, D)
    p = torch.softmax(logits(theta), dim=1)
    curvature = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    gauss_newton = torch.einsum("nkd,nkl,nle->de", jacobian, curvature, jacobian) / x.shape[0]
    gradient = torch.einsum("nkd,nk->d", jacobian, p - nn.functional.one_hot(y, 2)) / x.shape[0]
    in_structures = torch.ones_like(theta)
    in_structures[30:] = 0  # the output bias belongs to no unit
    expected = unit_totals(model, theta * (0.5 * gauss_newton @ (theta * in_structures) - gradient)).abs()
    method = get_method("sosp")(ratio=0.4)
    scores = method.unit_scores(context_for(model, x, y), {})["0"]
    assert torch.allclose(scores, expected, rtol=1e-4, atol=1e-7)
    keep = method.decide(context_for(model, x, y)).masks["0"]
    assert set((~keep).nonzero().flatten().tolist()) == set(expected.argsort()[:2].tolist())


# --- SynFlow -----------------------------------------------------------------------------


def test_synflow_keeps_the_one_path_that_carries_all_the_flow():
    """Unit 0 of each hidden layer forms the only input→output path; unit 1 of the first
    layer has big incoming weights but no way out, unit 1 of the second big outgoing
    weights but no way in. Magnitude keeps them; SynFlow sees that no flow passes."""
    model = mlp(2, 2, 2, 1)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [9.0, 9.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        model[4].weight.copy_(torch.tensor([[1.0, 9.0]]))
        for layer in (model[0], model[2], model[4]):
            layer.bias.zero_()
    x = torch.randn(4, 2)
    synflow = infoprune.prune(model, x, method="synflow", ratio=0.5, rounds=1, device="cpu")
    assert synflow.masks["0"].tolist() == [True, False] and synflow.masks["2"].tolist() == [True, False]
    assert not synflow.collapsed
    l1 = infoprune.prune(model, x, method="l1", ratio=0.5, scope="layer", device="cpu", allow_collapse=True)  # l1 cuts the path
    assert l1.masks["0"].tolist() == [False, True]


def test_synflow_runs_in_float64_where_float32_would_overflow():
    model = mlp(*[4] * 31)  # 30 layers: R ≈ 4^30 · 50^30 ≈ 1e69, beyond float32's 3e38
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.fill_(50.0)
    # equal scores everywhere: whole layers go (a collapse); the test is about float64 scores
    result = infoprune.prune(model, torch.randn(2, 4), method="synflow", ratio=0.25, rounds=2, device="cpu", allow_collapse=True)
    assert result.units_removed_fraction == pytest.approx(0.25, abs=0.01)


# --- ThiNet ------------------------------------------------------------------------------


def test_greedy_removal_and_least_squares_known_answers():
    contributions = torch.tensor([[1.0, -1.0, 3.0], [2.0, -2.0, 1.0]])
    assert greedy_removal(contributions, 2).tolist() == [0, 1]  # the cancelling pair, error 0
    copies = torch.tensor([[1.0, 1.0, 5.0], [2.0, 2.0, -3.0], [0.5, 0.5, 1.0]])
    keep = torch.tensor([False, True, True])
    assert torch.allclose(least_squares_scales(copies, keep), torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))


def copy_channel_net() -> nn.Sequential:
    """Hidden unit 2 is an exact copy of unit 1 (same weights in, same weights out)."""
    torch.manual_seed(0)
    model = mlp(4, 3, 2)
    with torch.no_grad():
        model[0].weight[2] = model[0].weight[1]
        model[0].bias[2] = model[0].bias[1]
        model[2].weight[:, 0] = torch.tensor([3.0, -2.0])
        model[2].weight[:, 1:] = torch.tensor([[0.2, 0.2], [0.1, 0.1]])
    return model


def test_thinet_drops_a_copy_and_rescaling_reconstructs_the_output_exactly():
    model, x = copy_channel_net(), torch.randn(64, 4)
    rescaled = infoprune.prune(model, x, method="thinet", ratio=1 / 3, device="cpu")
    assert rescaled.masks["0"].tolist() == [True, False, True]
    assert torch.allclose(rescaled.model[2].weight[:, 1], 2 * model[2].weight[:, 2], atol=1e-6)
    assert torch.allclose(rescaled.model(x), model(x), atol=1e-5)
    plain = infoprune.prune(model, x, method="thinet", ratio=1 / 3, rescale=False, device="cpu")
    assert plain.masks["0"].tolist() == [True, False, True]
    assert not torch.allclose(plain.model(x), model(x), atol=1e-3)


def test_thinet_uses_a_uniform_ratio_on_conv_layers():
    result = infoprune.prune(build_model("lenet5"), torch.randn(16, 1, 28, 28), method="thinet", ratio=0.5, device="cpu")
    assert kept(result) == {"conv1": 3, "conv2": 8, "fc1": 60, "fc2": 42}


@pytest.mark.parametrize("flops", [0.5, 0.25, 0.1])
def test_thinet_meets_a_flops_budget_with_the_smallest_uniform_ratio(flops):
    model, x = build_model("lenet5"), torch.randn(16, 1, 28, 28)
    result = infoprune.prune(model, x, method="thinet", flops=flops, device="cpu")
    ratio = result.details["ratio"]
    assert result.flops_after <= flops * result.flops_before
    sizes = {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84}
    assert kept(result) == {name: n - math.floor(ratio * n + 1e-9) for name, n in sizes.items()}
    # one unit less removed in total, spread uniformly, would exceed the budget
    smaller = infoprune.prune(model, x, method="thinet", ratio=ratio - 1 / sum(sizes.values()), device="cpu")
    assert smaller.flops_after > flops * result.flops_before


# --- reinit ------------------------------------------------------------------------------


def test_reinit_keeps_the_source_architecture_with_fresh_weights_at_the_pruned_fan_in():
    model, x = build_model("lenet5"), torch.randn(8, 1, 28, 28)
    source = infoprune.prune(model, x, method="l1", ratio=0.5, scope="layer", device="cpu")
    options = {"source": "l1", "ratio": 0.5, "source_options": {"scope": "layer"}, "device": "cpu"}
    fresh = infoprune.prune(model, x, method="reinit", **options)
    again = infoprune.prune(model, x, method="reinit", **options)
    assert kept(fresh) == kept(source) and fresh.params_after == source.params_after
    assert not torch.allclose(fresh.model.fc1.weight, source.model.fc1.weight)
    assert torch.equal(fresh.model.fc1.weight, again.model.fc1.weight)
    bound = fresh.model.fc1.weight.shape[1] ** -0.5  # PyTorch's default Linear init, pruned fan-in
    assert fresh.model.fc1.weight.abs().max() <= bound and fresh.model.fc1.weight.abs().max() > 0.9 * bound
    explicit = infoprune.prune(model, x, method="reinit", masks=source.masks, device="cpu")
    assert kept(explicit) == kept(source)


def test_reinit_needs_exactly_one_architecture():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="exactly one architecture"):
        infoprune.prune(hand_set_mlp(), x, method="reinit", device="cpu")
    with pytest.raises(ValueError, match="has shape"):
        infoprune.prune(hand_set_mlp(), x, method="reinit", masks={"0": [True, False]}, device="cpu")
    with pytest.raises(TypeError, match="rejects the options"):
        infoprune.prune(hand_set_mlp(), x, method="reinit", source="l1", source_options={"confidence": 0.9}, ratio=0.5)


# --- every registered method through the one entry point ----------------------------------

# Small settings that keep each method quick on LeNet-5. A newly registered method fails
# here until it gets a line: no method is skipped.
METHOD_OPTIONS: dict[str, dict] = {
    "random": {"ratio": 0.5},
    "l1": {"ratio": 0.5},
    "snip": {"ratio": 0.5},
    "grasp": {"ratio": 0.5, "samples_per_class": 2},
    "synflow": {"ratio": 0.5, "rounds": 3},
    "thinet": {"ratio": 0.5},
    "sosp": {"ratio": 0.5},
    "reinit": {"source": "snip", "ratio": 0.5},
    "mipp": {"hidden_size": 16, "fit_iterations": 20, "refit_iterations": 2, "ordering_iterations": 2, "repeats": 2},
    "mint": {"samples_per_class": 20, "groups": 6, "quantile": 0.5},
    "itpruner": {"flops": 0.5},
    "tp-magnitude": {"flops": 0.5, "p": 1},
    "tp-taylor": {"ratio": 0.5},
    "tp-lamp": {"params": 0.5},
    "tp-bn-scale": {"ratio": 0.5, "scope": "layer"},
    "tp-hessian": {"ratio": 0.5},
}
# Methods that need something LeNet-5 lacks get another model of the same input and output.
METHOD_MODELS: dict[str, str] = {"tp-bn-scale": "lenet5-bn"}


def lenet5_bn() -> nn.Module:
    """LeNet-5 with a BatchNorm after each convolution (network slimming scores its scales)."""
    model = build_model("lenet5")
    model.conv1 = nn.Sequential(model.conv1, nn.BatchNorm2d(6))
    model.conv2 = nn.Sequential(model.conv2, nn.BatchNorm2d(16))
    return model


def module_missing(name: str) -> bool:
    from infoprune.methods import _METHOD_MODULES

    return name in _METHOD_MODULES and importlib.util.find_spec(_METHOD_MODULES[name]) is None


@pytest.mark.parametrize("name", infoprune.available_methods())
def test_every_method_prunes_lenet5_into_a_working_physical_model(name):
    if module_missing(name):
        pytest.skip(f"{name!r} is registered but its module is not on this branch yet")
    assert name in METHOD_OPTIONS, f"add small test settings for the new method {name!r} to METHOD_OPTIONS"
    torch.manual_seed(0)
    model = (lenet5_bn() if METHOD_MODELS.get(name) == "lenet5-bn" else build_model("lenet5")).eval()
    data = LabelledTensors(torch.randn(240, 1, 28, 28), torch.arange(240) % 10)  # MIPP: 2 × widest layer
    result = infoprune.prune(model, data, method=name, device="cpu", allow_collapse=True, **METHOD_OPTIONS[name])

    assert isinstance(result, infoprune.PruningResult) and result.method == name
    structure = Network(model, data.inputs[:2])
    assert set(result.masks) == set(structure.names)
    for layer in structure.groups:
        assert result.masks[layer.name].dtype == torch.bool and result.masks[layer.name].shape == (layer.units,)
        assert result.layers[layer.name].kept == int(result.masks[layer.name].sum())
    assert result.params_after <= result.params_before
    assert isinstance(result.collapsed, bool) and isinstance(result.summary()["disconnected"], bool)
    with torch.no_grad():
        physical = result.model.cpu()(data.inputs[:8])
        assert physical.shape == (8, 10) and torch.isfinite(physical).all()
    assert_physical_model_is_the_masked_one(model, data.inputs[:8], result)


def test_random_blocks_remove_whole_contiguous_blocks_but_the_last():
    model = build_model("mlp500")
    result = infoprune.prune(model, torch.randn(32, 1, 28, 28), method="random", flops=0.5, blocks=10, device="cpu")
    assert result.flops_after <= 0.5 * result.flops_before
    for name, width in (("net.1", 500), ("net.4", 300)):
        keep = result.masks[name].reshape(10, width // 10)
        mixed = [block for block in keep if 0 < int(block.sum()) < block.numel()]
        assert len(mixed) <= 1  # every block kept or removed whole, except where the budget cut one
        assert not (~keep).all(dim=1).all()
