"""Budgets: how small the pruned model must be, one type and one validation for every method.

The convention: a budget bounds what is *kept*. ``flops=f`` / ``params=f``: the pruned model's
FLOPs / parameters are at most f × the full model's (a fraction 0 < f ≤ 1) or at most f (an
absolute count > 1). A *units* budget keeps at most a fraction of the counted groups' units.
The one argument named the other way is ``ratio=r``, the literature's pruning ratio: the
fraction of prunable units *removed*, which is a units budget keeping 1 − r
(:meth:`Budget.on`). Costs are the exact forms of :mod:`infoprune.network.costs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from infoprune.network.costs import QuadraticCost
from infoprune.network.groups import Group

if TYPE_CHECKING:
    import torch

    from infoprune.network.network import Network

BUDGET_ARGUMENTS = ("flops", "params", "ratio")
"""The method arguments that set a budget (a call giving one asks for a size, not a criterion)."""

RESOURCES = {"flops": "FLOPs", "params": "params", "ratio": "units"}
"""The resource each budget argument bounds, as messages and details name it."""


def check_target(argument: str, target: float) -> float:
    """Validate a ``flops=`` / ``params=`` value: a fraction of the full model's cost (0 < t ≤ 1)
    or an absolute count (t > 1); the one place these values are checked. ``argument`` is
    ``"flops"`` or ``"params"`` (``"FLOPs"`` is read as ``"flops"``)."""
    argument = argument.lower()
    what = RESOURCES[argument]
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not np.isfinite(target) or target <= 0:
        raise ValueError(
            f"The {what} budget must be a positive number: {argument}= is a fraction of the full model's {what} "
            f"(0 < {argument} ≤ 1, e.g. 0.5) or an absolute count (> 1), got {target!r}."
        )
    return float(target)


def check_ratio(ratio: float, allow_zero: bool) -> float:
    """Validate ``ratio=``, the fraction of units removed: in [0, 1) or, without ``allow_zero``, (0, 1)."""
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"ratio must be a number in {interval}, got {ratio!r}.") from None
    if not ((value >= 0 if allow_zero else value > 0) and value < 1):
        raise ValueError(f"ratio must lie in {interval}, got {value}.")
    return value


def _choices(accepted: Sequence[str], several: bool, allow_zero: bool) -> str:
    described = {
        "ratio": f"ratio= (the fraction of prunable units removed, in {'[0, 1)' if allow_zero else '(0, 1)'})",
        "flops": "flops= (the FLOPs kept: a fraction of the full model's, e.g. 0.5, or an absolute count)",
        "params": "params= (the parameters kept, likewise)",
    }
    return (" and/or " if several else " or ").join(described[argument] for argument in accepted)


def check_budgets(
    method: str,
    accepted: Sequence[str],
    *,
    several: bool = False,
    required: bool = True,
    allow_zero_ratio: bool = False,
    **given: float | None,
) -> dict[str, float]:
    """The budget arguments a method was given (``given``: those of ``accepted`` not None),
    validated: at least one when ``required``, at most one unless ``several``; ``flops`` and
    ``params`` by :func:`check_target`, ``ratio`` by :func:`check_ratio`. Returns them, in the
    order of ``accepted``."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"Method {method!r} takes no budget {unknown}; its budgets are {list(accepted)}.")
    chosen = [argument for argument in accepted if given.get(argument) is not None]
    if required and not chosen:
        raise ValueError(
            f"Method {method!r} needs a budget: pass {_choices(accepted, several, allow_zero_ratio)}; got none."
        )
    if len(chosen) > 1 and not several:
        raise ValueError(
            f"Method {method!r} takes one budget, got {chosen}; pass only one of {', '.join(a + '=' for a in accepted)}."
        )
    return {
        argument: check_ratio(given[argument], allow_zero_ratio) if argument == "ratio" else check_target(argument, given[argument])
        for argument in chosen
    }


