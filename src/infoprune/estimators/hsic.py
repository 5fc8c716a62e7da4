"""Normalised HSIC (linear CKA) between representations, in the n × n Gram form.

ITPruner (Zheng et al., IJCV 2025) measures how much two layers say the same thing
about a batch of n inputs with the normalised Hilbert-Schmidt Independence Criterion

    nHSIC(X, Y) = ⟨K̃_X, K̃_Y⟩_F / (‖K̃_X‖_F ‖K̃_Y‖_F),   K̃ = H K H,   H = I − 11ᵀ/n,

where K is a kernel Gram matrix over the n samples. With the linear kernel K = F Fᵀ this is
linear CKA (Kornblith et al., 2019). Everything is computed from n × n matrices, so a layer
of d ≫ n features costs O(n·d) memory once (to form its Gram) and O(n²) afterwards; two
layers never need to be held side by side.

Pure functions on tensors; no knowledge of modules.
"""

from __future__ import annotations

from typing import Literal

import torch

KernelName = Literal["linear", "rbf"]
KERNELS: tuple[str, ...] = ("linear", "rbf")


def _check_features(features: torch.Tensor) -> torch.Tensor:
    if features.dim() < 2 or features.shape[0] < 2:
        raise ValueError(
            f"Features must be shaped (n, ...) with n ≥ 2 samples, got shape {tuple(features.shape)}."
        )
    return features.reshape(features.shape[0], -1).to(torch.float64)


def gram(features: torch.Tensor, kernel: KernelName = "linear") -> torch.Tensor:
    """The n × n kernel Gram matrix of ``features`` (n samples, any trailing shape, flattened).

    ``linear``: K = F Fᵀ. ``rbf``: K_ab = exp(−‖f_a − f_b‖² / (2σ²)) with σ the median
    distance between distinct samples (the usual median heuristic), which makes the kernel
    invariant to isotropic scaling of the features.
    """
    flat = _check_features(features)
    if kernel == "linear":
        return flat @ flat.T
    if kernel == "rbf":
        dot = flat @ flat.T
        norms = dot.diagonal()
        squared = (norms[:, None] + norms[None, :] - 2 * dot).clamp_min(0)
        off_diagonal = squared[~torch.eye(len(squared), dtype=torch.bool, device=squared.device)]
        median = off_diagonal.median()
        if median <= 0:
            raise ValueError(
                "The median-distance RBF bandwidth is zero: more than half of the sample pairs have "
                "identical features. Use kernel='linear' or more varied inputs."
            )
        return torch.exp(-squared / (2 * median))
    raise ValueError(f"Unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")


def centred(gram_matrix: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/n: subtract row and column means, add back the grand mean."""
    return (
        gram_matrix
        - gram_matrix.mean(dim=0, keepdim=True)
        - gram_matrix.mean(dim=1, keepdim=True)
        + gram_matrix.mean()
    )


def centred_gram(features: torch.Tensor, kernel: KernelName = "linear") -> torch.Tensor:
    """K̃ = H K H for ``features``; raises when the features do not vary over the samples.

    A constant representation has K̃ = 0 and no defined nHSIC.
    """
    kernel_matrix = gram(features, kernel)
    result = centred(kernel_matrix)
    if result.abs().max() <= 1e-12 * kernel_matrix.abs().max():
        raise ValueError(
            "The features are (numerically) constant over the samples, so their normalised HSIC "
            "is undefined. A dead layer (e.g. all-zero ReLU outputs) or identical inputs cause this."
        )
    return result


def nhsic_from_grams(centred_grams: list[torch.Tensor]) -> torch.Tensor:
    """The L × L matrix S_ij = ⟨K̃_i, K̃_j⟩_F / (‖K̃_i‖_F ‖K̃_j‖_F) of centred Gram matrices."""
    if not centred_grams:
        raise ValueError("nhsic_from_grams needs at least one centred Gram matrix.")
    sizes = {g.shape for g in centred_grams}
    if len(sizes) != 1 or len(next(iter(sizes))) != 2:
        raise ValueError(f"All Gram matrices must be n × n for the same n, got shapes {sorted(sizes)}.")
    stacked = torch.stack([g.reshape(-1) for g in centred_grams])
    inner = stacked @ stacked.T
    norms = inner.diagonal().sqrt()
    return inner / (norms[:, None] * norms[None, :])


def normalised_hsic(x: torch.Tensor, y: torch.Tensor, kernel: KernelName = "linear") -> float:
    """nHSIC between two representations of the same n samples (linear CKA for ``linear``)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same samples, got {x.shape[0]} and {y.shape[0]} rows.")
    return float(nhsic_from_grams([centred_gram(x, kernel), centred_gram(y, kernel)])[0, 1])
