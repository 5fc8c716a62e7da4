"""MINT's decision from the scores: the threshold δ (or a quantile), the cap γ (Alg. 1,
App. A), and :func:`rethreshold` to decide again from stored scores."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from infoprune.methods.base import check_fraction

if TYPE_CHECKING:
    from infoprune.network import Budget


def keep_connections(
    scores: torch.Tensor, block_weights: torch.Tensor, delta: float, gamma: float | None
) -> tuple[torch.Tensor, float]:
    """Which (child group, parent group) blocks keep their weights, and the δ used (Alg. 1, App. A).

    A block is kept when its score ≥ δ. With a cap γ, when the dropped blocks hold more than
    a fraction γ of the pair's weights, δ is re-derived from this pair's scores: the lowest
    threshold at which the dropped blocks would exceed γ, so that at most γ is dropped.
    """
    kept = scores >= delta
    if gamma is None:
        return kept, float(delta)
    budget = gamma * float(block_weights.sum())
    if float(block_weights[~kept].sum()) <= budget:
        return kept, float(delta)
    flat_scores = scores.flatten()
    order = torch.argsort(flat_scores, stable=True)
    dropped_weights = block_weights.flatten()[order].cumsum(0)
    first_over = int((dropped_weights > budget).nonzero()[0])
    local_delta = float(flat_scores[order[first_over]])
    return scores >= local_delta, local_delta


def check_threshold(
    delta: float | None, quantile: float | None, default_quantile: float | None = 0.5
) -> tuple[float | None, float | None]:
    """Validate δ given directly or as a quantile (at most one; ``default_quantile`` when neither)."""
    if delta is not None and quantile is not None:
        raise ValueError(f"Give either delta ({delta}) or quantile ({quantile}), not both.")
    if delta is None:
        if quantile is None and default_quantile is None:
            return None, None
        return None, check_fraction("quantile", default_quantile if quantile is None else quantile, low_open=False, high_open=False)
    try:
        return float(delta), None
    except (TypeError, ValueError):
        raise ValueError(f"delta must be a number, got {delta!r}.") from None


@dataclass(frozen=True)
class LayerPair:
    """One parent → child pair: group sizes, scores ρ (child groups × parent groups), decision.

    ``kept`` (bool, like ``scores``) and the ``delta`` used are set by :func:`threshold_pairs`.
    """

    parent: str
    child: str
    parent_sizes: list[int]
    child_sizes: list[int]
    scores: torch.Tensor
    kept: torch.Tensor | None = None
    delta: float | None = None

    def block_weights(self) -> torch.Tensor:
        """Connections in each (child group, parent group) block, per kernel position."""
        return torch.outer(torch.tensor(self.child_sizes), torch.tensor(self.parent_sizes))

    def unit_mask(self) -> torch.Tensor:
        """Kept connections expanded to units, ``(child units, parent units)``."""
        rows, cols = torch.tensor(self.child_sizes), torch.tensor(self.parent_sizes)
        return self.kept.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "child": self.child,
            "parent_group_sizes": self.parent_sizes,
            "child_group_sizes": self.child_sizes,
            "delta": self.delta,
            "scores": self.scores.tolist(),
            "kept": None if self.kept is None else self.kept.tolist(),
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> LayerPair:
        kept = None if entry["kept"] is None else torch.tensor(entry["kept"], dtype=torch.bool)
        scores = torch.tensor(entry["scores"], dtype=torch.float64)
        return cls(
            entry["parent"], entry["child"], entry["parent_group_sizes"], entry["child_group_sizes"], scores, kept, entry["delta"]
        )


Cap = float | dict[str, float] | None
"""γ: one cap for every layer pair, a cap per parent layer (layers not named are uncapped), or None."""


def check_gamma(gamma: Cap, parents: list[str] | None = None) -> Cap:
    """Validate γ. One γ lies in (0, 1]; per-layer caps lie in [0, 1], where 0 leaves that
    layer's connections unpruned (App. B skips some layers). With ``parents``, the names must
    be among them."""
    if gamma is None:
        return None
    if not isinstance(gamma, dict):
        return check_fraction("gamma", gamma, high_open=False)
    if parents is not None:
        unknown = sorted(set(gamma) - set(parents))
        if unknown:
            raise ValueError(f"gamma names layers that are not MINT parents: {unknown}; the parents are {parents}.")
    return {name: check_fraction(f"gamma[{name!r}]", cap, low_open=False, high_open=False) for name, cap in gamma.items()}


def threshold_pairs(
    pairs: list[LayerPair], delta: float | None, quantile: float | None, gamma: Cap
) -> tuple[float, list[LayerPair]]:
    """Pool the scores of all pairs, set δ (given, or their ``quantile``), decide every pair."""
    if delta is None:
        delta = float(torch.quantile(torch.cat([pair.scores.flatten() for pair in pairs]), quantile))
    decided = []
    for pair in pairs:
        cap = gamma.get(pair.parent) if isinstance(gamma, dict) else gamma
        kept, pair_delta = keep_connections(pair.scores, pair.block_weights(), delta, cap)
        decided.append(replace(pair, kept=kept, delta=pair_delta))
    return delta, decided


def delta_within_budget(
    pairs: list[LayerPair], gamma: Cap, masks_of: Callable[[list[LayerPair]], dict[str, torch.Tensor]], budget: Budget
) -> tuple[float, list[LayerPair]]:
    """The smallest δ among the pooled scores (and +∞: every connection dropped) whose decided
    pairs' unit masks (``masks_of``) meet ``budget``, by bisection (the cost never grows with δ);
    refused with the budget's message when even +∞, within the caps γ, exceeds it."""
    candidates = torch.cat([pair.scores.flatten() for pair in pairs]).unique().tolist() + [math.inf]

    def cost(index: int) -> float:
        return budget.of_masks(masks_of(threshold_pairs(pairs, candidates[index], None, gamma)[1]))

    least = masks_of(threshold_pairs(pairs, math.inf, None, gamma)[1])
    budget.check_reachable(
        {name: int(mask.sum()) for name, mask in least.items()},
        "with every connection dropped that the caps γ allow (an emptied group keeps one physical unit)",
        "Raise the budget, or loosen gamma.",
    )
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if cost(middle) <= budget.target:
            high = middle
        else:
            low = middle + 1
    return candidates[low], threshold_pairs(pairs, candidates[low], None, gamma)[1]


def pairs_of(details: dict[str, Any]) -> list[LayerPair]:
    """The layer pairs stored in a MINT run's ``details`` (a clear error for other details)."""
    if "pairs" not in details:
        raise ValueError("These details hold no MINT layer pairs: pass result.details of a method='mint' run.")
    return [LayerPair.from_dict(entry) for entry in details["pairs"]]


def rethreshold(
    details: dict[str, Any], *, delta: float | None = None, quantile: float | None = None, gamma: Cap = None
) -> dict[str, Any]:
    """The details of a MINT run decided again with another δ, quantile or γ, without re-estimating.

    Returns ``delta``, ``samples`` and ``pairs`` like ``result.details`` (for sweeps over δ as
    in MINT Fig. 4 and A-1); :func:`connection_masks` and :func:`connection_summary` take it.
    """
    delta, quantile = check_threshold(delta, quantile)
    pairs = pairs_of(details)
    gamma = check_gamma(gamma, sorted({pair.parent for pair in pairs}))
    delta, pairs = threshold_pairs(pairs, delta, quantile, gamma)
    return {"delta": delta, "samples": details.get("samples"), "pairs": [pair.as_dict() for pair in pairs]}
