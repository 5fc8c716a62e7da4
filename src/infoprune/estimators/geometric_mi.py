"""Conditional geometric mutual information by the Friedman–Rafsky statistic (MINT §III-A).

The geometric MI of MINT Eq. (2)–(4) (Yasaei Sekeh & Hero 2019) is the Henze–Penrose
divergence between the joint density f(x, y, z) and the conditionally independent density
f(x|z) f(y|z) f(z). Given N samples of (x, y, z) it is estimated in five steps (§III-A):

1. split the samples at random into S1, the joint samples (n1 = ⌊N/3⌋), and S2 (the rest);
2. nearest-neighbour bootstrap (Sen et al. 2017, Alg. 1) on S2 alone: S2 is halved into
   queries Q (n2 = ⌊N/3⌋) and references P; every query (x_a, y_a, z_a) becomes (x_a, y_b, z_a)
   where b is the reference whose z is nearest to z_a. The set S̃2 so made follows
   f(x|z) f(y|z) f(z) while S1 follows f(x, y, z);
3. merge S = S1 ∪ S̃2 and build the Euclidean minimum spanning tree (MST) over the points
   (x, y, z) concatenated;
4. count R, the MST edges that join a point of S1 to a point of S̃2 (the Friedman–Rafsky
   statistic);
5. Î = 1 − R (n1 + n2) / (2 n1 n2).

S̃2 is made from S2 points only, as §III-A says, with the 1/3 : 1/3 : 1/3 sizes of Sen et
al.'s CI test: were the y of S̃2 copied from S1 itself, each bootstrapped point would share
its y exactly with a joint point of nearly the same z, the two would be joined in the MST by
preference, and a parent unit of high variance would read as *less* dependent. The bootstrap
still leaves a small positive bias (queries with close z share a reference's y), largest for
a low-dimensional Z. With many conditioning features (a layer's other units) the statistic
has little power: the y and x coordinates are a small part of each distance.

Normalisation of step 5: R / (n1 + n2) converges to 2pq ∫ f g / (p f + q g) with
p = n1 / (n1 + n2), q = 1 − p (Henze & Penrose 1999), so Î converges to the Henze–Penrose
divergence; for p = q = ½ that is 1 − 2 ∫ f g / (f + g), Eq. (2)/(4) with f the joint and g
the product density. When the two sets come from one distribution E[R] = 2 n1 n2 / (n1 + n2)
and Î ≈ 0; when they are fully separated R = 1 and Î ≈ 1. With n1 = n2 = n this is the
paper's 1 − R/m with m = n, the size of each of the two merged sets (with m the size of the
merged set, independent data would read ≈ ½). Î can be slightly negative by chance.

Computation. Distances decompose over the three blocks of coordinates, and every point of
S1 ∪ S̃2 takes x and z from its own sample and y from a *source* sample (itself in S1, its
nearest reference in S̃2):  d²(p, q) = d²_x(p, q) + d²_z(p, q) + d²_y(src p, src q).
So for a layer pair the distances over all parents are computed once, d²_z = d²_parents − d²_y,
and each (child group, parent group) pair costs one addition of 2N/3 × 2N/3 matrices and one
MST. The MST is Prim's algorithm on the dense squared-distance matrix (the same tree as on
distances, since an MST depends only on the order of the edge weights); it needs no care for
zero distances, which ``scipy.sparse.csgraph.minimum_spanning_tree`` reads as missing edges
(duplicated points are ordinary zero-weight edges here). Ties go to the lowest index, so
results are deterministic under a seed. :func:`friedman_rafsky_cross_edges` is the definition:
a batch of trees grown together with tensor operations, the path on a GPU. On the CPU the same
algorithm runs compiled (numba, one tree per thread, the matrix sum fused into the tree's
loop and never stored): the same float32 sums, the same choices and tie-breaks, so the same
R to the edge, ~40 times faster than the tensor loop (2.3 ms against 100 ms per tree of 1666
points on one thread).

Our extension (not in the paper): :func:`grouped_conditional_gmi` with ``given`` conditions
pair (i, j) on a low-dimensional statistic instead of all other parent features, e.g. the
other parents' contribution W_z z + b to child group i's pre-activation
(:class:`infoprune.methods.mint.MINT`, ``conditioning="contribution"``). Each pair then has
its own Z, so its points (x, z, y of the source) are handed to the tree whole and distances
are computed inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numba
import numpy as np
import torch

DEFAULT_BATCH_ELEMENTS = 2**26
"""Distance entries held per batch of MSTs (256 MiB in float32): sets how many pairs run at once."""

_DIRECT_DISTANCE_MAX_DIM = 32  # below this, exact pairwise differences are faster than the matmul form


def squared_distances(values: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``values (N, D)`` and ``others (M, D)``.

    ``others`` defaults to ``values`` (an ``(N, N)`` matrix). Computed in the inputs' dtype
    (float64 in the estimator), exactly for small D and by the matrix-product form otherwise;
    clamped at 0 against rounding.
    """
    others = values if others is None else others
    if values.shape[1] <= _DIRECT_DISTANCE_MAX_DIM:
        return torch.cdist(values, others, compute_mode="donot_use_mm_for_euclid_dist").square_()
    return torch.cdist(values, others, compute_mode="use_mm_for_euclid_dist").square_().clamp_min_(0)


