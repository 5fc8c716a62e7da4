"""ITPruner: per-layer widths from normalised-HSIC layer importance and a FLOPs/params budget.

Zheng et al., "An Information Theory-Inspired Strategy for Automated Network Pruning",
IJCV 2025. The steps follow the paper's abstract and the method as the authors' public
code runs it (the full text is not at hand):

1. Record every prunable layer's output, as its consumer sees it, for one batch of n inputs
   (default 100), flattened to n × d.
2. S_ij = nHSIC(layer i, layer j) (linear CKA; RBF kernel as an option), see
   :mod:`infoprune.estimators.hsic`.
3. Layer importance α_i = exp(−β s_i / Σ_k s_k) with s_i = Σ_{j≠i} S_ij: a layer that shares
   much information with the others is redundant and gets a smaller α.
4. Widths: maximise Σ_i α_i x_i subject to FLOPs(x) ≤ budget and/or params(x) ≤ budget and
   x_min ≤ x_i ≤ 1, with the costs the exact quadratic forms of :mod:`infoprune.network.costs`;
   solved with SLSQP from x = 1 with analytic gradients (the paper's "linear programming
   problem with quadratic constraints").
5. Round to integer widths (≥ 1, optionally multiples of ``round_to``), repair greedily
   until the rounded widths meet the budget again, then spend what rounding left unused.
6. Inside each layer keep the units with the largest L1 norm of their filter weights (the
   paper's choice for inherited weights; App. D finds the criterion matters little).

The unit of a width is a group (:mod:`infoprune.network.groups`): a residual stream, a depthwise
conv with its producer, a concatenation slice each get one width variable, so the budget forms
gain the cross terms of coupled layers. "Layer" above means group; groups left whole (the
output layer, LayerNorm-coupled channels, ``ignore=``) keep their cost as a constant.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from scipy.optimize import OptimizeResult, minimize

from infoprune.estimators.hsic import KERNELS, KernelName, centred_gram, nhsic_from_grams
from infoprune.methods import register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod, check_fraction, check_positive_int
from infoprune.methods.ranked import producer_rows
from infoprune.network import Budget, Group, Network, check_budgets
from infoprune.progress import logger

CriterionName = Literal["l1", "l2", "activation"]
CRITERIA: tuple[str, ...] = ("l1", "l2", "activation")


@torch.no_grad()
def layer_similarity(network: Network, inputs: torch.Tensor, kernel: KernelName = "linear") -> torch.Tensor:
    """The G × G nHSIC matrix between the prunable groups' outputs on one batch (step 2).

    Each group's output is read where its first consumer reads it and reduced to its n × n
    centred Gram matrix inside the hook, so only one group's n × d features exist at a time.
    """
    grams: dict[str, torch.Tensor] = {}

    def on_units(group: Group, maps: torch.Tensor) -> None:
        grams[group.name] = centred_gram(maps.flatten(1), kernel).cpu()

    network.read(inputs, on_units, batch_size=inputs.shape[0])
    return nhsic_from_grams([grams[name] for name in network.names])


def layer_importance(similarity: torch.Tensor, beta: float) -> np.ndarray:
    """α_i = exp(−β s_i / Σ_k s_k), s_i = Σ_{j≠i} S_ij (step 3).

    With a single layer (or no similarity at all) there is nothing to compare and α = 1.
    """
    s = (similarity.sum(dim=1) - similarity.diagonal()).double().numpy()
    total = s.sum()
    if total <= 0:
        return np.ones(len(s))
    return np.exp(-beta * s / total)


def solve_multipliers(importance: np.ndarray, budgets: list[Budget], lower: np.ndarray) -> OptimizeResult:
    """max Σ α_i x_i s.t. every budget holds and lower ≤ x ≤ 1, by SLSQP from x = 1 (step 4)."""
    weights = importance / importance.max()
    constraints = [
        {"type": "ineq", "fun": budget.slack, "jac": budget.slack_gradient} for budget in budgets
    ]
    return minimize(
        lambda x: -float(weights @ x),
        x0=np.ones(len(importance)),
        jac=lambda x: -weights,
        method="SLSQP",
        bounds=list(zip(lower, np.ones(len(lower)))),
        constraints=constraints,
        options={"maxiter": 1000, "ftol": 1e-12},
    )


def smallest_widths(units: np.ndarray, min_width: float, round_to: int) -> np.ndarray:
    """Each layer's least width: ≥ 1 unit and ≥ ``min_width`` of its units, on the ``round_to`` grid."""
    least = np.maximum(1, np.ceil(min_width * units - 1e-9))
    return np.minimum(units, round_to * np.ceil(least / round_to))


