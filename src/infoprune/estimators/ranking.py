"""Turning per-unit scores into keep-masks at a pruning ratio (global or per-layer ranking).

Pure tensor maths shared by every score-based method: the method says how important each
unit is, this module decides which units go. Counting convention: a set of ``n`` units loses
``floor(ratio · n)`` of them, so a per-layer ranking with ``ratio < 1`` never empties a layer,
while a global ranking may (that is the layer collapse the MIPP paper measures, §5 Fig. 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import torch

Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")


def exponential_schedule(ratio: float, rounds: int) -> list[float]:
    """Pruning ratio after each of ``rounds`` rounds: the kept fraction shrinks as
    ``(1 − ratio)^(k/rounds)`` (Tanaka et al. 2020, Alg. 1); the last round reaches ``ratio``."""
    return [1 - (1 - ratio) ** (k / rounds) for k in range(1, rounds)] + [ratio]


def units_to_remove(ratio: float, units: int) -> int:
    """``floor(ratio · units)``, robust to floating-point noise (0.3 · 10 is 3, not 2)."""
    return min(units, math.floor(ratio * units + 1e-9))


def _protected(scores: torch.Tensor, min_units: int) -> torch.Tensor:
    """Bool mask of a layer's ``min_units`` highest-scored units (ties: lowest index)."""
    protected = torch.zeros(scores.numel(), dtype=torch.bool)
    count = min(min_units, scores.numel())
    if count:
        order = torch.sort(-scores, stable=True).indices
        protected[order[:count]] = True
    return protected


def _remove_lowest(scores: torch.Tensor, eligible: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask that drops the ``count`` lowest-scored eligible entries (ties: lowest index)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if count:
        ranked = torch.where(eligible, scores, torch.full_like(scores, math.inf))
        keep[torch.sort(ranked, stable=True).indices[:count]] = False
    return keep


def round_kept_up(scores: torch.Tensor, keep: torch.Tensor, multiple: int) -> torch.Tensor:
    """``keep`` with the highest-scored removed units put back until the kept count is a
    multiple of ``multiple`` (or every unit); an emptied layer stays empty."""
    kept = int(keep.sum())
    target = min(keep.numel(), -(-kept // multiple) * multiple)
    if target == kept:
        return keep
    removed = torch.nonzero(~keep).flatten()
    best = removed[torch.sort(-scores[removed], stable=True).indices[: target - kept]]
    keep = keep.clone()
    keep[best] = True
    return keep


def keep_highest(
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    scope: Scope = "global",
    min_units: int = 0,
    round_to: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Remove the lowest-scored units and return bool keep-masks (True = keep) per layer.

    ``scope="global"`` ranks all units of all layers together and removes
    ``floor(ratio · total)``; ``scope="layer"`` removes ``floor(ratio · units)`` from each
    layer. ``min_units`` protects each layer's best units from removal (0: no safeguard);
    the global count is then taken from the unprotected units, so the total ratio holds.
    ``round_to[layer]``: that layer's kept count is then rounded up to a multiple of it
    (:func:`round_kept_up`), so fewer units than the ratio says may go.
    Scores may be ``-inf`` (always removed first); NaN is an error.
    """
    masks = _keep_highest(scores, ratio, scope, min_units)
    flat = {name: s.detach().double().cpu().flatten() for name, s in scores.items()}
    return {name: round_kept_up(flat[name], keep, (round_to or {}).get(name, 1)) for name, keep in masks.items()}


def _keep_highest(
    scores: Mapping[str, torch.Tensor], ratio: float, scope: Scope, min_units: int
) -> dict[str, torch.Tensor]:
    """:func:`keep_highest` before rounding."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    flat = {name: s.detach().double().cpu().flatten() for name, s in scores.items()}
    for name, s in flat.items():
        if torch.isnan(s).any():
            raise ValueError(f"The unit scores of {name!r} contain NaN; the method's scores are broken for this model.")
    protected = {name: _protected(s, min_units) for name, s in flat.items()}
    if scope == "layer":
        masks = {}
        for name, s in flat.items():
            count = min(units_to_remove(ratio, s.numel()), int((~protected[name]).sum()))
            masks[name] = _remove_lowest(s, ~protected[name], count)
        return masks
    names = list(flat)
    all_scores = torch.cat([flat[n] for n in names])
    eligible = torch.cat([~protected[n] for n in names])
    count = units_to_remove(ratio, all_scores.numel())
    if count > int(eligible.sum()):
        raise ValueError(
            f"Cannot remove {count} units at ratio {ratio} while keeping min_units={min_units} in every "
            f"layer: only {int(eligible.sum())} units are unprotected. Lower ratio or min_units."
        )
    keep = _remove_lowest(all_scores, eligible, count)
    return dict(zip(names, torch.split(keep, [flat[n].numel() for n in names])))


def most_removable(sizes: Mapping[str, int], scope: Scope = "global", min_units: int = 0) -> int:
    """The most units a ranking over layers of ``sizes`` units may remove: every unprotected
    unit (global), or a ratio just below 1 of each layer (per layer)."""
    total = sum(sizes.values())
    return total - 1 if scope == "layer" else total - sum(min(min_units, n) for n in sizes.values())


def fewest_kept(
    sizes: Mapping[str, int], scope: Scope = "global", min_units: int = 0, round_to: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Each layer's kept units when the ranking removes :func:`most_removable` units (the same
    whatever the scores)."""
    total = sum(sizes.values())
    placeholder = {name: torch.zeros(n) for name, n in sizes.items()}
    masks = keep_highest(placeholder, most_removable(sizes, scope, min_units) / total, scope, min_units, round_to)
    return {name: int(mask.sum()) for name, mask in masks.items()}


def ratio_within_budget(
    scores: Mapping[str, torch.Tensor],
    cost_of: Callable[[dict[str, int]], float],
    target: float,
    scope: Scope = "global",
    min_units: int = 0,
    round_to: Mapping[str, int] | None = None,
) -> float:
    """The smallest ratio ``k / total`` whose :func:`keep_highest` masks cost at most ``target``.

    ``cost_of`` maps kept widths (by layer) to a cost (FLOPs, parameters); it must not grow
    when units are removed, so a bisection over ``k`` finds the least removal that meets the
    budget: one unit fewer would exceed it (rounding up with ``round_to`` keeps that order). Raises ``ValueError`` when removing every removable
    unit still costs more than ``target``.
    """
    total = sum(s.numel() for s in scores.values())

    def cost(k: int) -> float:
        masks = keep_highest(scores, k / total, scope, min_units, round_to)
        return cost_of({name: int(mask.sum()) for name, mask in masks.items()})

    low, high = 0, most_removable({name: s.numel() for name, s in scores.items()}, scope, min_units)
    if cost(high) > target:
        raise ValueError(
            f"The budget {target:.6g} cannot be met: removing every removable unit still costs {cost(high):.6g}. "
            "Raise the budget (or lower min_units)."
        )
    while low < high:
        middle = (low + high) // 2
        if cost(middle) <= target:
            high = middle
        else:
            low = middle + 1
    return low / total
