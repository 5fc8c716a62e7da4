"""The re-initialised baseline (MIPP paper §5): keep another method's architecture, forget
its weights.

The MIPP paper compares against "a re-initialized baseline" on untrained networks, where
SOSP-H does not apply: the pruned architecture is trained from scratch. Through the one
entry point this is ``prune(model, data, method="reinit", source="l1", ratio=0.9)``: the
``source`` method (looked up in the registry; any name ``available_methods()`` lists) decides
the masks with ``ratio`` and ``source_options``; or ``masks={layer: keep-mask}`` gives the
architecture directly. After surgery (a :class:`ReinitialiseWeights` step of the decision),
every module's parameters are re-drawn with PyTorch's default initialisation
(``reset_parameters``) under the context's seed, *on the pruned architecture*: a Linear/Conv
layer's fan-in is that of its kept inputs, so the pruned model is initialised exactly as the
small network built from scratch would be.
Training it is the caller's job, as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from infoprune.methods import get_method, register
from infoprune.methods.base import MaskDecision, PruningContext, PruningMethod
from infoprune.network import Network


@dataclass(frozen=True)
class ReinitialiseWeights:
    """After surgery: every module's ``reset_parameters`` under ``seed``, on the CPU (so a seed
    gives the same network on every device). The pruned modules have their pruned shapes, so
    each is initialised as the small network built from scratch would be. Frozen parameters
    (the zeroed consumer weights of an emptied group) keep their values."""

    seed: int

    @torch.no_grad()
    def apply(self, pruned: nn.Module, network: Network, masks: dict[str, torch.Tensor]) -> None:
        device = next(pruned.parameters()).device
        frozen = {name: p.detach().clone() for name, p in pruned.named_parameters() if not p.requires_grad}
        pruned.cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for module in pruned.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for name, value in frozen.items():
            pruned.get_parameter(name).copy_(value)
        pruned.to(device)


@register
class Reinit(PruningMethod):
    """The architecture of ``source`` (or of explicit ``masks``) with freshly initialised weights."""

    name = "reinit"

    def __init__(
        self,
        source: str | None = None,
        ratio: float | None = None,
        source_options: dict[str, Any] | None = None,
        masks: dict[str, Any] | None = None,
    ) -> None:
        if (source is None) == (masks is None):
            raise ValueError(
                "reinit needs exactly one architecture: source='l1' (any registered method, with "
                "ratio=... and source_options={...}) or masks={layer name: keep-mask}."
            )
        if masks is not None and (ratio is not None or source_options):
            raise ValueError("reinit with explicit masks takes no ratio or source_options.")
        if source == self.name:
            raise ValueError("reinit cannot take its architecture from reinit; name another method as source.")
        self.source = source
        self.ratio = ratio
        self.source_options = dict(source_options or {})
        self._masks = None if masks is None else {name: torch.as_tensor(m, dtype=torch.bool) for name, m in masks.items()}
        self._source_method = None
        if source is not None:
            options = dict(self.source_options)
            if ratio is not None:
                options["ratio"] = ratio
            try:
                self._source_method = get_method(source)(**options)
            except TypeError as error:
                raise TypeError(f"Source method {source!r} rejects the options {options}: {error}") from error

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self._masks is not None:
            config["masks"] = {name: int(m.sum()) for name, m in self._masks.items()}
        return config

    def decide(self, context: PruningContext) -> MaskDecision:
        if self._source_method is not None:
            source = self._source_method.decide(context)
            masks, input_mask, details = source.masks, source.input_mask, {"source": source.details}
        else:
            masks, input_mask, details = self._masks, None, {}
            for name, mask in masks.items():
                units = context.network.group(name).units
                if mask.shape != (units,):
                    raise ValueError(f"The mask of {name!r} has shape {tuple(mask.shape)}; that group has {units} units.")
        return MaskDecision(masks, input_mask=input_mask, details=details,
                            after_surgery=(ReinitialiseWeights(context.seed),))