def round_widths(multipliers: np.ndarray, units: np.ndarray, lower: np.ndarray, round_to: int) -> np.ndarray:
    """Nearest multiple of ``round_to`` to x_i·U_i, kept within [lower_i, U_i]."""
    return np.clip(round_to * np.round(multipliers * units / round_to), lower, units)


def _next_width(width: float, units: float, round_to: int, up: bool) -> float:
    """The neighbouring width on the grid {multiples of ``round_to``} ∪ {units}."""
    if up:
        return min(units, width + round_to)
    return round_to * np.floor(units / round_to) if width == units and units % round_to else width - round_to


def _best_step(
    widths: np.ndarray, layers: np.ndarray, up: bool, units: np.ndarray, round_to: int,
    importance: np.ndarray, budgets: list[Budget], require_feasible: bool,
) -> np.ndarray | None:
    """The widths after the one-layer grid step with the best importance-per-cost exchange rate.

    Rate = α_i |Δx_i| / Σ_budgets |Δcost| / full cost: growing picks the highest rate,
    shrinking the lowest. ``require_feasible`` admits only steps that meet every budget.
    """
    best, best_rate = None, -np.inf if up else np.inf
    for i in layers:
        candidate = widths.copy()
        candidate[i] = _next_width(widths[i], units[i], round_to, up)
        if require_feasible and not all(b.met_by_widths(candidate) for b in budgets):
            continue
        cost_change = sum(abs(b.of_widths(candidate) - b.of_widths(widths)) / b.full for b in budgets)
        rate = importance[i] * abs(candidate[i] - widths[i]) / units[i] / max(cost_change, 1e-300)
        if (rate > best_rate) if up else (rate < best_rate):
            best, best_rate = candidate, rate
    return best


def repair_widths(
    widths: np.ndarray,
    units: np.ndarray,
    lower: np.ndarray,
    round_to: int,
    importance: np.ndarray,
    budgets: list[Budget],
) -> np.ndarray:
    """Make rounded widths meet every budget, then spend what rounding left over (step 5).

    Shrink: while a budget is exceeded, step down the layer that gives up least importance
    α_i Δx_i per unit of exceeded cost saved. Grow: while some step up still meets every
    budget, take the one buying most importance per unit of cost. Terminates, since widths
    move monotonically within [lower, units], and ``lower`` meets the budgets (checked
    beforehand).
    """
    while True:
        exceeded = [budget for budget in budgets if not budget.met_by_widths(widths)]
        if not exceeded:
            break
        widths = _best_step(widths, np.flatnonzero(widths > lower), False, units, round_to, importance, exceeded, False)
    while (grown := _best_step(widths, np.flatnonzero(widths < units), True, units, round_to, importance, budgets, True)) is not None:
        widths = grown
    return widths


def unit_scores(network: Network, inputs: torch.Tensor, criterion: CriterionName) -> dict[str, torch.Tensor]:
    """Per-unit scores, larger = keep (step 6): the L1/L2 norm of the unit's filter weights in
    all its group's producers together, or its mean L1 activation where its consumer reads it."""
    if criterion == "activation":
        activations = network.record(inputs, map_reduction="l1")  # a head: head_dim columns, summed
        return {g.name: activations[g.name].reshape(inputs.shape[0], g.units, -1).sum(dim=2).mean(dim=0) for g in network.groups}
    order = 1 if criterion == "l1" else 2
    return {
        group.name: torch.cat(
            [producer_rows(p.module.weight.detach(), p.positions).cpu() for p in group.producers], dim=1
        ).norm(p=order, dim=1)
        for group in network.groups
    }


