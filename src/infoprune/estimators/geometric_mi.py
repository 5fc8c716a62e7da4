"""Conditional geometric mutual information by the Friedman–Rafsky statistic (MINT §III-A).

The geometric MI of MINT Eq. (2)–(4) (Yasaei Sekeh & Hero 2019) is the Henze–Penrose
divergence between the joint density f(x, y, z) and the conditionally independent density
f(x|z) f(y|z) f(z). Given N samples of (x, y, z) it is estimated in five steps (§III-A):

1. split the samples at random into S1 (n1 = ⌊N/2⌋ samples) and S2 (n2 = N − n1);
2. nearest-neighbour bootstrap (Sen et al. 2017): every sample (x_a, y_a, z_a) of S2 becomes
   (x_a, y_b, z_a) where b is the sample of S1 whose z is nearest to z_a. The set S̃2 so made
   follows f(x|z) f(y|z) f(z) while S1 follows f(x, y, z);
3. merge S = S1 ∪ S̃2 and build the Euclidean minimum spanning tree (MST) over the points
   (x, y, z) concatenated;
4. count R, the MST edges that join a point of S1 to a point of S̃2 (the Friedman–Rafsky
   statistic);
5. Î = 1 − R (n1 + n2) / (2 n1 n2).

Normalisation of step 5: R / (n1 + n2) converges to 2pq ∫ f g / (p f + q g) with
p = n1 / N, q = n2 / N (Henze & Penrose 1999), so Î converges to the Henze–Penrose divergence;
for p = q = ½ that is 1 − 2 ∫ f g / (f + g), which is Eq. (2)/(4) with f the joint and g the
product density. When the two sets come from one distribution E[R] = 2 n1 n2 / N and Î ≈ 0;
when they are fully separated R = 1 and Î ≈ 1. With n1 = n2 = n this is the paper's
1 − R/n, n being the size of one half (read "m" in §III-A as the size of one half: with m the
size of the merged set, independent data would read ≈ ½). Î can be slightly negative by chance.

Computation. Distances decompose over the three blocks of coordinates, and every point of
S1 ∪ S̃2 takes x and z from its own sample and y from a *source* sample (itself in S1, its
nearest neighbour in S̃2):  d²(p, q) = d²_x(p, q) + d²_z(p, q) + d²_y(src p, src q).
So for a layer pair the distances of all parents are computed once, d²_z = d²_parents − d²_y,
and each (child group, parent group) pair costs one N×N addition and one MST. The MST is
Prim's algorithm on the dense squared-distance matrix (the same tree as on distances, since
an MST depends only on the order of the edge weights), run for a batch of pairs at once with
tensor operations (on the GPU when given one). On two CPU cores this is ~50 times faster than
``scipy.sparse.csgraph.minimum_spanning_tree`` on the same dense matrices (6 ms against
0.3 s per tree of 1000 points), and it needs no care for zero distances, which scipy reads as
missing edges (duplicated points are ordinary zero-weight edges here). Ties go to the lowest
index, so results are deterministic under a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

DEFAULT_BATCH_ELEMENTS = 2**26
"""Distance entries held per batch of MSTs (256 MiB in float32): sets how many pairs run at once."""

_DIRECT_DISTANCE_MAX_DIM = 32  # below this, exact pairwise differences are faster than the matmul form


def squared_distances(values: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``(N, N)`` between the rows of ``values (N, D)``.

    Computed in the dtype of ``values`` (float64 for the estimator), exactly for small D
    and by the matrix-product form otherwise; clamped at 0 against rounding.
    """
    mode = "donot_use_mm_for_euclid_dist" if values.shape[1] <= _DIRECT_DISTANCE_MAX_DIM else "use_mm_for_euclid_dist"
    return torch.cdist(values, values, compute_mode=mode).square_().clamp_min_(0)


def nearest_neighbour_sources(z_squared_distances: torch.Tensor, n_first: int) -> torch.Tensor:
    """Nearest-neighbour bootstrap (Sen et al. 2017): where each merged point takes its y from.

    Samples ``[0, n_first)`` form S1 and keep their own y; each later sample (S2) takes the y
    of the S1 sample with the nearest z (ties to the lowest index). Returns the source index
    of every sample, ``(N,)``.
    """
    n = z_squared_distances.shape[0]
    own = torch.arange(n_first, device=z_squared_distances.device)
    nearest = z_squared_distances[n_first:, :n_first].argmin(dim=1)
    return torch.cat([own, nearest])


def friedman_rafsky_cross_edges(distances: torch.Tensor, n_first: int) -> torch.Tensor:
    """Number of MST edges joining ``[0, n_first)`` to ``[n_first, N)``, for a batch of graphs.

    ``distances`` is ``(B, N, N)``, symmetric, any non-negative weights (zeros are edges).
    Prim's algorithm grows all B trees from vertex 0 together; when vertex v joins a tree
    through the edge (parent, v), that edge crosses when parent and v lie in different sets.
    Returns ``(B,)`` int64 counts R.
    """
    batch, n, _ = distances.shape
    device = distances.device
    rows = torch.arange(batch, device=device)
    in_second = torch.arange(n, device=device) >= n_first
    inf = torch.tensor(float("inf"), dtype=distances.dtype, device=device)
    # +inf on vertices already in the tree, so that they are never chosen or updated again
    barrier = torch.zeros(batch, n, dtype=distances.dtype, device=device)
    barrier[:, 0] = inf
    key = distances[:, 0, :] + barrier  # cheapest edge from the tree to each vertex
    parent_in_second = torch.zeros(batch, n, dtype=torch.bool, device=device)  # vertex 0 is in S1
    crossings = torch.zeros(batch, dtype=torch.int64, device=device)
    for _ in range(n - 1):
        vertex = key.argmin(dim=1)
        vertex_in_second = in_second[vertex]
        crossings += parent_in_second[rows, vertex] != vertex_in_second
        barrier[rows, vertex] = inf
        candidate = distances[rows, vertex] + barrier
        closer = candidate < key
        key = torch.minimum(key, candidate)
        key[rows, vertex] = inf
        parent_in_second = torch.where(closer, vertex_in_second[:, None], parent_in_second)
    return crossings