def nearest_neighbour_sources(z_query_to_reference: torch.Tensor, n_joint: int) -> torch.Tensor:
    """Nearest-neighbour bootstrap (Sen et al. 2017): where each merged point takes its y from.

    Samples are ordered S1 ``[0, n_joint)``, then the queries, then the references;
    ``z_query_to_reference`` holds the squared z-distances from each query (rows) to each
    reference (columns). S1 keeps its own y; each query takes the y of the reference with the
    nearest z (ties to the lowest index). Returns the source index of every merged point.
    """
    n_query = z_query_to_reference.shape[0]
    own = torch.arange(n_joint, device=z_query_to_reference.device)
    nearest = n_joint + n_query + z_query_to_reference.argmin(dim=1)
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


@numba.njit(cache=True, nogil=True)
def _tree_cross_edges(first, second, points, n, n_first):  # pragma: no cover - compiled
    """R of one MST by Prim's algorithm, as :func:`friedman_rafsky_cross_edges` grows it.

    Edge weights are ``first[u, v] + second[u, v]`` (float32), or, when ``points`` (D, n) has
    rows, the squared distances between its columns. Vertices not yet in the tree are kept
    in ``remaining`` (unordered); the next vertex is the lowest key, ties to the lowest index.
    """
    key = np.full(n, np.inf, dtype=np.float32)
    parent_second = np.zeros(n, dtype=np.bool_)
    remaining = np.arange(1, n)
    row = np.empty(n, dtype=np.float32)
    vertex, crossings = 0, 0
    for count in range(n - 1, 0, -1):
        if points.shape[0]:
            row[:] = 0
            for c in range(points.shape[0]):  # coordinate by coordinate, so that v vectorises
                here = points[c, vertex]
                for v in range(n):
                    diff = points[c, v] - here
                    row[v] += diff * diff
        else:
            for v in range(n):
                row[v] = first[vertex, v] + second[vertex, v]
        vertex_second = vertex >= n_first
        best, best_at, best_vertex = np.inf, 0, n
        for k in range(count):
            v = remaining[k]
            if row[v] < key[v]:
                key[v] = row[v]
                parent_second[v] = vertex_second
            if key[v] < best or (key[v] == best and v < best_vertex):
                best, best_at, best_vertex = key[v], k, v
        vertex = best_vertex
        crossings += parent_second[vertex] != (vertex >= n_first)
        remaining[best_at] = remaining[count - 1]
    return crossings


@numba.njit(cache=True, parallel=True)
def _trees_cross_edges(first, first_index, second, second_index, points, n, n_first, out):  # pragma: no cover
    for k in numba.prange(out.shape[0]):
        out[k] = _tree_cross_edges(first[first_index[k]], second[second_index[k]], points[k], n, n_first)


def _compiled_cross_edges(first, first_index, second, second_index, points, n: int, n_first: int) -> torch.Tensor:
    threads = torch.get_num_threads()  # numba's OpenMP layer may reset torch's count: restored below
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    out = np.zeros(len(first_index), dtype=np.int64)
    try:
        _trees_cross_edges(first, first_index, second, second_index, points, n, n_first, out)
    finally:
        torch.set_num_threads(threads)
    return torch.from_numpy(out)


def summed_cross_edges(
    first: torch.Tensor, first_index: torch.Tensor, second: torch.Tensor, second_index: torch.Tensor, n_first: int
) -> torch.Tensor:
    """R of the MST over ``first[first_index[k]] + second[second_index[k]]`` for every k.

    ``first (A, N, N)`` and ``second (B, N, N)`` are float32 distance matrices. On the CPU the
    compiled trees sum the two matrices row by row; elsewhere the sums are stacked and grown
    by :func:`friedman_rafsky_cross_edges`. Both give the same counts.
    """
    if first.device.type != "cpu":
        return friedman_rafsky_cross_edges(first[first_index] + second[second_index], n_first)
    no_points = np.zeros((len(first_index), 0, 1), dtype=np.float32)
    return _compiled_cross_edges(
        first.contiguous().numpy(), first_index.numpy(), second.contiguous().numpy(), second_index.numpy(),
        no_points, first.shape[1], n_first,
    )


