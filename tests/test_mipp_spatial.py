"""MIPP's ``spatial`` option: a conv filter as a g × g grid of columns, kept or removed together."""

import re

import numpy as np
import pytest
import torch
from torch import nn

import infoprune
from infoprune.estimators.terc import TercConfig, terc_prepare, terc_select, terc_test
from infoprune.network import Budget, Network, QuadraticCost
from infoprune.network.activations import reduce_maps, reduce_on_grid

SMALL = dict(hidden_size=32, fit_iterations=200, refit_iterations=30, ordering_iterations=10)


# --- the grid reduction ------------------------------------------------------------------------


def test_grid_cells_are_the_quadrants_row_major():
    maps = torch.arange(16.0).reshape(1, 1, 16) - 8  # one 4 × 4 map, signed
    cells = reduce_on_grid(maps, "l1", 2)
    square = (torch.arange(16.0) - 8).abs().reshape(4, 4)
    expected = torch.stack([square[:2, :2].sum(), square[:2, 2:].sum(), square[2:, :2].sum(), square[2:, 2:].sum()])
    assert torch.equal(cells, expected[None])


def test_grid_one_is_the_collapse_and_flatten_keeps_every_position():
    maps = torch.randn(5, 3, 25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reduce_on_grid(maps, "l2", 1), reduce_maps(maps, "l2"))
    assert torch.equal(reduce_on_grid(maps, "l1", None), maps.flatten(1))  # one value per cell: as it is
    assert torch.equal(reduce_on_grid(maps, "l1", 9), maps.flatten(1))  # a grid finer than the map: flattened


def test_grid_cells_overlap_like_adaptive_pooling():
    maps = torch.rand(2, 1, 25)
    cells = reduce_on_grid(maps, "mean", 2)
    pooled = nn.functional.adaptive_avg_pool2d(maps.reshape(2, 1, 5, 5), 2).flatten(1)
    torch.testing.assert_close(cells, pooled)


def test_neurons_stay_one_column():
    values = torch.randn(4, 7, 1)
    assert torch.equal(reduce_on_grid(values, "l1", 3), values[:, :, 0])


# --- TERC on groups of columns -------------------------------------------------------------------


def grouped_features(n=500, seed=0):
    """4 features of 3 columns: 0 informative, 1 a linear mix of 0's columns, 2 noise, 3 constant."""
    g = torch.Generator().manual_seed(seed)
    informative = torch.randn(n, 3, generator=g)
    mixed = informative @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0], [0.3, 0.0, 1.0]])
    noise = torch.randn(n, 3, generator=g)
    x = torch.cat([informative, mixed, noise, torch.ones(n, 3)], dim=1)
    y = torch.stack([informative[:, 0] * informative[:, 1], informative[:, 2].abs()], 1)
    return x, y + 0.05 * torch.randn(n, 2, generator=g)


def test_terc_keeps_one_of_two_mixed_groups_and_drops_noise_and_constant():
    x, y = grouped_features()
    config = TercConfig(confidence=0.9, **SMALL)
    start = terc_prepare(x, y, config, torch.Generator().manual_seed(0), width=3)
    result = terc_test(start, config)
    assert result.keep.shape == (4,) and result.keep[:2].sum() == 1 and not result.keep[2:].any()
    assert result.constant == [3] and len(result.single_information) == 4
    assert sorted(result.order) == [0, 1, 2]
    assert result.single_information[2] < min(result.single_information[:2])  # the groups' joint MI orders them


def test_width_one_is_the_default():
    x, y = grouped_features(n=200)
    config = TercConfig(confidence=0.9, hidden_size=16, fit_iterations=50, refit_iterations=10, ordering_iterations=5)
    default = terc_select(x, y, config, torch.Generator().manual_seed(3))
    explicit = terc_test(terc_prepare(x, y, config, torch.Generator().manual_seed(3), width=1), config)
    assert torch.equal(default.keep, explicit.keep) and default.confidence_worse == explicit.confidence_worse


def test_width_must_divide_the_columns():
    with pytest.raises(ValueError, match=r"^x has 12 columns, not a whole number of features of width 5\.$"):
        terc_prepare(torch.randn(50, 12), torch.randn(50, 2), TercConfig(), torch.Generator(), width=5)


