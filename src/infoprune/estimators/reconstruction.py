"""ThiNet's channel selection as tensor maths (Luo et al. 2017, §3.2–3.3, Eqs. 5–6).

A consumer's output at a sampled location is ``ŷ = Σ_c x̂_c``, where ``x̂_c`` is the
contribution of input channel c (its kernel slice applied to its input patch; bias left
out). Stacking the sampled locations gives a matrix ``X`` of shape ``(S, C)``.
"""

from __future__ import annotations

import torch


def greedy_removal(contributions: torch.Tensor, count: int) -> torch.Tensor:
    """ThiNet's greedy Algorithm 1: indices of ``count`` channels whose removal keeps the
    reconstruction error ``‖Σ_{c∈T} x̂_c‖²`` smallest, chosen one at a time.

    With the Gram matrix ``G = XᵀX`` the error after adding c to T is
    ``‖r_T‖² + 2 Σ_{t∈T} G[t, c] + G[c, c]``, so each step is a vector argmin (ties: lowest index).
    """
    gram = contributions.double().T @ contributions.double()
    channels = gram.shape[0]
    if not 0 <= count <= channels:
        raise ValueError(f"Cannot remove {count} of {channels} channels.")
    cross = torch.zeros(channels, dtype=torch.float64, device=gram.device)
    removed = torch.zeros(channels, dtype=torch.bool, device=gram.device)
    order = []
    for _ in range(count):
        added_error = (2 * cross + gram.diagonal()).masked_fill(removed, torch.inf)
        chosen = int(torch.argmin(added_error))
        order.append(chosen)
        removed[chosen] = True
        cross += gram[chosen]
    return torch.tensor(order, dtype=torch.long)


def least_squares_scales(contributions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ThiNet Eq. 6: per-channel scales ``w`` minimising ``‖ŷ − X_keep w‖²`` with ``ŷ = Σ_c x̂_c``.

    Returns a ``(C,)`` vector: the least-squares scale for kept channels (minimum-norm
    solution if they are linearly dependent), 1 for removed ones (they are dropped anyway).
    """
    x = contributions.double().cpu()
    target = x.sum(dim=1, keepdim=True)
    solution = torch.linalg.lstsq(x[:, keep.cpu()], target, driver="gelsd").solution.flatten()
    scales = torch.ones(x.shape[1], dtype=torch.float64)
    scales[keep.cpu()] = solution
    return scales


def relative_error(contributions: torch.Tensor, keep: torch.Tensor, scales: torch.Tensor | None = None) -> float:
    """``‖ŷ − X_keep w‖² / ‖ŷ‖²`` on the sampled locations (``w`` = 1 without scales)."""
    x = contributions.double().cpu()
    weights = keep.double() if scales is None else keep.double() * scales
    target = x.sum(dim=1)
    return float((target - x @ weights).pow(2).sum() / target.pow(2).sum().clamp_min(1e-300))


def linear_substitution(moments: torch.Tensor, removed: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """``(kept + 1, removed)`` coefficients ``A`` predicting the ``removed`` features from the kept
    ones and a constant, ``x_removed ≈ [x_kept, 1] A``, by ridge least squares.

    ``moments`` is ``E[[x, 1][x, 1]ᵀ]`` over the samples (the constant last); ``removed`` a bool
    vector over the features. The ridge is ``ridge`` times the mean diagonal of the kept block,
    so that it is scale-free; it only matters where kept features are (nearly) collinear.
    """
    keep = torch.cat([~removed, torch.ones(1, dtype=torch.bool, device=removed.device)])
    target = torch.cat([removed, torch.zeros(1, dtype=torch.bool, device=removed.device)])
    gram = moments[keep][:, keep]
    regularised = gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(regularised, moments[keep][:, target])