def point_cross_edges(points: torch.Tensor, n_first: int) -> torch.Tensor:
    """R of the MST over each of a batch of point sets ``(K, N, D)`` (float32, Euclidean)."""
    if points.device.type != "cpu":
        return friedman_rafsky_cross_edges(torch.cdist(points, points).square_(), n_first)
    columns = points.transpose(1, 2).contiguous().numpy()
    index = np.zeros(points.shape[0], dtype=np.int64)
    no_matrix = np.zeros((1, 1, 1), dtype=np.float32)
    return _compiled_cross_edges(no_matrix, index, no_matrix, index, columns, points.shape[1], n_first)


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
    if parent.shape[0] < 6:
        raise ValueError(f"The estimator needs at least 6 samples (2 per third), got {parent.shape[0]}.")
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
    given: Callable[[int], torch.Tensor] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_elements: int = DEFAULT_BATCH_ELEMENTS,
    on_pairs_done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """ρ(i, j) = Î(child group i ; parent group j | Z_ij), ``(Gc, Gp)``.

    ``parent (N, P)`` and ``child (N, C)`` are paired samples (row k of both comes from the
    same input). Z_ij is every parent feature outside group j (MINT §III-A) or, with ``given``
    (our extension), ``given(j)[:, child_groups[i]]``: ``given(j)`` is an ``(N, C)`` statistic
    of the other parents per child feature (e.g. their contribution to its pre-activation).
    Every pair uses the same random split (``seed``), so scores are comparable across
    groups. Pairs run in batches of about ``batch_elements / (2N/3)²`` trees on ``device``;
    ``on_pairs_done(k)`` is called after each batch of k pairs (for a progress bar).
    """
    _check_samples(parent, child)
    _check_groups(parent_groups, parent.shape[1], "parent")
    _check_groups(child_groups, child.shape[1], "child")
    if given is None:
        for group in parent_groups:
            if len(range(*group.indices(parent.shape[1]))) == parent.shape[1]:
                raise ValueError(
                    "A parent group spans every parent feature, leaving nothing to condition on: "
                    "use at least 2 parent groups (conditional GMI needs a non-empty Z)."
                )
    device = torch.device(device) if device is not None else parent.device
    order = torch.randperm(parent.shape[0], generator=torch.Generator().manual_seed(seed))
    parent = parent[order].to(device, torch.float64)
    score_pairs = _score_given if given is not None else _score_given_other_parents
    scores = torch.empty(len(child_groups), len(parent_groups), dtype=torch.float64)
    for rows, cols, cross in score_pairs(parent, child[order].to(device, torch.float64), parent_groups, child_groups, given, order, batch_elements):
        n_joint = parent.shape[0] // 3
        scores[rows, cols] = gmi_from_cross_edges(cross, n_joint, n_joint).cpu()
        if on_pairs_done is not None:
            on_pairs_done(len(rows))
    return scores


