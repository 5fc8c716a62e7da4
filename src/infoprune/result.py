"""The result every pruning method returns through :func:`infoprune.prune`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSummary:
    """Units kept out of the layer's total."""

    kept: int
    total: int

    @property
    def removed(self) -> int:
        return self.total - self.kept

    @property
    def pruning_ratio(self) -> float:
        """Fraction of the layer's units removed."""
        return self.removed / self.total

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "total": self.total, "pruning_ratio": self.pruning_ratio}


@dataclass
class PruningResult:
    """Masks, the physically smaller model and what was measured on the way.

    ``masks[name]`` is a bool tensor over the layer's output units (True = kept);
    ``model`` is a pruned *copy* (the input model is untouched); ``layers`` summarises each
    prunable layer; ``collapsed_layers`` names the layers that lost every unit;
    ``disconnected`` is True when no path from the input to the output survives (see
    ``infoprune.network.connectivity``) and is what ``collapsed`` reports: in a plain chain any emptied
    layer disconnects the network, in a residual one an emptied branch beside a live skip
    does not; ``input_mask`` is the selected input features (None unless selected);
    ``after_surgery`` the method's weight steps (re-initialisation, rescaling) that were
    applied to the pruned model, in order (see ``infoprune.methods.base.WeightStep``);
    ``compensated`` the consumers whose weights ``prune(..., compensate=True)`` re-fitted
    (:mod:`infoprune.network.compensation`).
    """

    method: str
    masks: dict[str, torch.Tensor]
    model: nn.Module
    layers: dict[str, LayerSummary]
    collapsed_layers: list[str]
    input_mask: torch.Tensor | None
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    disconnected: bool = False
    after_surgery: tuple = ()
    compensated: list[str] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        """The network collapsed: the signal can no longer get from the input to the output."""
        return self.disconnected

    @property
    def units_removed_fraction(self) -> float:
        """Fraction of all prunable units removed (the x-axis of MIPP Fig. 2)."""
        total = sum(s.total for s in self.layers.values())
        return sum(s.removed for s in self.layers.values()) / total

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no tensors except as lists)."""
        return {
            "method": self.method,
            "config": self.config,
            "layers": {name: s.as_dict() for name, s in self.layers.items()},
            "units_removed_fraction": self.units_removed_fraction,
            "collapsed": self.collapsed,
            "collapsed_layers": self.collapsed_layers,
            "disconnected": self.disconnected,
            "after_surgery": [type(step).__name__ for step in self.after_surgery],
            "compensated": self.compensated,
            "input_features_kept": None if self.input_mask is None else int(self.input_mask.sum()),
            "input_features_total": None if self.input_mask is None else int(self.input_mask.numel()),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "seconds": self.seconds,
            "details": self.details,
        }
