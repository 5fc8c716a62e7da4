"""The one object that knows a network's structure: built once per ``prune`` call.

:class:`Network` traces the model once with torch-pruning, finds its prunable groups
(:mod:`infoprune.network.groups`) and answers everything that needs the structure:
recording and masking group activations, the FLOPs/params forms, surgery and the
connectivity check. Methods receive it as ``context.network``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from infoprune.network import costs, surgery
from infoprune.network.attention import find_head_groups
from infoprune.network.layers import is_rms_norm, replace_layers
from infoprune.network.activations import (
    MapReduction, check_finite, feature_first, gather_units, layer_norm_over, mask_features, reduce_maps, reduce_on_grid,
)
from infoprune.network.connectivity import linearised_state, path_input
from infoprune.network.groups import PRUNABLE_TYPES, Consumer, Group, dependency_graph, execution_order, find_groups
from infoprune.running import all_outputs, evaluating
from infoprune.progress import logger

Masks = Mapping[str, torch.Tensor]
READ_BYTES = 2**25
"""The most input bytes one recording batch holds (32 MiB: 55 images of 3 × 224 × 224)."""
MISMATCH = (
    "pruning its channels would change more than masking them does (an operation across channels "
    "between its producers and consumers, e.g. mean-centring or a softmax over features), or breaks "
    "the forward pass (channels reshaped into attention heads: register an adapter for the attention "
    "module with infoprune.network.register_attention)"
)


def resolve_ignore(model: nn.Module, ignore: Iterable[str | type]) -> set[str]:
    """Module names meant by ``ignore``: names of Linear/Conv modules (or of modules holding
    them) and module types, as Torch-Pruning's ``ignored_layers``."""
    modules = dict(model.named_modules())
    names: set[str] = set()
    for entry in ignore:
        if isinstance(entry, type):
            names |= {n for n, m in modules.items() if isinstance(m, entry)}
        elif isinstance(entry, str) and entry in modules:
            names |= {f"{entry}.{n}".strip(".") for n, m in modules[entry].named_modules() if isinstance(m, PRUNABLE_TYPES)}
        else:
            layers = [n for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES)]
            raise ValueError(f"ignore= names {entry!r}, which is not a module of the model nor a module type; its Linear/Conv layers: {layers}.")
    return names