def keep_largest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask keeping the ``count`` largest scores (ties to the lower index)."""
    order = torch.argsort(-scores, stable=True)
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[order[:count]] = True
    return mask


@register
class ITPruner(PruningMethod):
    """Layer widths from nHSIC importance under a FLOPs and/or params budget (Zheng et al. 2025).

    ``flops``/``params``: the budget, what is kept: a fraction of the full model's (0 < v ≤ 1,
    e.g. 0.5) or an absolute count (> 1); at least one is required
    (:mod:`infoprune.network.budget`). ``beta``: the temperature of α = exp(−β s / Σs) (the authors' code defaults to 1 and uses ≈ 243–246 in its scripts).
    ``samples``: calibration inputs in the one batch whose activations are compared.
    ``kernel``: ``"linear"`` (linear CKA) or ``"rbf"`` (median-distance bandwidth).
    ``min_width``: x_min, the least fraction of each layer's units kept. ``round_to``: widths
    are multiples of this (or the full width). ``criterion``: which units to keep in a layer,
    ``"l1"``/``"l2"`` norm of the filter weights or ``"activation"`` (mean L1 activation).
    """

    name = "itpruner"

    def __init__(
        self,
        flops: float | None = None,
        params: float | None = None,
        beta: float = 1.0,
        samples: int = 100,
        kernel: KernelName = "linear",
        min_width: float = 0.1,
        round_to: int = 1,
        criterion: CriterionName = "l1",
    ) -> None:
        budgets = check_budgets(self.name, ("flops", "params"), several=True, flops=flops, params=params)
        self.flops, self.params = budgets.get("flops"), budgets.get("params")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number ≥ 0, got {beta!r}.")
        self.beta = float(beta)
        self.samples = check_positive_int("samples", samples, minimum=2)
        if kernel not in KERNELS:
            raise ValueError(f"Unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
        self.kernel = kernel
        self.min_width = check_fraction("min_width", min_width, high_open=False)
        self.round_to = check_positive_int("round_to", round_to)
        if criterion not in CRITERIA:
            raise ValueError(f"Unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
        self.criterion = criterion

    def _budgets(self, network: Network) -> list[Budget]:
        return [Budget.on(network, a, getattr(self, a)) for a in ("flops", "params") if getattr(self, a) is not None]

    def decide(self, context: PruningContext) -> MaskDecision:
        network = context.network
        if context.inputs.shape[0] < self.samples:
            raise ValueError(
                f"ITPruner compares activations on samples={self.samples} calibration inputs but got "
                f"{context.inputs.shape[0]}; pass more data or set samples={context.inputs.shape[0]}."
            )
        inputs = context.inputs[: self.samples]
        budgets = self._budgets(network)
        units = budgets[0].cost.units
        lower = smallest_widths(units, self.min_width, self.round_to)
        for budget in budgets:
            budget.check_reachable(
                lower, f"with every prunable layer at its least width (min_width={self.min_width}, round_to={self.round_to}, "
                "at least one unit; groups left whole keep their cost)", "Raise the budget or lower min_width."
            )

        similarity = layer_similarity(network, inputs, self.kernel)
        importance = layer_importance(similarity, self.beta)
        start = time.perf_counter()
        solution = solve_multipliers(importance, budgets, lower / units)
        solve_seconds = time.perf_counter() - start
        if not solution.success:
            logger.warning("ITPruner: SLSQP did not converge (%s); rounding and repair still enforce the budget.", solution.message)
        widths = repair_widths(
            round_widths(solution.x, units, lower, self.round_to), units, lower, self.round_to, importance, budgets
        )

        scores = unit_scores(network, inputs, self.criterion)
        masks = {name: keep_largest(scores[name], int(w)) for name, w in zip(network.names, widths)}
        return MaskDecision(
            masks=masks,
            details={
                "nhsic": similarity.tolist(),
                "importance": dict(zip(network.names, importance.tolist())),
                "multipliers": dict(zip(network.names, solution.x.tolist())),
                "widths": dict(zip(network.names, [int(w) for w in widths])),
                "solver": {"success": bool(solution.success), "message": str(solution.message),
                           "iterations": int(solution.nit), "seconds": solve_seconds},
                "budgets": {
                    b.what: {"target": b.target, "full": b.full, "predicted": b.of_widths(widths)}
                    for b in budgets
                },
            },
        )