PairBatches = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(child group indices, parent group indices, R) for each batch of scored pairs."""


def _score_given_other_parents(parent, child, parent_groups, child_groups, _given, _order, batch_elements) -> PairBatches:
    """MINT §III-A: Z = the other parent features. Distances over all parents are made once;
    each parent group's merged matrix is d²_parents − d²_y + d²_y(src), each child group's d²_x."""
    n_joint = n_query = parent.shape[0] // 3
    merged = n_joint + n_query
    parents_merged = squared_distances(parent[:merged])
    parents_query_to_reference = squared_distances(parent[n_joint:merged], parent[merged:])

    def merged_parent_distances(group: slice, out: torch.Tensor) -> None:
        y = parent[:, group]
        z_query_to_reference = parents_query_to_reference - squared_distances(y[n_joint:merged], y[merged:])
        source = nearest_neighbour_sources(z_query_to_reference, n_joint)
        z_merged = torch.sub(parents_merged, squared_distances(y[:merged])).clamp_min_(0)
        out.copy_(z_merged.add_(squared_distances(y[source])))

    matrices = max(1, batch_elements // (merged * merged))  # parent matrices per batch
    hold_children = len(child_groups) * merged * merged <= 8 * batch_elements  # all, across parent batches
    children_per_batch = len(child_groups) if hold_children else max(1, matrices // 2)
    parents_per_batch = max(1, matrices - (0 if hold_children else children_per_batch))
    held: dict[int, torch.Tensor] = {}

    def child_block(children: range) -> torch.Tensor:
        if children.start not in held:
            block = parent.new_empty(len(children), merged, merged, dtype=torch.float32)
            for k, i in enumerate(children):
                block[k].copy_(squared_distances(child[:merged, child_groups[i]]))
            if not hold_children:
                return block
            held[children.start] = block
        return held[children.start]

    for p0 in range(0, len(parent_groups), parents_per_batch):
        parents = torch.arange(p0, min(len(parent_groups), p0 + parents_per_batch))
        parent_block = parent.new_empty(len(parents), merged, merged, dtype=torch.float32)
        for k, j in enumerate(parents.tolist()):
            merged_parent_distances(parent_groups[j], parent_block[k])
        for c0 in range(0, len(child_groups), children_per_batch):
            children = range(c0, min(len(child_groups), c0 + children_per_batch))
            rows = torch.tensor(children).repeat_interleave(len(parents))
            cols = parents.repeat(len(children))
            index_device = parent_block.device
            cross = summed_cross_edges(child_block(children), (rows - c0).to(index_device), parent_block, (cols - p0).to(index_device), n_joint)
            yield rows, cols, cross


RESIDUAL_NEIGHBOURS = 10
"""k of the k-nearest-neighbour regression E[x | z] in our extension."""


@numba.njit(cache=True, nogil=True)
def _matched_sources_and_regression(z, x, n_joint, k, source, fitted):  # pragma: no cover - compiled
    """For each merged point a (rows ``[0, 2 n_joint)``): ``fitted[a]``, the mean x of its k
    nearest references in z; and for each query, ``source[a]``, the nearest reference not
    yet taken by an earlier query (a bootstrap without replacement). Ties to the lowest index."""
    merged, n = 2 * n_joint, z.shape[0]
    references = np.ascontiguousarray(z[merged:].T)  # (features, references), so that r vectorises
    taken = np.zeros(n, dtype=np.bool_)
    nearest = np.empty(k, dtype=np.int64)
    nearest_d = np.empty(k)
    distance = np.empty(n - merged)
    for a in range(merged):
        nearest_d[:] = np.inf
        best, best_r = np.inf, -1
        distance[:] = 0
        for c in range(z.shape[1]):
            here = z[a, c]
            for r in range(n - merged):
                distance[r] += (here - references[c, r]) ** 2
        for r in range(merged, n):
            d = distance[r - merged]
            if d < nearest_d[k - 1]:
                at = k - 1
                while at > 0 and nearest_d[at - 1] > d:
                    nearest_d[at], nearest[at] = nearest_d[at - 1], nearest[at - 1]
                    at -= 1
                nearest_d[at], nearest[at] = d, r
            if a >= n_joint and not taken[r] and d < best:
                best, best_r = d, r
        for c in range(x.shape[1]):
            total = 0.0
            for q in range(k):
                total += x[nearest[q], c]
            fitted[a, c] = total / k
        if a >= n_joint:
            taken[best_r] = True
            source[a] = best_r
        else:
            source[a] = a


def _standardised(values: torch.Tensor) -> torch.Tensor:
    """Each column to unit standard deviation (a constant column is left as it is)."""
    spread = values.std(dim=0)
    return values / torch.where(spread > 0, spread, torch.ones_like(spread))


def _score_given(parent, child, parent_groups, child_groups, given, order, batch_elements) -> PairBatches:
    """Our extension: Z_ij = given(j)[:, group i]. Three changes to §III-A, for power: x is
    replaced by its residual x − Ê[x | z] (k-nearest-neighbour regression on the references),
    each block (residual, z, y) is scaled to unit variance — Î(X; Y | Z) is unchanged in
    theory by either, as both are invertible given Z — and the bootstrap draws each
    reference once (the nearest one not yet taken), which removes the positive bias of
    queries that share a reference's y. Each pair's merged points go to the tree whole."""
    n_joint = parent.shape[0] // 3
    merged = 2 * n_joint
    k = min(RESIDUAL_NEIGHBOURS, parent.shape[0] - merged)
    width = max(2 * (g.stop - g.start) for g in child_groups) + max(g.stop - g.start for g in parent_groups)
    for j, group in enumerate(parent_groups):
        statistic = given(j)
        if statistic.shape != child.shape:
            raise ValueError(f"given({j}) must be one value per child feature and sample, {tuple(child.shape)}; got {tuple(statistic.shape)}.")
        statistic = _standardised(statistic[order].to(torch.float64)).numpy()
        y = _standardised(parent[:, group].cpu())
        points = torch.zeros(len(child_groups), merged, width, dtype=torch.float32)
        for i, child_group in enumerate(child_groups):
            z = np.ascontiguousarray(statistic[:, child_group])
            x = child[:, child_group].cpu()
            source = np.empty(merged, dtype=np.int64)
            fitted = np.empty((merged, x.shape[1]))
            _matched_sources_and_regression(z, x.numpy(), n_joint, k, source, fitted)
            residual = _standardised(x[:merged] - torch.from_numpy(fitted))
            features = torch.cat([residual, torch.from_numpy(z[:merged]), y[torch.from_numpy(source)]], dim=1)
            points[i, :, : features.shape[1]] = features
        rows = torch.arange(len(child_groups))
        yield rows, torch.full_like(rows, j), point_cross_edges(points.to(parent.device), n_joint)


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
