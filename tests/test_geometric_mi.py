"""Known-answer tests of the Friedman–Rafsky conditional geometric MI estimator (MINT §III-A)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import minimum_spanning_tree

from infoprune.estimators.geometric_mi import (
    conditional_gmi,
    friedman_rafsky_cross_edges,
    gmi_from_cross_edges,
    grouped_conditional_gmi,
    nearest_neighbour_sources,
    point_cross_edges,
    squared_distances,
    summed_cross_edges,
)


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def scipy_cross_edges(points: np.ndarray, n_first: int) -> int:
    """Reference R: scipy's MST, with zero distances raised to a tiny weight (scipy drops zeros)."""
    distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    distances[distances == 0] = np.finfo(float).tiny
    np.fill_diagonal(distances, 0)
    tree = minimum_spanning_tree(distances).tocoo()
    assert tree.nnz == len(points) - 1
    return int(((tree.row < n_first) != (tree.col < n_first)).sum())


def test_prim_matches_scipy_minimum_spanning_tree() -> None:
    points = [gaussian(120, 3, seed) for seed in range(4)]
    distances = torch.stack([squared_distances(p.double()).float() for p in points])
    ours = friedman_rafsky_cross_edges(distances, 50).tolist()
    assert ours == [scipy_cross_edges(p.numpy().astype(float), 50) for p in points]


