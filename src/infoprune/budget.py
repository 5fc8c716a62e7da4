"""FLOPs and parameter counts as exact quadratic forms in per-layer width multipliers.

A prunable layer i keeping w_i of its U_i units has width multiplier x_i = w_i / U_i. The
cost of a Linear/Conv2d module is bilinear in its input and output channel counts, so the
whole model's cost is

    cost(x) = c + Σ_i b_i x_i + Σ_ij P_ij x_i x_j,

with a linear term for a layer next to a fixed-width input or output (the first layer, the
consumer of a layer that is itself not prunable, the output layer) and a cross term x_i x_j
for a prunable layer j that reads a prunable layer i (ITPruner, Zheng et al. 2025, abstract:
"a linear programming problem with quadratic constraints").

The coefficients are *measured* on the model, not hand-written per architecture: per-module
FLOPs come from ``torch.utils.flop_counter`` (the convention of :mod:`infoprune.metrics`),
per-module parameter counts from the modules, and which normalisation parameters shrink
with a layer from torch-pruning's dependency graph. So the form matches
:func:`infoprune.metrics.count_flops` / ``count_params`` of the physically pruned model.

Channels coupled by residual adds (``structure.coupled``) have no variable: surgery leaves
them at full width, so their cost enters through the constant and linear terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from infoprune.graph import PRUNABLE_TYPES, NetworkStructure, build_dependency_graph, out_channel_pruning_fn


@dataclass(frozen=True)
class QuadraticCost:
    """cost(x) = constant + linear·x + xᵀ quadratic x over the layers ``names`` (forward order).

    ``units[i]`` is layer i's full width, so x = 1 is the unpruned model and x_i = 1/U_i
    keeps a single unit. All coefficients are non-negative, so the cost grows with every x_i.
    """

    names: tuple[str, ...]
    units: np.ndarray
    constant: float
    linear: np.ndarray
    quadratic: np.ndarray

    def __call__(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=float)
        return float(self.constant + self.linear @ x + x @ self.quadratic @ x)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.linear + (self.quadratic + self.quadratic.T) @ x

    @property
    def full(self) -> float:
        """The cost of the unpruned model (x = 1)."""
        return self(np.ones(len(self.names)))

    def at_widths(self, widths: Mapping[str, int] | np.ndarray) -> float:
        """The cost when layer i keeps ``widths[i]`` units (a dict by name or an array in order)."""
        if isinstance(widths, Mapping):
            widths = np.array([widths[name] for name in self.names], dtype=float)
        return self(np.asarray(widths, dtype=float) / self.units)


def check_target(what: str, target: float) -> float:
    """Validate a budget: a fraction of the full model's cost (0 < t ≤ 1) or an absolute count (t > 1)."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not np.isfinite(target) or target <= 0:
        raise ValueError(
            f"The {what} budget must be a positive number: a fraction of the full model's {what} "
            f"(0 < {what} ≤ 1, e.g. 0.5) or an absolute count (> 1), got {target!r}."
        )
    return float(target)


def resolve_target(cost: QuadraticCost, target: float, what: str) -> float:
    """The absolute budget meant by ``target`` (see :func:`check_target`) for this cost."""
    target = check_target(what, target)
    return target * cost.full if target <= 1 else target


def _variable_indices(structure: NetworkStructure) -> tuple[dict[str, int], dict[str, int]]:
    """For every Linear/Conv2d: the variable scaling its outputs and the one scaling its inputs."""
    output_var = {layer.name: i for i, layer in enumerate(structure.layers)}
    input_var: dict[str, int] = {}
    for i, layer in enumerate(structure.layers):
        for consumer in layer.consumers:
            if consumer.name in input_var:
                other = structure.layers[input_var[consumer.name]].name
                raise ValueError(
                    f"{consumer.name!r} reads both {other!r} and {layer.name!r} (concatenated inputs): "
                    "the width-budget model supports one prunable producer per layer."
                )
            module = consumer.module
            if isinstance(module, nn.Conv2d) and module.in_channels != layer.units:
                raise ValueError(
                    f"{consumer.name!r} has {module.in_channels} input channels but reads {layer.name!r} "
                    f"with {layer.units} units: concatenated inputs are not supported by the budget model."
                )
            input_var[consumer.name] = i
    return output_var, input_var


