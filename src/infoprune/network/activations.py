"""Group activations as their consumers read them, and masking units in place.

A unit's activation is read at the *input of a consumer* (a forward pre-hook), i.e. after the
normalisation, nonlinearity, pooling, gating and concatenation between producer and consumer,
which is what the downstream layer actually receives. The consumer's input is viewed along its
feature axis (dim 1 of a conv input, the last dim of a Linear input) and gathered at the
group's positions, so a unit's map is ``(N, K)``: its spatial map, its block of flattened
features, or its channels in every conv group. A map becomes one number per sample with a
*map reduction* (MIPP App. E.2, Table 3).

Masking uses the same hooks: a pruned unit's positions are set to exactly zero at every
consumer's input, which is what physically removing the unit does to the rest of the net; a
LayerNorm inside a group normalises over the kept channels only, as the pruned one does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MapReduction = Literal["l1", "l2", "mean", "signed_mean", "std"]
MAP_REDUCTIONS: tuple[str, ...] = ("l1", "l2", "mean", "signed_mean", "std")


def reduce_maps(maps: torch.Tensor, how: MapReduction = "l1", positions: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce ``(N, C, K)`` per-unit maps to ``(N, C)`` (MIPP App. E.2, Table 3).

    l1: Σ|O|; l2: sqrt(ΣO²); mean: mean |O|; signed_mean: mean O (MINT App. B, "the average
    activation across a filter's dimensions"); std: standard deviation of |O| over positions.
    A unit with a single value per sample (a neuron, K = 1) is returned as it is, sign included.
    ``positions``: ``(N, K)`` bool, the positions that count (padded tokens, zero in ``maps``,
    do not): means and the std are over those; None: all K.
    """
    if maps.shape[2] == 1:
        return maps[:, :, 0]
    if positions is not None and how in ("mean", "signed_mean", "std"):
        real = positions.to(maps)[:, None, :]
        count = real.sum(dim=2)
        mean = (maps if how == "signed_mean" else maps.abs()).sum(dim=2) / count
        return mean if how != "std" else (((maps.abs() - mean[..., None]) * real).pow(2).sum(dim=2) / count).sqrt()
    if how == "l1":
        return maps.abs().sum(dim=2)
    if how == "l2":
        return maps.pow(2).sum(dim=2).sqrt()
    if how == "mean":
        return maps.abs().mean(dim=2)
    if how == "signed_mean":
        return maps.mean(dim=2)
    if how == "std":
        return maps.abs().std(dim=2, unbiased=False)
    raise ValueError(f"Unknown map reduction {how!r}; choose one of {', '.join(MAP_REDUCTIONS)}.")


def reduce_on_grid(
    maps: torch.Tensor, how: MapReduction = "l1", grid: int | None = 1, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce ``(N, C, K)`` square maps per cell of a ``grid`` × ``grid`` partition: ``(N, C·cells)``,
    unit c's cells in columns c·cells … (c + 1)·cells − 1, row-major (MIPP App. E.2, spatially).

    The cells are those of ``adaptive_avg_pool2d`` on the √K × √K map (adjacent cells overlap
    by a row when the grid does not divide it); each is reduced with ``how`` as
    :func:`reduce_maps` does a whole map. ``grid=1`` is :func:`reduce_maps`; ``grid=None``
    (or a grid at least the map's side) keeps every position, the map flattened (App. E.2's
    alternative). A unit with one value per sample (a neuron) stays one column.
    """
    side = math.isqrt(maps.shape[2])
    if grid == 1 or maps.shape[2] == 1:
        return reduce_maps(maps, how, positions)
    if positions is not None:
        raise ValueError("padded token sequences have no spatial grid")
    if side * side != maps.shape[2]:
        raise ValueError(f"a map of {maps.shape[2]} values per unit is not square, so it has no spatial grid")
    grid = side if grid is None else min(grid, side)
    square = maps.reshape(*maps.shape[:2], side, side)
    bounds = [(i * side // grid, -(-(i + 1) * side // grid)) for i in range(grid)]
    cells = [reduce_maps(square[:, :, r0:r1, c0:c1].flatten(2), how) for r0, r1 in bounds for c0, c1 in bounds]
    return torch.stack(cells, dim=2).flatten(1)


def feature_first(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``(N, F, rest)``: a consumer's input with its feature axis second, the rest flattened."""
    if isinstance(module, nn.Linear):
        x = x.movedim(-1, 1) if x.dim() > 2 else x
    return x.reshape(x.shape[0], x.shape[1], -1)


def gather_units(x: torch.Tensor, module: nn.Module, positions: torch.Tensor) -> torch.Tensor:
    """``(N, units, K)``: the consumer input ``x`` at a group's ``positions`` (units × P)."""
    flat = feature_first(x, module)
    picked = flat[:, positions.to(x.device).flatten()]  # (N, units·P, rest)
    return picked.reshape(x.shape[0], positions.shape[0], -1)


def mask_features(x: torch.Tensor, module: nn.Module, keep: torch.Tensor) -> torch.Tensor:
    """``x`` with the consumer-input features where ``keep`` (over F) is False set to zero."""
    keep = keep.to(x.device, x.dtype)
    if isinstance(module, nn.Linear):
        return x * keep
    return x * keep.reshape(1, -1, *([1] * (x.dim() - 2)))


def layer_norm_over(keep: torch.Tensor) -> Callable:
    """A forward hook making a LayerNorm or RMS norm normalise over the ``keep`` features only
    (zeros elsewhere): what the norm computes once the other features are pruned. A
    ``LayerNorm2d`` (torchvision's ConvNeXt, timm) normalises channels-first inputs over axis 1."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        channels_first = type(module).__name__ == "LayerNorm2d"
        x, k = args[0].movedim(1, -1) if channels_first else args[0], keep.to(args[0].device)
        weight = module.weight[k] if module.weight is not None else None
        result = torch.zeros_like(output.movedim(1, -1) if channels_first else output)
        if isinstance(module, nn.LayerNorm):
            bias = module.bias[k] if module.bias is not None else None
            result[..., k] = F.layer_norm(x[..., k], (int(k.sum()),), weight, bias, module.eps)
        elif isinstance(module, nn.RMSNorm):
            result[..., k] = F.rms_norm(x[..., k], (int(k.sum()),), weight, module.eps)
        else:  # another RMS norm (transformers' LlamaRMSNorm, …): its own forward on the kept features
            kept = copy.copy(module)
            kept._parameters = {**module._parameters, "weight": weight}
            result[..., k] = type(module).forward(kept, x[..., k])  # not through __call__: no hooks
        return result.movedim(-1, 1) if channels_first else result

    return hook


def check_finite(values: torch.Tensor, where: str) -> None:
    if not torch.isfinite(values).all():
        raise ValueError(
            f"Non-finite (NaN or inf) activations at {where}. Check the model's weights and the "
            "calibration inputs (are they normalised as in training?)."
        )
