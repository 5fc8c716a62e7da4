"""FLOPs and parameter counts as exact quadratic forms in per-group width multipliers.

A group i keeping w_i of its U_i units has width multiplier x_i = w_i / U_i. The cost of a
Linear/Conv module is bilinear in its input and output channel counts; a module whose
outputs are the share o_i of group i (plus a fixed share o_0) and whose inputs are the share
s_j of group j (plus s_0: the model input, concatenated fixed channels) costs

    T (Σ_i o_i x_i + o_0)(Σ_j s_j x_j + s_0),

so the whole model's cost is ``c + Σ_i b_i x_i + Σ_ij P_ij x_i x_j`` (ITPruner, Zheng et al.
2025: "a linear programming problem with quadratic constraints"), with cross terms for every
pair of coupled groups a layer connects. A depthwise conv's input moves with its output: its
cost is linear in its group. The coefficients are *measured* on the model: per-module FLOPs
from ``torch.utils.flop_counter`` (the :mod:`infoprune.metrics` convention), parameters from
the modules, and which other parameters (BatchNorm, layer scales) shrink with a group from
the group's members. So the form matches ``count_flops`` / ``count_params`` of the
physically pruned model. Groups left whole enter through the constant. A budget on these
costs is a :class:`infoprune.network.budget.Budget`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from infoprune.network.groups import PRUNABLE_TYPES, Group
from infoprune.running import evaluating


@dataclass(frozen=True)
class QuadraticCost:
    """cost(x) = constant + linear·x + xᵀ quadratic x over the groups ``names`` (forward order).

    ``units[i]`` is group i's full width, so x = 1 is the unpruned model and x_i = 1/U_i
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
        """The cost when group i keeps ``widths[i]`` units (a dict by name or an array in order)."""
        if isinstance(widths, Mapping):
            widths = np.array([widths.get(name, units) for name, units in zip(self.names, self.units)], dtype=float)
        return self(np.asarray(widths, dtype=float) / self.units)


def _shares(groups: Sequence[Group]) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Per Conv/Linear name: {group index: share} of its output channels and of its inputs."""
    outputs: dict[str, dict[int, float]] = {}
    inputs: dict[str, dict[int, float]] = {}
    for i, group in enumerate(groups):
        for member in group.producers:
            outputs.setdefault(member.name, {})[i] = outputs.get(member.name, {}).get(i, 0.0) + member.share
        for member in group.members:
            if member in group.producers or not isinstance(member.module, PRUNABLE_TYPES):
                continue
            inputs.setdefault(member.name, {})[i] = inputs.get(member.name, {}).get(i, 0.0) + member.share
    return outputs, inputs


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1 and module.groups == module.in_channels


def bilinear_form(
    groups: Sequence[Group], module_cost: Mapping[str, tuple[float, float]], constant: float,
    modules: Mapping[str, nn.Module],
) -> QuadraticCost:
    """Assemble the form from each Conv/Linear's (cost ∝ out·in, cost ∝ out) pair plus a constant."""
    out_shares, in_shares = _shares(groups)
    size = len(groups)
    linear, quadratic = np.zeros(size), np.zeros((size, size))
    for name, (both, output_only) in module_cost.items():
        out = out_shares.get(name, {})
        ins = {} if _is_depthwise(modules[name]) else in_shares.get(name, {})
        out_fixed, in_fixed = 1.0 - sum(out.values()), 1.0 - sum(ins.values())
        for i, o in out.items():
            for j, s in ins.items():
                quadratic[j, i] += both * o * s  # row: the input's group, column: the output's
            linear[i] += both * o * in_fixed + output_only * o
        for j, s in ins.items():
            linear[j] += both * out_fixed * s
        constant += both * out_fixed * in_fixed + output_only * out_fixed
    units = np.array([group.units for group in groups], dtype=float)
    return QuadraticCost(tuple(g.name for g in groups), units, float(constant), linear, quadratic)