def test_compiled_trees_equal_the_tensor_definition() -> None:
    # The CPU path (compiled Prim, matrices summed inside the tree) against the batched tensor
    # Prim on the stacked sums: the same count for every pair, also with duplicated points
    # (ties at zero distance) and low-dimensional data (many near-ties).
    generator = torch.Generator().manual_seed(3)
    n = 150
    points = [torch.randn(n, d, generator=generator, dtype=torch.float64) for d in (1, 2, 3, 40)]
    points[1][n // 2 :] = points[1][: n // 2]  # every point duplicated across the two halves
    first = torch.stack([squared_distances(p).float() for p in points[:2]])
    second = torch.stack([squared_distances(p).float() for p in points[2:]] + [torch.zeros(n, n)])
    first_index = torch.tensor([0, 0, 0, 1, 1, 1])
    second_index = torch.tensor([0, 1, 2, 0, 1, 2])
    expected = friedman_rafsky_cross_edges(first[first_index] + second[second_index], n // 2)
    assert torch.equal(summed_cross_edges(first, first_index, second, second_index, n // 2), expected)
    cloud = torch.randn(5, n, 4, generator=generator)
    cloud[0, :, 2:] = 0  # zero-padded coordinates change no distance
    expected = friedman_rafsky_cross_edges(torch.stack([squared_distances(c.double()).float() for c in cloud]), 60)
    assert torch.equal(point_cross_edges(cloud, 60), expected)


def test_duplicated_points_are_edges_not_gaps() -> None:
    # Both halves hold the same points: every point's zero-distance twin lies in the other
    # half, the n twin edges are all in the MST, so R ≥ n and the estimate is ≤ 0.
    half = gaussian(40, 2, 0)
    points = torch.cat([half, half]).double()
    cross = friedman_rafsky_cross_edges(squared_distances(points)[None].float(), 40)
    assert int(cross) >= 40
    assert int(cross) == scipy_cross_edges(points.numpy(), 40)
    assert float(gmi_from_cross_edges(cross, 40, 40)) <= 0


def test_normalisation_reads_one_for_separated_sets() -> None:
    points = torch.cat([gaussian(50, 2, 0), gaussian(50, 2, 1) + 100.0]).double()
    cross = friedman_rafsky_cross_edges(squared_distances(points)[None].float(), 50)
    assert int(cross) == 1
    assert float(gmi_from_cross_edges(cross, 50, 50)) == pytest.approx(1 - 1 / 50)


def test_nearest_neighbour_bootstrap_takes_y_from_the_references() -> None:
    # S1 = samples 0, 1; queries 2, 3; references 4, 5 (never S1, though S1 is nearer).
    z = torch.tensor([[9.1], [1.1], [9.0], [1.0], [0.2], [9.5]], dtype=torch.float64)
    sources = nearest_neighbour_sources(squared_distances(z[2:4], z[4:]), n_joint=2)
    assert sources.tolist() == [0, 1, 5, 4]


def test_conditionally_independent_reads_near_zero() -> None:
    # X and Y both depend on Z, not on each other given Z. The nearest-neighbour bootstrap
    # leaves a small positive bias (queries with close z share a reference's y), ~0.08 here;
    # normalising by the merged set's size instead of one half's would read ~0.5.
    n = 900
    z = gaussian(n, 3, 0)
    x = z @ torch.tensor([[1.0], [0.65], [0.3]]) + 0.3 * gaussian(n, 1, 1)
    y = z @ torch.tensor([[-0.5], [0.25], [1.0]]) + 0.3 * gaussian(n, 1, 2)
    estimates = [conditional_gmi(x, y, z, seed=seed) for seed in range(3)]
    assert abs(float(np.mean(estimates))) < 0.12


def test_function_of_y_reads_clearly_higher() -> None:
    n = 600
    y, z = gaussian(n, 1, 0), gaussian(n, 1, 1)
    x = torch.sin(2 * y) + 0.05 * gaussian(n, 1, 2)
    independent_x = gaussian(n, 1, 3)
    dependent = conditional_gmi(x, y, z, seed=0)
    assert dependent > 0.3
    assert dependent > conditional_gmi(independent_x, y, z, seed=0) + 0.25


def test_child_of_group_zero_ranks_group_zero_highest() -> None:
    n = 900
    parent = gaussian(n, 4, 0)
    child = parent[:, :1] ** 2 + 0.05 * gaussian(n, 1, 1)
    groups = [slice(j, j + 1) for j in range(4)]
    scores = grouped_conditional_gmi(parent, child, groups, [slice(0, 1)], seed=0)
    assert scores.shape == (1, 4)
    assert int(scores[0].argmax()) == 0
    assert float(scores[0, 0] - scores[0, 1:].max()) > 0.1


def test_batching_does_not_change_scores() -> None:
    parent, child = gaussian(80, 6, 0), gaussian(80, 4, 1)
    parent_groups = [slice(0, 2), slice(2, 4), slice(4, 6)]
    child_groups = [slice(0, 1), slice(1, 3), slice(3, 4)]
    one_at_a_time = grouped_conditional_gmi(parent, child, parent_groups, child_groups, batch_elements=1)
    all_at_once = grouped_conditional_gmi(parent, child, parent_groups, child_groups, batch_elements=10**8)
    assert torch.equal(one_at_a_time, all_at_once)


def test_reproducible_under_a_seed() -> None:
    x, y, z = gaussian(200, 1, 0), gaussian(200, 1, 1), gaussian(200, 3, 2)
    assert conditional_gmi(x, y, z, seed=7) == conditional_gmi(x, y, z, seed=7)
    assert len({conditional_gmi(x, y, z, seed=seed) for seed in range(5)}) > 1


def test_progress_callback_counts_every_pair() -> None:
    counted = []
    grouped_conditional_gmi(
        gaussian(40, 4, 0), gaussian(40, 3, 1), [slice(0, 2), slice(2, 4)], [slice(0, 1), slice(1, 2), slice(2, 3)],
        batch_elements=2 * 40 * 40, on_pairs_done=counted.append,
    )
    assert sum(counted) == 6


@pytest.mark.parametrize(
    ("parent", "child", "message"),
    [
        (torch.randn(10, 4), torch.randn(9, 2), "same samples"),
        (torch.randn(5, 4), torch.randn(5, 2), "at least 6 samples"),
        (torch.full((10, 4), float("nan")), torch.randn(10, 2), "NaN"),
        (torch.randn(10), torch.randn(10, 2), "matrices"),
    ],
)
def test_bad_samples_raise(parent: torch.Tensor, child: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grouped_conditional_gmi(parent, child, [slice(0, 2), slice(2, 4)], [slice(0, 2)])


def test_bad_groups_raise() -> None:
    parent, child = torch.randn(10, 4), torch.randn(10, 2)
    with pytest.raises(ValueError, match="nothing to condition on"):
        grouped_conditional_gmi(parent, child, [slice(0, 4)], [slice(0, 2)])
    with pytest.raises(ValueError, match="contiguous"):
        grouped_conditional_gmi(parent, child, [slice(0, 2), slice(3, 3)], [slice(0, 2)])
    with pytest.raises(ValueError, match="conditioning feature"):
        conditional_gmi(torch.randn(10), torch.randn(10), torch.randn(10, 0))


def test_scores_equal_those_of_the_tensor_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    # The paper's estimator end to end: compiled trees against the batched tensor Prim.
    from infoprune.estimators import geometric_mi

    parent, child = gaussian(120, 6, 0).relu(), gaussian(120, 4, 1)
    parent_groups = [slice(0, 2), slice(2, 4), slice(4, 6)]
    child_groups = [slice(0, 1), slice(1, 3), slice(3, 4)]
    compiled = grouped_conditional_gmi(parent, child, parent_groups, child_groups, seed=2)

    def by_definition(first, first_index, second, second_index, n_first):
        return friedman_rafsky_cross_edges(first[first_index] + second[second_index], n_first)

    monkeypatch.setattr(geometric_mi, "summed_cross_edges", by_definition)
    assert torch.equal(compiled, grouped_conditional_gmi(parent, child, parent_groups, child_groups, seed=2))