def gmi_from_cross_edges(cross_edges: torch.Tensor, n_first: int, n_second: int) -> torch.Tensor:
    """Î = 1 − R (n1 + n2) / (2 n1 n2): ≈ 0 for one distribution, → 1 for separated sets."""
    return 1.0 - cross_edges.double() * (n_first + n_second) / (2.0 * n_first * n_second)


def _check_samples(parent: torch.Tensor, child: torch.Tensor) -> None:
    if parent.dim() != 2 or child.dim() != 2:
        raise ValueError(
            f"parent and child must be (samples, features) matrices, got shapes {tuple(parent.shape)} "
            f"and {tuple(child.shape)}."
        )
    if parent.shape[0] != child.shape[0]:
        raise ValueError(
            f"parent and child must hold the same samples (rows paired), got {parent.shape[0]} and "
            f"{child.shape[0]} rows."
        )
    if parent.shape[0] < 4:
        raise ValueError(f"The estimator needs at least 4 samples (2 per half), got {parent.shape[0]}.")
    for name, values in (("parent", parent), ("child", child)):
        if not torch.isfinite(values).all():
            raise ValueError(f"The {name} samples contain NaN or inf.")


def _check_groups(groups: Sequence[slice], width: int, what: str) -> None:
    if not groups:
        raise ValueError(f"At least one {what} group is needed.")
    for group in groups:
        start, stop, step = group.indices(width)
        if step != 1 or stop <= start:
            raise ValueError(f"{what} group {group} is not a non-empty contiguous slice of {width} features.")


def grouped_conditional_gmi(
    parent: torch.Tensor,
    child: torch.Tensor,
    parent_groups: Sequence[slice],
    child_groups: Sequence[slice],
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_elements: int = DEFAULT_BATCH_ELEMENTS,
    on_pairs_done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """ρ(i, j) = Î(child group i ; parent group j | all other parent features), ``(Gc, Gp)``.

    ``parent (N, P)`` and ``child (N, C)`` are paired samples (row k of both comes from the
    same input). Every pair uses the same random split (``seed``), so scores are comparable
    across groups. Pairs run in batches of about ``batch_elements / N²`` MSTs on ``device``;
    ``on_pairs_done(k)`` is called after each batch of k pairs (for a progress bar).
    """
    _check_samples(parent, child)
    _check_groups(parent_groups, parent.shape[1], "parent")
    _check_groups(child_groups, child.shape[1], "child")
    for group in parent_groups:
        if len(range(*group.indices(parent.shape[1]))) == parent.shape[1]:
            raise ValueError(
                "A parent group spans every parent feature, leaving nothing to condition on: "
                "use at least 2 parent groups (conditional GMI needs a non-empty Z)."
            )
    device = torch.device(device) if device is not None else parent.device
    n = parent.shape[0]
    n_first = n // 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parent = parent[order].to(device, torch.float64)
    child = child[order].to(device, torch.float64)
    all_parents = squared_distances(parent)

    def merged_parent_distances(group: slice) -> torch.Tensor:
        """d²_z(p, q) + d²_y(src p, src q) over the merged set, for parent group ``group``."""
        y = squared_distances(parent[:, group])
        z = (all_parents - y).clamp_min_(0)
        source = nearest_neighbour_sources(z, n_first)
        return (z + y[source[:, None], source[None, :]]).float()

    scores = torch.empty(len(child_groups), len(parent_groups), dtype=torch.float64)
    pairs_per_batch = max(1, batch_elements // (n * n))
    for c0 in range(0, len(child_groups), pairs_per_batch):
        children = range(c0, min(len(child_groups), c0 + pairs_per_batch))
        child_block = torch.stack([squared_distances(child[:, child_groups[i]]).float() for i in children])
        parents_per_batch = max(1, pairs_per_batch // len(children))
        for p0 in range(0, len(parent_groups), parents_per_batch):
            parents = range(p0, min(len(parent_groups), p0 + parents_per_batch))
            parent_block = torch.stack([merged_parent_distances(parent_groups[j]) for j in parents])
            merged = (child_block[:, None] + parent_block[None]).reshape(-1, n, n)
            cross = friedman_rafsky_cross_edges(merged, n_first).reshape(len(children), len(parents))
            scores[c0 : c0 + len(children), p0 : p0 + len(parents)] = gmi_from_cross_edges(
                cross, n_first, n - n_first
            ).cpu()
            if on_pairs_done is not None:
                on_pairs_done(len(children) * len(parents))
    return scores


def conditional_gmi(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> float:
    """Î(X; Y | Z) of MINT §III-A from paired samples; 1-D inputs are read as one feature.

    ``x (N, dx)``, ``y (N, dy)``, ``z (N, dz)`` with dz ≥ 1. ≈ 0 when X ⊥ Y | Z, up to 1 when
    Y given Z determines X.
    """
    x, y, z = (v[:, None] if v.dim() == 1 else v for v in (x, y, z))
    if z.shape[1] == 0:
        raise ValueError("Z has no features: conditional GMI needs at least one conditioning feature.")
    parent = torch.cat([y, z], dim=1)
    scores = grouped_conditional_gmi(
        parent, x, [slice(0, y.shape[1])], [slice(0, x.shape[1])], seed=seed, device=device
    )
    return float(scores[0, 0])
