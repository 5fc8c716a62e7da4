"""MINT as a pruning method: grouping, thresholds, the γ cap, both outputs, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infoprune
from infoprune.data import LabelledTensors
from infoprune.metrics import count_flops
from infoprune.network import Network
from infoprune.methods.mint import (
    MINT,
    apply_connection_masks,
    connection_masks,
    connection_summary,
    contiguous_groups,
    draw_per_class,
    independence_delta,
    keep_connections,
    other_parents_contribution,
    rethreshold,
)
from infoprune.models import build_model
from infoprune.models.lenet import MLP


def calibration(n: int = 240, classes: int = 4, shape: tuple[int, ...] = (1, 28, 28)) -> LabelledTensors:
    generator = torch.Generator().manual_seed(0)
    return LabelledTensors(torch.randn(n, *shape, generator=generator), torch.arange(n) % classes)


def test_contiguous_groups_are_balanced_larger_first() -> None:
    assert [(g.start, g.stop) for g in contiguous_groups(10, 4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [(g.start, g.stop) for g in contiguous_groups(6, 3)] == [(0, 2), (2, 4), (4, 6)]
    assert len(contiguous_groups(3, 16)) == 3  # one unit per group


def test_draw_per_class_is_distinct_balanced_and_seeded() -> None:
    labels = torch.arange(100) % 5
    rows = draw_per_class(labels, 7, seed=3)
    assert len(set(rows.tolist())) == 35
    assert torch.bincount(labels[rows]).tolist() == [7] * 5
    assert torch.equal(rows, draw_per_class(labels, 7, seed=3))
    with pytest.raises(ValueError, match="needs labels"):
        draw_per_class(None, 5, seed=0)


def test_draw_per_class_takes_what_a_small_class_has(caplog: pytest.LogCaptureFixture) -> None:
    labels = torch.cat([torch.zeros(15, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    with caplog.at_level("WARNING", logger="infoprune"):
        rows = draw_per_class(labels, 250, seed=0)
    assert torch.bincount(labels[rows]).tolist() == [15, 250]
    assert "class 0: 15" in caplog.text
    with pytest.raises(ValueError, match="needs labels"):
        draw_per_class(None, 5, seed=0)


def test_threshold_keeps_scores_at_or_above_delta() -> None:
    scores = torch.tensor([[0.1, 0.5], [0.3, 0.7]])
    kept, delta = keep_connections(scores, torch.ones(2, 2, dtype=torch.long), 0.3, gamma=None)
    assert kept.tolist() == [[False, True], [True, True]]
    assert delta == 0.3


def test_gamma_cap_rederives_delta_for_the_pair() -> None:
    scores = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    weights = torch.tensor([[1, 1], [1, 1]])
    # δ = 0.35 would drop 3 of 4 blocks; γ = 0.5 allows 2: δ becomes 0.3.
    kept, delta = keep_connections(scores, weights, 0.35, gamma=0.5)
    assert delta == pytest.approx(0.3)
    assert kept.tolist() == [[False, False], [True, True]]
    # Weighted by block size: the lowest block alone holds 3 of 6 weights.
    kept, delta = keep_connections(scores, torch.tensor([[3, 1], [1, 1]]), 0.35, gamma=0.4)
    assert delta == pytest.approx(0.1)
    assert kept.all()


def tiny_mlp_reading_group_zero() -> nn.Module:
    """8 inputs → fc1 (8 units, ≈ identity) → fc2 (2 units reading only fc1 units 0 and 1) → 2."""
    model = MLP((8, 2), num_classes=2, in_features=8)
    with torch.no_grad():
        fc1, fc2 = model.net[1], model.net[3]
        fc1.weight.copy_(torch.eye(8))
        fc1.bias.fill_(4.0)  # keep the ReLU in its linear part for N(0, 1) inputs
        fc2.weight.zero_()
        fc2.weight[0, :2] = torch.tensor([1.0, 1.0])
        fc2.weight[1, :2] = torch.tensor([1.0, -1.0])
        fc2.bias.fill_(10.0)
    return model.eval()


def test_child_reading_group_zero_ranks_it_highest() -> None:
    model = tiny_mlp_reading_group_zero()
    data = calibration(400, classes=2, shape=(8,))
    result = infoprune.prune(model, data, method="mint", samples_per_class=150, groups={"net.1": (4, 2), "net.3": 2}, device="cpu")
    first = result.details["pairs"][0]
    assert (first["parent"], first["child"]) == ("net.1", "net.3")
    for row in first["scores"]:
        assert max(range(4), key=row.__getitem__) == 0


def test_prune_lenet300_both_outputs_agree() -> None:
    model = build_model("lenet300").eval()
    data = calibration()
    result = infoprune.prune(model, data, method="mint", samples_per_class=30, groups=10, quantile=0.7, device="cpu")
    details = result.details
    assert [(p["parent"], p["child"]) for p in details["pairs"]] == [("net.1", "net.3"), ("net.3", "net.5")]
    assert details["samples"] == 120
    masks = connection_masks(model, details)
    assert {name: tuple(m.shape) for name, m in masks.items()} == {"net.3": (100, 300), "net.5": (10, 100)}
    pruned_fraction = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert details["connections"]["pruned_fraction"] == pytest.approx(pruned_fraction)
    # δ is the 0.7-quantile of the pooled scores: 30 % of all group blocks keep (ties aside).
    blocks = [kept for pair in details["pairs"] for row in pair["kept"] for kept in row]
    assert 0.3 <= sum(blocks) / len(blocks) < 0.4
    # A parent unit is removed exactly when none of its outgoing connections survives.
    assert torch.equal(result.masks["net.1"], masks["net.3"].any(dim=0))
    assert torch.equal(result.masks["net.3"], masks["net.5"].any(dim=0))
    assert details["connections"]["csr_bytes_after"] < details["connections"]["csr_bytes_before"]
    # Deciding again from the stored scores reproduces the decision, or changes it with δ.
    assert rethreshold(details, quantile=0.7)["pairs"] == details["pairs"]
    looser = connection_masks(model, rethreshold(details, quantile=0.2))
    assert sum(int(m.sum()) for m in looser.values()) > sum(int(m.sum()) for m in masks.values())
    zeroed = apply_connection_masks(model, masks)
    assert torch.equal(zeroed.net[3].weight == 0, ~masks["net.3"])
    assert torch.equal(model.net[3].weight != 0, torch.ones_like(masks["net.3"]))  # original untouched
    # The surgically pruned model computes what the unit-masked original computes.
    structure = Network(model, data.inputs[:2])
    with structure.masked(result.masks):
        expected = model(data.inputs[:16])
    torch.testing.assert_close(result.model(data.inputs[:16]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flops", [0.6, 0.3])
def test_a_flops_budget_sets_delta_to_the_smallest_pooled_score_that_meets_it(flops: float) -> None:
    model, data = build_model("lenet300").eval(), calibration()
    result = infoprune.prune(model, data, method="mint", samples_per_class=30, groups=10, flops=flops, device="cpu")
    assert result.flops_after <= flops * result.flops_before
    delta = result.details["delta"]
    pooled = sorted({s for pair in result.details["pairs"] for row in pair["scores"] for s in row})
    # the next smaller score as δ keeps more connections, and the structured decision then exceeds the budget
    looser = rethreshold(result.details, delta=max(s for s in pooled if s < delta))
    structure = Network(model, data.inputs[:2])
    masks = {"net.1": connection_masks(model, looser)["net.3"].any(dim=0), "net.3": connection_masks(model, looser)["net.5"].any(dim=0)}
    assert count_flops(structure.apply_masks(masks), data.inputs[:1]) > flops * result.flops_before


def test_prune_lenet5_with_gamma_cap_and_reproducibility() -> None:
    model = build_model("lenet5").eval()
    data = calibration()
    kwargs = dict(method="mint", samples_per_class=20, groups=6, quantile=1.0, gamma=0.5, device="cpu", seed=1)
    result = infoprune.prune(model, data, **kwargs)
    details = result.details
    assert [p["child"] for p in details["pairs"]] == ["conv2", "fc1", "fc2", "fc3"]
    assert tuple(connection_masks(model, details)["conv2"].shape) == (16, 6, 5, 5)
    for fraction in details["connections"]["pruned_fraction_by_layer"].values():
        assert 0 < fraction <= 0.5
    assert not result.collapsed
    again = infoprune.prune(model, data, **kwargs)
    assert again.details["pairs"] == details["pairs"]
    # Caps per parent layer (App. B): 0 leaves fc2's connections to fc3 whole, 0.25 caps conv1→conv2,
    # the layers not named are uncapped (quantile 1 drops everything below the top score there).
    capped = connection_summary(model, rethreshold(details, quantile=1.0, gamma={"fc2": 0.0, "conv1": 0.25}))
    by_layer = capped["pruned_fraction_by_layer"]
    assert by_layer["fc3"] == 0 and 0 < by_layer["conv2"] <= 0.25 and by_layer["fc1"] > 0.9
    with pytest.raises(ValueError, match="not MINT parents"):
        rethreshold(details, quantile=0.5, gamma={"fc3": 0.5})
    with pytest.raises(ValueError, match="not MINT parents"):
        infoprune.prune(model, data, **{**kwargs, "gamma": {"conv9": 0.5}})


def test_mlp500_is_registered() -> None:
    model = build_model("mlp500")
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [500, 300, 10]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.1, "quantile": 0.5}, "not both"),
        ({"quantile": 1.5}, "quantile"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": {"fc1": 1.5}}, "gamma"),
        ({"map_reduction": "max"}, "map_reduction"),
        ({"conditioning": "all"}, "conditioning"),
        ({"groups": 0}, "groups"),
        ({"groups": {"net.1": (2, 3, 4)}}, "parent G, child G"),
        ({"samples_per_class": 1}, "samples_per_class"),
        ({"flops": 0.5, "quantile": 0.5}, "a threshold .delta= or quantile=. or a budget .flops= or params=., not both"),
        ({"flops": 0.5, "params": 0.5}, "takes one budget"),
        ({"flops": -1}, "The FLOPs budget must be a positive number"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MINT(**kwargs)


def test_bad_data_and_layer_names_raise() -> None:
    model = build_model("lenet300").eval()
    data = calibration()
    with pytest.raises(ValueError, match="needs labels"):
        infoprune.prune(model, data.inputs, method="mint", samples_per_class=10, device="cpu")
    with pytest.raises(ValueError, match="missing: \\['net.3'\\]"):
        infoprune.prune(model, data, method="mint", samples_per_class=10, groups={"net.1": 4}, device="cpu")
    with pytest.raises(ValueError, match="G ≥ 2"):
        infoprune.prune(
            model, data, method="mint", samples_per_class=10, groups={"net.1": 1, "net.3": 4}, conditioning="others", device="cpu"
        )
    with pytest.raises(ValueError, match="method='mint'"):
        connection_masks(model, {})


def dead_unit_mlp(seed: int) -> nn.Module:
    """20-40-20-4 MLP whose second layer reads only the first 20 of the 40 first-layer units."""
    torch.manual_seed(seed)
    model = MLP((40, 20), num_classes=4, in_features=20).eval()
    with torch.no_grad():
        model.net[3].weight[:, 20:] = 0
    return model


def test_dead_units_are_removed_with_the_defaults() -> None:
    # Balanced classes, 100 samples per class, every MINT default: the known answer.
    generator = torch.Generator().manual_seed(0)
    data = LabelledTensors(torch.randn(400, 20, generator=generator), torch.arange(400) % 4)
    result = infoprune.prune(dead_unit_mlp(0), data, method="mint", device="cpu")
    kept = result.masks["net.1"]
    assert int(kept[20:].sum()) <= 4 and int(kept[:20].sum()) >= 16
    assert result.details["samples_per_class"] == {0: 100, 1: 100, 2: 100, 3: 100}
    assert result.details["conditioning"] == "contribution"
    assert result.details["delta"] == pytest.approx(independence_delta(400))
    dead_scores = torch.tensor(result.details["pairs"][0]["scores"])[:, 8:]  # parent groups of dead units only
    assert float(dead_scores.mean()) < 0.05


def test_contribution_is_the_pre_activation_without_the_group() -> None:
    conv = nn.Conv2d(4, 3, kernel_size=3, padding=1)
    maps = torch.randn(5, 4, 6, 6)
    groups = [slice(0, 1), slice(1, 3), slice(3, 4)]
    channels = torch.arange(4)[:, None]  # parent unit c is input channel c
    given = other_parents_contribution(conv, maps, channels, groups)
    without = maps.clone()
    without[:, 1:3] = 0
    torch.testing.assert_close(given(1), conv(without).mean((2, 3)).detach())
    linear = nn.Linear(8, 2)  # behind a flatten of 4 channels × 2 features
    features = torch.randn(5, 8)
    without = features.clone()
    without[:, 2:6] = 0
    blocks = torch.arange(8).reshape(4, 2)  # parent unit c is the features 2c, 2c + 1
    torch.testing.assert_close(other_parents_contribution(linear, features, blocks, groups)(1), linear(without).detach())
    with pytest.raises(ValueError, match="conditioning='others'"):
        other_parents_contribution(nn.Conv2d(4, 4, 3, groups=2), maps, channels, groups)