def _bilinear_form(
    structure: NetworkStructure, module_cost: Mapping[str, tuple[float, float]], constant: float
) -> QuadraticCost:
    """Assemble the form from each module's (cost ∝ out·in, cost ∝ out) pair plus a constant."""
    output_var, input_var = _variable_indices(structure)
    size = len(structure.layers)
    linear, quadratic = np.zeros(size), np.zeros((size, size))
    for name, (both, output_only) in module_cost.items():
        out_i, in_j = output_var.get(name), input_var.get(name)
        if out_i is not None and in_j is not None:
            quadratic[in_j, out_i] += both
        elif out_i is not None or in_j is not None:
            linear[out_i if out_i is not None else in_j] += both
        else:
            constant += both
        if out_i is not None:
            linear[out_i] += output_only
        else:
            constant += output_only
    units = np.array([layer.units for layer in structure.layers], dtype=float)
    return QuadraticCost(tuple(structure.names), units, float(constant), linear, quadratic)


@torch.no_grad()
def module_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[dict[str, int], int]:
    """FLOPs of each Linear/Conv2d module and of the whole model, for one sample.

    Measured with ``FlopCounterMode`` (the :func:`infoprune.metrics.count_flops` convention):
    each module's share is the counter's increase across its forward call.
    """
    counter = FlopCounterMode(display=False)
    per_module: dict[str, int] = {}
    started: dict[str, int] = {}

    def before(name: str):
        return lambda _m, _a: started.__setitem__(name, counter.get_total_flops())

    def after(name: str):
        def hook(_m, _a, _o) -> None:
            per_module[name] = per_module.get(name, 0) + counter.get_total_flops() - started[name]

        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            handles.append(module.register_forward_pre_hook(before(name)))
            handles.append(module.register_forward_hook(after(name)))
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return per_module, int(counter.get_total_flops())


def flops_cost(model: nn.Module, structure: NetworkStructure, example_input: torch.Tensor) -> QuadraticCost:
    """FLOPs per sample as a quadratic form in the width multipliers of ``structure.layers``.

    A convolution's or matrix product's FLOPs are proportional to (input channels) ×
    (output channels); operations outside Linear/Conv2d modules are counted as constant.
    """
    per_module, total = module_flops(model, example_input)
    return _bilinear_form(
        structure, {name: (float(flops), 0.0) for name, flops in per_module.items()}, total - sum(per_module.values())
    )


def params_cost(model: nn.Module, structure: NetworkStructure, example_input: torch.Tensor) -> QuadraticCost:
    """Parameter count as a quadratic form in the width multipliers of ``structure.layers``.

    Linear/Conv2d weights scale with (inputs × outputs), their biases with outputs; the
    per-channel parameters of other modules that shrink with a layer (its BatchNorm, found
    in torch-pruning's dependency graph) scale with that layer's multiplier.
    """
    modules = dict(model.named_modules())
    module_cost: dict[str, tuple[float, float]] = {}
    counted: set[int] = set()
    for name, module in modules.items():
        if isinstance(module, PRUNABLE_TYPES):
            bias = module.bias.numel() if module.bias is not None else 0
            module_cost[name] = (float(module.weight.numel()), float(bias))
            counted.update(id(p) for p in module.parameters(recurse=False))
    graph = build_dependency_graph(model, example_input)
    for layer in structure.layers:
        group = graph.get_pruning_group(layer.module, out_channel_pruning_fn(layer.module), [0])
        for dep, _idxs in group:
            target = dep.target.module
            own = [p for p in target.parameters(recurse=False) if id(p) not in counted]
            if isinstance(target, PRUNABLE_TYPES) or not own:
                continue
            # Per-channel parameters of a module pruned along with ``layer`` (e.g. BatchNorm):
            # they enter as an "output-only" cost of the layer's own entry.
            both, output_only = module_cost[layer.name]
            module_cost[layer.name] = (both, output_only + sum(p.numel() for p in own))
            counted.update(id(p) for p in own)
    constant = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return _bilinear_form(structure, module_cost, float(constant))


@dataclass(frozen=True)
class Budget:
    """``cost(x) ≤ target``, e.g. FLOPs at most half the full model's (``what`` names the resource)."""

    what: str
    cost: QuadraticCost
    target: float

    def slack(self, x: np.ndarray) -> float:
        """(target − cost(x)) / full cost: ≥ 0 when x meets the budget; scaled for the solver."""
        return (self.target - self.cost(x)) / self.cost.full

    def slack_gradient(self, x: np.ndarray) -> np.ndarray:
        return -self.cost.gradient(x) / self.cost.full

    def met_by_widths(self, widths: np.ndarray) -> bool:
        return self.cost.at_widths(widths) <= self.target