# --- MIPP through the API -------------------------------------------------------------------------


class SideNet(nn.Module):
    """1×1 conv1 (3 filters) → 4×4 conv2 (2 units) → Linear: is the bright pixel on the left?

    Filter 0 copies a one-hot image, so its L1 over the map is exactly 1 for every image: its
    information (where the pixel is) is only spatial. Filter 1 is dead; filter 2 reads a
    uniform grey level that nothing downstream uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 2, 4), nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).reshape(3, 2, 1, 1))
            self.conv1.bias.zero_()
            side = torch.zeros(2, 3, 4, 4)
            side[0, 0, :, :2], side[0, 0, :, 2:] = 1.0, -1.0
            side[1, 0] = -side[0, 0]
            self.conv2.weight.copy_(side)
            self.conv2.bias.zero_()
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def side_images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 2, 4, 4)
    x[torch.arange(n), 0, torch.randint(0, 4, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)] = 1.0
    x[:, 1] = torch.rand(n, 1, 1, generator=g)
    return x


@pytest.fixture(scope="module")
def side_results():
    model, x = SideNet(), side_images()
    return model, x, {
        spatial: infoprune.prune(model, x, "mipp", confidence=0.9, spatial=spatial, device="cpu", progress=None, **SMALL)
        for spatial in (1, 2)
    }


def test_spatial_information_is_invisible_after_the_collapse_and_kept_on_a_grid(side_results):
    _model, _x, results = side_results
    assert results[1].masks["conv1"].tolist() == [False, False, True]  # the collapse sees a constant
    assert results[2].masks["conv1"].tolist() == [True, False, False]  # the grid sees the side
    layer = results[2].details["layers"]["conv1"]
    assert layer["constant_units"] == [1] and len(layer["single_information"]) == 3  # per filter, not per cell


def test_dead_filter_goes_as_a_whole_and_physical_equals_masked(side_results):
    model, x, results = side_results
    result = results[2]
    assert result.model.conv1.out_channels == 1 and result.model.conv2.in_channels == 1
    with Network(model, x[:2]).masked(result.masks), torch.no_grad():
        expected = model(x)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), expected, atol=1e-6, rtol=1e-6)
    assert result.masks["conv2"].sum() == 1  # "right" = 1 − "left": one of the two carries both


def test_pixels_are_selected_against_the_grid_of_the_first_layer():
    """Pixels tested against conv1's maps cell by cell: the grey channel and the unread corner
    carry nothing, so only one-hot pixels that the kept filter reads can stay."""
    model, x = SideNet(), side_images(n=600)
    result = infoprune.prune(
        model, x, "mipp", confidence=0.9, spatial=2, select_inputs=True, input_spatial=2, device="cpu", progress=None,
        **SMALL,
    )
    mask = result.input_mask.reshape(2, 4, 4)
    assert not mask[1].any() and mask[0].any()
    with Network(model, x[:2]).masked(result.masks, result.input_mask), torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(result.model(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "flat", None])
def test_bad_spatial_values_are_refused(bad):
    message = (
        "spatial must be a grid size, an integer ≥ 1 (1: one value per map), or 'flatten' (every position), "
        f"got {bad!r}."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        infoprune.prune(SideNet(), side_images(), "mipp", spatial=bad, device="cpu", progress=None)


def test_bad_input_spatial_is_refused():
    with pytest.raises(ValueError, match=r"^input_spatial must be a grid size, an integer ≥ 1 .*got 0\.$"):
        infoprune.prune(SideNet(), side_images(), "mipp", input_spatial=0, device="cpu", progress=None)


def test_a_map_that_is_not_square_has_no_grid():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, (2, 4)), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    x = torch.rand(100, 1, 2, 4)
    expected = (
        "The units of '0': a map of 8 values per unit is not square, so it has no spatial grid; use spatial=1 "
        "(one value per map) for it."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        infoprune.prune(model, x, "mipp", spatial=2, device="cpu", progress=None, **SMALL)


def test_input_patches_are_squares_over_all_channels():
    from infoprune.methods.mipp import input_patches

    patches = input_patches(torch.Size([2, 4, 4]), 2)
    assert patches.shape == (4, 8)
    assert patches[0].tolist() == [0, 1, 4, 5, 16, 17, 20, 21]  # top-left square of both channels
    assert patches[3].tolist() == [10, 11, 14, 15, 26, 27, 30, 31]
    assert torch.equal(input_patches(torch.Size([3, 5]), 1).flatten(), torch.arange(15))
    with pytest.raises(ValueError, match=r"^input_patch=2 needs inputs of shape \(channels, height, width\) with height "
                       r"and width divisible by 2; got \(1, 5, 5\)\. Use input_patch=1 \(one feature per input value\)\.$"):
        input_patches(torch.Size([1, 5, 5]), 2)


def test_pixel_patches_are_kept_or_removed_together_at_their_own_confidence():
    model, x = SideNet(), side_images(n=600)
    result = infoprune.prune(
        model, x, "mipp", confidence=0.9, spatial=2, select_inputs=True, input_patch=2, input_confidence=0.5,
        device="cpu", progress=None, **SMALL,
    )
    squares = result.input_mask.reshape(2, 2, 2, 2, 2).permute(1, 3, 0, 2, 4).reshape(4, 8)
    assert all(square.all() or not square.any() for square in squares) and squares.any()
    assert len(result.details["layers"]["__input__"]["single_information"]) == 4
    with Network(model, x[:2]).masked(result.masks, result.input_mask), torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(result.model(x), expected, atol=1e-6, rtol=1e-6)


# --- spending a budget's room (top_up) ----------------------------------------------------------


def priced_budget(groups: dict[str, tuple[int, float]], full: float, target: float) -> Budget:
    """A budget whose cost is Σ price × kept units over ``groups`` ({name: (units, price)}) plus
    a fixed part that makes the full model cost ``full``; ``target`` counts the priced part only."""
    units = np.array([u for u, _ in groups.values()], dtype=float)
    linear = np.array([u * price for u, price in groups.values()])
    fixed = full - linear.sum()
    cost = QuadraticCost(tuple(groups), units, fixed, linear, np.zeros((len(units), len(units))))
    return Budget("cost", cost, target + fixed)


def test_top_up_adds_removed_units_most_sure_first_while_they_fit():
    from infoprune.methods.mipp import WalkOutcome, top_up

    budget = priced_budget({"a": (4, 10.0), "b": (2, 1.0)}, full=50.0, target=22.0)
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([False, False])}
    details = {
        "a": {"confidence_worse": {"1": 0.5, "2": 0.8}},  # unit 3 removed untested: constant, never added back
        "b": {"confidence_worse": {"0": 0.9, "1": 0.1}},
    }
    outcome = top_up(WalkOutcome(0.99, masks, None, details), budget)
    # b0 (0.9) → 11, a2 (0.8) → 21, a1 (0.5) would be 31 > 22, b1 (0.1) → 22
    assert outcome.masks["a"].tolist() == [True, False, True, False]
    assert outcome.masks["b"].tolist() == [True, True]
    assert masks["a"].tolist() == [True, False, False, False]  # the input outcome is not modified


def test_trim_by_cost_removes_the_least_evidence_per_cost_saved():
    from infoprune.methods.mipp import WalkOutcome, trim_by_cost, trim_or_fill

    budget = priced_budget({"a": (3, 10.0), "b": (4, 1.0)}, full=1000.0, target=25.0)
    masks = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    details = {
        "a": {"confidence_worse": {"0": 0.999, "1": 0.9999, "2": 0.99999}},  # 3, 4, 5 nines for 10 each
        "b": {"confidence_worse": {"0": 0.9, "1": 0.99, "2": 0.999, "3": 0.99}},  # 1–3 nines for 1 each
    }
    outcome = WalkOutcome(0.9, masks, None, details)
    trimmed = trim_by_cost(outcome, budget)
    assert trimmed["a"].tolist() == [False, True, True] and trimmed["b"].all()  # 3/10 nines per unit saved < 1/1
    by_confidence, _ = trim_or_fill(outcome, budget)  # least sure first: every b but its last, then a's least sure
    assert by_confidence["b"].tolist() == [False, False, True, False] and by_confidence["a"].tolist() == [False, True, True]
    with pytest.raises(ValueError, match=r"^trim must be one of \('confidence', 'cost'\), got 'flops'\.$"):
        infoprune.prune(SideNet(), side_images(), "mipp", flops=0.5, trim="flops", device="cpu", progress=None)