class Network:
    """A model's prunable groups and everything that needs them (see the module docstring).

    ``groups``: the prunable groups in forward order; ``whole``: group name → why it stays
    whole; ``output_name``: the output layer (never pruned). transformers' ``Conv1D`` layers
    and ``nn.MultiheadAttention`` modules of ``model`` are replaced in place by modules of the
    ``nn.Linear`` layers they compute (:mod:`infoprune.network.layers`). Masks are keyed by group name,
    one bool tensor of ``group.units`` per group (True = keep); groups absent are kept whole.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: Iterable[str | type] = ()) -> None:
        self.model = model
        self.example_input = example_input
        replaced = replace_layers(model)  # Conv1D, nn.MultiheadAttention: the Linear layers they compute
        if replaced:
            logger.info("%s are analysed and pruned as the nn.Linear layers they compute (infoprune.network.layers).",
                        replaced)
        order = execution_order(model, example_input)
        if len(order) < 2:
            raise ValueError(
                "The model has no prunable hidden layer: infoprune prunes the output units of "
                "nn.Linear and nn.Conv layers that feed another such layer, and found "
                f"{len(order)} Linear/Conv layer(s) in the forward pass ({order}). "
                "The output layer is never pruned."
            )
        self.output_name = order[-1]
        self.graph = dependency_graph(model, example_input)
        ignored = resolve_ignore(model, ignore)
        heads, head_whole, claimed = find_head_groups(model, order, ignored)
        groups, self.whole = find_groups(model, self.graph, order, ignored, claimed)
        self.whole.update(head_whole)
        self.modules = dict(model.named_modules())
        self.groups: tuple[Group, ...] = tuple(sorted(groups + heads, key=lambda g: order.index(g.name)))
        for group in self._not_equal_to_masking():
            self.whole[group.name] = MISMATCH
        self.groups = tuple(g for g in self.groups if g.name not in self.whole)
        for name, reason in self.whole.items():
            logger.info("Group %r is left whole: %s.", name, reason)
        if not self.groups:
            reasons = "; ".join(f"{n}: {r}" for n, r in self.whole.items())
            raise ValueError(f"The model has no prunable group of channels ({reasons}).")

    def _not_equal_to_masking(self) -> list[Group]:
        """Groups whose physical removal does not compute what masking them computes.

        torch-pruning passes channels through every operation it does not know as if it were
        elementwise, so an operation across channels (mean-centring, a softmax over features)
        would go unnoticed. Each group is checked instead: a float64 CPU copy of the model with
        about half of every group's units masked is compared with the same copy pruned, all
        groups at once and, only if that differs, one by one. A pruned copy whose forward
        fails (a reshape into heads of an attention no adapter describes) differs too.
        """
        reference = copy.deepcopy(self.model).cpu().double()
        x = self.example_input.cpu()
        x = x.double() if x.is_floating_point() else x
        generator = torch.Generator().manual_seed(0)
        masks = {}
        for group in self.groups:
            if group.units > 1:
                keep = torch.rand(group.units, generator=generator) < 0.5
                keep[0], keep[-1] = True, False
                masks[group.name] = keep

        def equal(names: list[str]) -> bool:
            chosen = {name: masks[name] for name in names}
            with evaluating(reference):
                with self.masked(chosen, model=reference):
                    expected = all_outputs(reference(x))
                pruned = surgery.apply_masks(reference, self.groups, chosen).eval()
                try:
                    actual = all_outputs(pruned(x))
                except RuntimeError:  # e.g. a view into heads of channels pruned one by one
                    return False
            return all(a.shape == e.shape and torch.allclose(a, e, rtol=1e-7, atol=1e-9) for a, e in zip(actual, expected))

        if equal(list(masks)):
            return []
        return [g for g in self.groups if g.name in masks and not equal([g.name])]

    # --- the groups ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [group.name for group in self.groups]

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"{name!r} is not a prunable group; prunable groups: {self.names}")

    def group_of_producer(self, module_name: str) -> Group | None:
        """The prunable group whose channels ``module_name`` outputs, if any."""
        return next((g for g in self.groups if any(p.name == module_name for p in g.producers)), None)

    def full_masks(self, masks: Masks) -> dict[str, torch.Tensor]:
        """``masks`` for every group (all True where absent), bool on the CPU."""
        return {g.name: masks[g.name].to(torch.bool).cpu() if g.name in masks else torch.ones(g.units, dtype=torch.bool)
                for g in self.groups}

    def check_masks(self, masks: Masks) -> None:
        """Raise ``ValueError`` unless every mask names a prunable group and has its width."""
        for name, mask in masks.items():
            if name not in self.names:
                reason = f" (left whole: {self.whole[name]})" if name in self.whole else ""
                raise ValueError(f"The mask {name!r} names no prunable group{reason}; prunable groups: {self.names}.")
            units = self.group(name).units
            if mask.dtype != torch.bool or mask.shape != (units,):
                raise ValueError(
                    f"The mask of {name!r} must be a bool tensor of shape ({units},), got {mask.dtype} {tuple(mask.shape)}."
                )

    # --- activations -----------------------------------------------------------------------

    @contextmanager
    def masked(self, masks: Masks, input_mask: torch.Tensor | None = None, model: nn.Module | None = None) -> Iterator[None]:
        """Inside the block, units whose mask is False output exactly zero to their consumers.

        ``model`` (default: the analysed one) is any model with the same module names.
        """
        model = model if model is not None else self.model
        keep: dict[str, torch.Tensor] = {}
        for group in self.groups:
            mask = masks.get(group.name)
            if mask is None:
                continue
            for consumer in group.consumers:
                vector = keep.setdefault(consumer.name, torch.ones(consumer.features))
                vector[consumer.positions[~mask.cpu()].flatten()] = 0

        def make_hook(module: nn.Module, vector: torch.Tensor) -> Callable:
            return lambda _m, args: (mask_features(args[0], module, vector), *args[1:])

        handles = []
        for name, vector in keep.items():
            module = model.get_submodule(name)
            handles.append(module.register_forward_pre_hook(make_hook(module, vector)))
        for name, vector in self._layer_norm_keeps(masks).items():
            handles.append(model.get_submodule(name).register_forward_hook(layer_norm_over(vector)))
        if input_mask is not None:
            def input_hook(_module: nn.Module, args: tuple) -> tuple:
                x = args[0]
                return (x * input_mask.to(x.device, x.dtype).reshape(x.shape[1:]), *args[1:])

            handles.append(model.register_forward_pre_hook(input_hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _layer_norm_keeps(self, masks: Masks) -> dict[str, torch.Tensor]:
        """For each LayerNorm / RMS norm in a masked group: the features the pruned norm keeps."""
        keeps = {}
        for group in self.groups:
            if group.name in masks:
                for member in group.members:
                    if isinstance(member.module, nn.LayerNorm) or is_rms_norm(member.module):
                        keep = torch.ones(member.channels, dtype=torch.bool)
                        keep[member.positions[surgery.removed_units(masks[group.name].cpu())].flatten()] = False
                        keeps[member.name] = keep
        return keeps

    def read(
        self, inputs: torch.Tensor, on_units: Callable[[Group, torch.Tensor], None], batch_size: int = 256,
        on_output: Mapping[str, Callable[[torch.Tensor], None]] | None = None,
    ) -> None:
        """Run ``inputs`` in batches; call ``on_units(group, maps)`` with each group's ``(N, units, K)``
        maps at its first consumer's input, and ``on_output[name](output)`` for named modules.

        A batch holds at most ``batch_size`` samples and at most ``READ_BYTES`` of input (large
        images: ImageNet-sized batches of 256 would hold GiBs of activations)."""
        device = next(self.model.parameters()).device
        sample_bytes = inputs[0].numel() * inputs.element_size()
        batch_size = max(1, min(batch_size, READ_BYTES // max(1, sample_bytes)))
        with evaluating(self.model) as hooks:
            for group in self.groups:
                consumer = group.consumers[0]
                hooks.append(consumer.module.register_forward_pre_hook(
                    lambda m, args, g=group, c=consumer: on_units(g, gather_units(args[0], m, c.positions))))
            for name, callback in (on_output or {}).items():
                hooks.append(self.modules[name].register_forward_hook(lambda _m, _a, out, f=callback: f(out)))
            for start in range(0, inputs.shape[0], batch_size):
                self.model(inputs[start : start + batch_size].to(device))

    def record(
        self, inputs: torch.Tensor, map_reduction: MapReduction = "l1", batch_size: int = 256,
        extra_outputs: tuple[str, ...] = (), grid: int | None = 1,
    ) -> dict[str, torch.Tensor]:
        """Per-unit activations ``(N, units)`` of every group, reduced with ``map_reduction``.

        Also ``"__input__"`` (the flattened model input, for feature selection) and, for each
        module named in ``extra_outputs``, its output reduced per channel the same way (used
        as regression targets, e.g. the logits). ``grid`` > 1 (or None: every position)
        reduces each map per cell of a grid instead (:func:`reduce_on_grid`): a group's
        columns are then its units' cells, ``(N, units · cells)``. A group of attention heads
        has ``heads.width`` columns per unit (a head's output channels, each reduced over the
        tokens; ``grid`` does not apply): unit j's are columns j·width … (j + 1)·width − 1.
        """
        collected: dict[str, list[torch.Tensor]] = {}
        collected["__input__"] = [inputs.flatten(1)]

        def reduce(maps: torch.Tensor, where: str) -> torch.Tensor:
            try:
                return reduce_on_grid(maps, map_reduction, grid).cpu()
            except ValueError as error:
                raise ValueError(f"{where}: {error}; use spatial=1 (one value per map) for it.") from None

        def units(group: Group, maps: torch.Tensor) -> None:
            if group.heads is not None:  # a head is a feature of width columns, each reduced over the tokens
                maps = maps.reshape(maps.shape[0], group.units * group.heads.width, -1)
                collected.setdefault(group.name, []).append(reduce_maps(maps, map_reduction).cpu())
                return
            collected.setdefault(group.name, []).append(reduce(maps, f"The units of {group.name!r}"))

        def output(name: str) -> Callable[[torch.Tensor], None]:
            module = self.modules[name]
            return lambda out: collected.setdefault(name, []).append(reduce(feature_first(out, module), f"The output of {name!r}"))

        self.read(inputs, units, batch_size, {name: output(name) for name in extra_outputs})
        result = {name: torch.cat(parts).float() for name, parts in collected.items()}
        for name, values in result.items():
            check_finite(values, "the model input" if name == "__input__" else f"the units of {name!r}")
        return result

    # --- costs, surgery, connectivity ------------------------------------------------------

    def flops_cost(self) -> costs.QuadraticCost:
        """FLOPs per sample as a quadratic form in the groups' width multipliers."""
        return costs.flops_cost(self.model, self.groups, self.example_input)

    def params_cost(self) -> costs.QuadraticCost:
        """Parameter count as a quadratic form in the groups' width multipliers."""
        return costs.params_cost(self.model, self.groups)

    def apply_masks(
        self, masks: Masks, input_mask: torch.Tensor | None = None, model: nn.Module | None = None, inplace: bool = False
    ) -> nn.Module:
        """The physically pruned ``model`` (default: the analysed one; a copy unless ``inplace``)."""
        self.check_masks(masks)
        return surgery.apply_masks(model if model is not None else self.model, self.groups, masks, input_mask, inplace)

    def positions_after_surgery(self, consumer: Consumer, masks: Masks) -> torch.Tensor:
        """``consumer.positions`` renumbered as in the pruned model (−1 where removed)."""
        return surgery.renumbered_positions(self.groups, consumer, masks)

    @torch.no_grad()
    def is_disconnected(self, masks: Masks, input_mask: torch.Tensor | None = None) -> bool:
        """True when no path from the (masked) input to the output survives ``masks``
        (see :mod:`infoprune.network.connectivity`). The model is left unchanged."""
        ones = path_input(self.example_input)
        with evaluating(self.model), self.masked(masks, input_mask):
            output = functional_call(self.model, linearised_state(self.model, zero_biases=True), (ones,))
        return bool(sum(t.sum() for t in all_outputs(output)) == 0)