@torch.no_grad()
def module_flops(model: nn.Module, example_input: torch.Tensor, also: Sequence[str] = ()) -> tuple[dict[str, int], int]:
    """FLOPs of each Linear/Conv module (and of the modules named in ``also``) and of the whole
    model, for one sample.

    Measured with ``FlopCounterMode`` (the :func:`infoprune.metrics.count_flops` convention):
    each module's share is the counter's increase across its forward calls.
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

    with evaluating(model) as hooks:
        for name, module in model.named_modules():
            if isinstance(module, PRUNABLE_TYPES) or name in also:
                hooks.append(module.register_forward_pre_hook(before(name)))
                hooks.append(module.register_forward_hook(after(name)))
        with counter:
            model(example_input[:1])
    return per_module, int(counter.get_total_flops())


def flops_cost(model: nn.Module, groups: Sequence[Group], example_input: torch.Tensor) -> QuadraticCost:
    """FLOPs per sample as a quadratic form in the groups' width multipliers.

    A convolution's or matrix product's FLOPs are proportional to (input channels) ×
    (output channels); operations outside Linear/Conv modules are counted as constant, except
    an attention's products between heads (Q Kᵀ, the weighted sum of V): what its module
    costs beyond its projections is linear in its head group.
    """
    attention = {i: g.heads.modules for i, g in enumerate(groups) if g.heads is not None}
    per_module, total = module_flops(model, example_input, also=tuple(n for names in attention.values() for n in names))
    modules = dict(model.named_modules())
    inside = {}
    for i, names in attention.items():
        inside[i] = 0.0
        for name in names:
            layers = sum(f for n, f in per_module.items() if n.startswith(f"{name}.") and isinstance(modules[n], PRUNABLE_TYPES))
            inside[i] += float(per_module.pop(name, 0) - layers)
    layers = {name: (float(f), 0.0) for name, f in per_module.items()}
    form = bilinear_form(groups, layers, total - sum(per_module.values()) - sum(inside.values()), modules)
    linear = form.linear.copy()
    for i, flops in inside.items():
        linear[i] += flops
    return QuadraticCost(form.names, form.units, form.constant, linear, form.quadratic)


def params_cost(model: nn.Module, groups: Sequence[Group]) -> QuadraticCost:
    """Parameter count as a quadratic form in the groups' width multipliers.

    Linear/Conv weights scale with (inputs × outputs), their biases with outputs; the
    parameters of the other members of a group (its BatchNorms, layer scales) with its share
    of their channels.
    """
    modules = dict(model.named_modules())
    module_cost: dict[str, tuple[float, float]] = {}
    counted: set[int] = set()
    for name, module in modules.items():
        if isinstance(module, PRUNABLE_TYPES):
            bias = module.bias.numel() if module.bias is not None else 0
            module_cost[name] = (float(module.weight.numel()), float(bias))
            counted.update(id(p) for p in module.parameters(recurse=False))
    shrinking = 0.0
    linear_extra = np.zeros(len(groups))
    owned: dict[int, float] = {}
    for i, group in enumerate(groups):
        for member in group.members:
            if isinstance(member.module, PRUNABLE_TYPES):
                continue
            own = [member.module] if isinstance(member.module, nn.Parameter) else list(member.module.parameters(recurse=False))
            size = sum(p.numel() for p in own if id(p) not in counted)
            linear_extra[i] += size * member.share
            for p in own:
                owned[id(p)] = owned.get(id(p), 0.0) + member.share
    for p in model.parameters():  # the shares of partly shrinking parameters that stay fixed
        if id(p) in owned and id(p) not in counted:
            shrinking += p.numel() * (1.0 - owned[id(p)])
    constant = sum(p.numel() for p in model.parameters() if id(p) not in counted and id(p) not in owned) + shrinking
    form = bilinear_form(groups, module_cost, float(constant), modules)
    return QuadraticCost(form.names, form.units, form.constant, form.linear + linear_extra, form.quadratic)
