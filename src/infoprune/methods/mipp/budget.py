"""MIPP at a budget: search the confidence, then trim or fill to land on the budget (beyond the paper)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from infoprune.methods.mipp.walk import Walk, WalkOutcome
from infoprune.network import Budget

BUDGET_TOLERANCE = 0.02
"""A budget is met when the cost is at most the target and at least target − 2 % of the full cost."""
SEARCH_RANGE = (0.5, 1 - 1e-6)
"""The confidences a budget search may use (the lowest is App. D.1's x₀)."""


def landed(budget: Budget, cost: float) -> bool:
    """A walk lands on the budget: its cost is at most the target and within 2 points of the
    full cost under it (:data:`BUDGET_TOLERANCE`)."""
    return budget.target - BUDGET_TOLERANCE * budget.full <= cost <= budget.target


def search_confidence(walk: Walk, budget: Budget) -> tuple[WalkOutcome, dict[str, Any]]:
    """The MIPP pass whose cost lands within 2 points under ``budget``, and how it was found.

    The search runs on u = −log₁₀(1 − x) (x = 0.9, 0.99, 0.999 are u = 1, 2, 3) from x = 0.9.
    After each walk, the confidence it *implies* is tried next: a unit stays iff its TERC
    confidence is ≥ x, so the x at which trimming (or filling) the walk's masks by their
    confidences lands on the budget predicts the walk that will (a secant step that ignores
    how removals change later tests). The prediction is kept inside the bracket of walks over
    and under the budget, and replaced by bisection when it falls outside. After
    ``max_passes`` walks without landing, the closest one is trimmed or filled
    (:func:`trim_or_fill`).
    """
    low, high = (-math.log10(1 - x) for x in SEARCH_RANGE)
    under: tuple[float, WalkOutcome] | None = None  # the costliest pass at or under the target
    over: tuple[float, WalkOutcome] | None = None  # the cheapest pass over it
    u, trace = 1.0, []
    for _ in range(walk.method.max_passes):
        outcome = walk.run(1 - 10.0**-u, inputs=False)
        cost = budget.of_masks(outcome.masks)
        trace.append({"confidence": outcome.confidence, budget.what: cost})
        if landed(budget, cost):
            return top_up(outcome, budget) if walk.method.top_up else outcome, _search_details(budget, walk, trace, "search")
        if cost > budget.target:
            low = u
            over = (cost, outcome) if over is None or cost < over[0] else over
        else:
            high = u
            under = (cost, outcome) if under is None or cost > under[0] else under
        _masks, boundary = trim_or_fill(outcome, budget)
        step = 0.01 if cost > budget.target else -0.01  # just past the boundary unit's confidence
        guess = -math.log10(1 - min(boundary, SEARCH_RANGE[1])) + step if 0 < boundary < 1 else math.nan
        if low < guess < high and abs(guess - u) > 1e-3:
            u = guess
        elif under is not None and over is not None and high - low > 1e-3:
            u = (low + high) / 2
        elif (under is None or over is None) and low < u + (1 if over is not None else -1) < high:
            u += 1 if over is not None else -1  # no bracket yet and no usable guess: step u by 1
        else:
            break  # nothing left to try: trimming or filling lands it
    closest = min((p for p in (under, over) if p is not None), key=lambda p: abs(p[0] - budget.target))
    start = closest[1]
    if walk.method.trim == "cost" and closest is over:
        start = replace(start, masks=trim_by_cost(start, budget))
    masks, _boundary = trim_or_fill(start, budget)
    finish = "trim" if closest is over else "fill"
    outcome = replace(closest[1], masks=masks)
    return top_up(outcome, budget) if walk.method.top_up else outcome, _search_details(budget, walk, trace, finish)


def _search_details(budget: Budget, walk: Walk, trace: list[dict], finish: str) -> dict[str, Any]:
    return {
        "budget": {"what": budget.what, "target": budget.target, "full": budget.full},
        "passes": walk.passes,
        "search": trace,
        "finish": finish,
    }


def trim_or_fill(outcome: WalkOutcome, budget: Budget) -> tuple[dict[str, torch.Tensor], float]:
    """Land ``outcome``'s masks within the budget by MIPP's confidences; returns the masks and
    the confidence of the last unit changed (nan when none was).

    Over budget: remove kept units, least sure first (lowest ``confidence_worse``; a unit
    kept untested, a layer's last, counts as sure), never a layer's last unit. Under by
    more than 2 points: add back removed units, most sure first, while the cost stays at
    or under the target. Approximation: layers upstream of a changed layer were tested
    against its pass's masks, not the trimmed ones.
    """
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    scores = _unit_scores(outcome)
    cost, boundary = budget.of_masks(masks), math.nan
    if cost > budget.target:
        for score, name, unit in sorted(s for s in scores if masks[s[1]][s[2]]):
            if cost <= budget.target:
                break
            if masks[name].sum() > 1:
                masks[name][unit] = False
                cost, boundary = budget.of_masks(masks), score
    for score, name, unit in sorted((s for s in scores if not masks[s[1]][s[2]]), reverse=True):
        if landed(budget, cost):
            break
        masks[name][unit] = True
        trial = budget.of_masks(masks)
        if trial > budget.target:
            masks[name][unit] = False
        else:
            cost, boundary = trial, score
    return masks, boundary


def _unit_scores(outcome: WalkOutcome) -> list[tuple[float, str, int]]:
    """(TERC confidence, group, unit) of every unit of ``outcome``'s masks; an untested unit
    counts as sure (inf) when kept (a layer's last) and as −inf when removed (constant)."""
    scores = []
    for name, record in outcome.details.items():
        if name not in outcome.masks:
            continue
        mask, tested = outcome.masks[name], {int(k): v for k, v in record["confidence_worse"].items()}
        scores += [(tested.get(unit, math.inf if mask[unit] else -math.inf), name, unit) for unit in range(len(mask))]
    return scores


def top_up(outcome: WalkOutcome, budget: Budget) -> WalkOutcome:
    """``outcome`` with removed units added back, most sure first, each one that keeps the cost
    at or under the target (beyond the paper: the budget's room, up to 2 points, is spent on
    the units it can still pay for, mostly cheap dense-layer units at a FLOPs budget)."""
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    removed = (s for s in _unit_scores(outcome) if not masks[s[1]][s[2]] and s[0] > -math.inf)  # never a constant unit
    for _score, name, unit in sorted(removed, reverse=True):
        masks[name][unit] = True
        if budget.of_masks(masks) > budget.target:
            masks[name][unit] = False
    return replace(outcome, masks=masks)


def trim_by_cost(outcome: WalkOutcome, budget: Budget) -> dict[str, torch.Tensor]:
    """``outcome``'s masks trimmed to the budget, removing first the kept unit with the least
    evidence per cost saved (a greedy knapsack; beyond the paper).

    A unit's evidence is its TERC confidence in nines, −log₁₀(1 − c); the saving is what
    removing one unit of its group saves at the current widths (recomputed after each
    removal). Confidence alone (:func:`trim_or_fill`) removes the least sure units, which at
    a FLOPs budget are mostly dense-layer units that save little each, so it empties the
    dense layers to pay for a conv filter; this removes the filter. Never a group's last unit.
    """
    masks = {name: mask.clone() for name, mask in outcome.masks.items()}
    nines = {(name, unit): -math.log10(max(1.0 - score, 1e-12)) for score, name, unit in _unit_scores(outcome)}
    while budget.of_masks(masks) > budget.target:
        cost, choice = budget.of_masks(masks), None
        for name, mask in masks.items():
            if mask.sum() <= 1:
                continue
            unit = min(mask.nonzero().flatten().tolist(), key=lambda u: nines[(name, u)])
            mask[unit] = False
            saving = cost - budget.of_masks(masks)
            mask[unit] = True
            ratio = nines[(name, unit)] / saving if saving > 0 else math.inf
            choice = (ratio, name, unit) if choice is None or ratio < choice[0] else choice
        if choice is None or choice[0] == math.inf:
            break
        masks[choice[1]][choice[2]] = False
    return masks