def check_method_budget(method: object, accepted: Sequence[str] = ("ratio", "flops", "params")) -> str:
    """Validate a method object's budget attributes (those of ``accepted``; exactly one set, a
    ratio in [0, 1)) in place with :func:`check_budgets`; returns the one given."""
    checked = check_budgets(
        method.name, accepted, allow_zero_ratio=True, **{argument: getattr(method, argument) for argument in accepted}
    )
    for argument, value in checked.items():
        setattr(method, argument, value)
    return next(iter(checked))


def unit_count(groups: Sequence[Group]) -> QuadraticCost:
    """The number of kept units of ``groups`` as a cost form (linear: group i counts x_i · U_i)."""
    units = np.array([group.units for group in groups], dtype=float)
    return QuadraticCost(tuple(g.name for g in groups), units, 0.0, units.copy(), np.zeros((len(units), len(units))))


@dataclass(frozen=True)
class Budget:
    """``cost(x) ≤ target``: the pruned model's ``what`` (FLOPs, params or units) at most
    ``target``, an absolute amount; ``cost`` is its exact form in the groups' widths."""

    what: str
    cost: QuadraticCost
    target: float

    @classmethod
    def on(cls, network: Network, argument: str, value: float, groups: Sequence[Group] | None = None) -> Budget:
        """The budget a validated ``flops=`` / ``params=`` / ``ratio=`` value (:func:`check_budgets`)
        sets on ``network``. ``ratio`` counts the units of ``groups`` (default: every prunable
        group) and keeps 1 − ratio of them."""
        if argument == "ratio":
            cost = unit_count(network.groups if groups is None else groups)
            return cls(RESOURCES[argument], cost, (1 - value) * cost.full)
        cost = network.flops_cost() if argument == "flops" else network.params_cost()
        return cls(RESOURCES[argument], cost, value * cost.full if value <= 1 else value)

    @property
    def full(self) -> float:
        """The unpruned model's cost."""
        return self.cost.full

    def of_widths(self, widths: Mapping[str, int] | np.ndarray) -> float:
        """The cost at kept ``widths`` (by group name, others whole; or an array in the form's
        order) as the physically pruned model has it: an emptied group still costs one unit
        (surgery keeps one, :mod:`infoprune.network.surgery`)."""
        if isinstance(widths, Mapping):
            return self.cost.at_widths({name: max(int(width), 1) for name, width in widths.items()})
        return self.cost.at_widths(np.maximum(np.asarray(widths, dtype=float), 1.0))

    def of_masks(self, masks: Mapping[str, torch.Tensor]) -> float:
        """The cost of keep-masks (bool tensors by group name; groups not given stay whole)."""
        return self.of_widths({name: int(mask.sum()) for name, mask in masks.items()})

    def met_by_widths(self, widths: Mapping[str, int] | np.ndarray) -> bool:
        """Whether kept ``widths`` (as :meth:`of_widths` takes them) meet the budget."""
        return self.of_widths(widths) <= self.target

    def slack(self, x: np.ndarray) -> float:
        """(target − cost(x)) / full cost: ≥ 0 when width multipliers x meet the budget; scaled for a solver."""
        return (self.target - self.cost(x)) / self.full

    def slack_gradient(self, x: np.ndarray) -> np.ndarray:
        """The gradient of :meth:`slack` in x."""
        return -self.cost.gradient(x) / self.full

    def check_reachable(self, least: Mapping[str, int] | np.ndarray, how: str, fix: str = "Raise the budget.") -> None:
        """Refuse a budget below the cost of the ``least`` widths a method can reach (``how``
        says what they are), naming the smallest reachable cost and ``fix``."""
        smallest = self.of_widths(least)
        if self.target < smallest:
            raise ValueError(
                f"The {self.what} budget {self.target:,.0f} ({self.target / self.full:.1%} of the full model's "
                f"{self.full:,.0f}) cannot be met: the smallest reachable is {smallest:,.0f} {self.what} "
                f"({smallest / self.full:.1%}), {how}. {fix}"
            )
