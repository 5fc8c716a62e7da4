"""The one object that knows a network's structure: built once per ``prune`` call.

:class:`Network` traces the model once with torch-pruning, finds its prunable groups
(:mod:`infoprune.network.groups`) and answers everything that needs the structure:
recording and masking group activations, the FLOPs/params forms, surgery and the
connectivity check. Methods receive it as ``context.network``.
"""

from __future__ import annotations

import copy
import math
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
from infoprune.network.connectivity import linearised_state
from infoprune.network.groups import PRUNABLE_TYPES, Consumer, Group, dependency_graph, execution_order, find_groups
from infoprune.padding import real_token_positions, without_padding
from infoprune.running import all_outputs, evaluating, release_freed_memory
from infoprune.progress import logger
from infoprune.validation import ignore_entries

Masks = Mapping[str, torch.Tensor]
READ_BYTES = 2**25
"""The most input bytes one recording batch holds (32 MiB: 55 images of 3 × 224 × 224)."""
MISMATCH = (
    "pruning its channels would change more than masking them does (an operation across channels "
    "between its producers and consumers, e.g. mean-centring, a softmax, max, top-k or sort over features, "
    "or a permutation of them), or breaks the forward pass (channels reshaped into attention heads: "
    "register an adapter for the attention module with infoprune.network.register_attention)"
)


def resolve_ignore(model: nn.Module, ignore: Iterable[str | type]) -> set[str]:
    """Module names meant by ``ignore``: names of Linear/Conv modules (or of modules holding
    them), such modules themselves and module types, as Torch-Pruning's ``ignored_layers``."""
    modules = dict(model.named_modules())
    names: set[str] = set()
    for entry in ignore_entries(ignore):
        if isinstance(entry, nn.Module):  # a module instance, as Torch-Pruning's ignored_layers takes
            entry = next((n for n, m in modules.items() if m is entry), entry)
        if isinstance(entry, type):
            names |= {n for n, m in modules.items() if isinstance(m, entry)}
        elif isinstance(entry, str) and entry in modules:
            names |= {f"{entry}.{n}".strip(".") for n, m in modules[entry].named_modules() if isinstance(m, PRUNABLE_TYPES)}
        else:
            layers = [n for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES)]
            raise ValueError(f"ignore= names {entry!r}, which is not a module of the model nor a module type; its Linear/Conv layers: {layers}.")
    return names


def tied_groups(model: nn.Module, groups: Iterable[Group]) -> dict[str, str]:
    """Groups touching a parameter that another module shares (tied weights, e.g. an
    embedding and the output layer), with why they stay whole: pruning the parameter for one
    module would change it for the other."""
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name)
    shared = {name: names for names in owners.values() if len(names) > 1 for name in names}
    reasons = {}
    for group in groups:
        touched = {m.name for m in (*group.producers, *group.members)} | {c.name for c in group.consumers}
        for name, names in shared.items():
            if name.rsplit(".", 1)[0] in touched:
                others = [n for n in names if n != name]
                reasons[group.name] = (
                    f"its parameter {name!r} is tied to {others} (shared weights); untie them "
                    "(e.g. assign a cloned nn.Parameter) to prune this group"
                )
                break
    return reasons


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
        for name, reason in tied_groups(model, self.groups).items():
            self.whole.setdefault(name, reason)
        self.groups = tuple(g for g in self.groups if g.name not in self.whole)
        self.whole.update(self._not_equal_to_masking())
        self.groups = tuple(g for g in self.groups if g.name not in self.whole)
        for name, reason in self.whole.items():
            logger.info("Group %r is left whole: %s.", name, reason)
        if not self.groups:
            reasons = "; ".join(f"{n}: {r}" for n, r in self.whole.items())
            raise ValueError(
                f"The model has no prunable group of channels ({reasons}): nothing can be removed without changing "
                "what it computes. Change an operation named here if you can (e.g. call a layer as a module instead "
                "of F.linear on its weight), or ignore= fewer layers."
            )

    def _not_equal_to_masking(self) -> dict[str, str]:
        """Groups whose physical removal does not compute what masking them computes, with why.

        torch-pruning passes channels through every operation it does not know as if it were
        elementwise, so an operation across channels (mean-centring, a softmax, a max, top-k or
        sort over features, a permutation by an index buffer, a GLU, a reshape folding
        channels) would go unnoticed. Each group is checked instead: a float64 CPU copy of the
        model (float32 where the model does not run in float64) with about half of every
        group's units masked is compared with the same copy pruned, on the example input and
        random inputs like it, once with the masks and once with their complements (so that
        the unit a max or top-k picks is removed in one of the two) — all groups at once and,
        only if that differs, each half of them, down to the single groups that differ. Surgery that fails, or a pruned copy whose forward fails
        (a reshape into heads of an attention no adapter describes), counts as a difference.
        """
        reference, x, (rtol, atol) = self._reference_copy()
        generator = torch.Generator().manual_seed(0)
        masks = {}
        for group in self.groups:
            if group.units > 1:
                keep = torch.rand(group.units, generator=generator) < 0.5
                keep[0], keep[-1] = True, False
                masks[group.name] = keep
        trials = (masks, {name: ~keep for name, keep in masks.items()})
        failures: dict[str, str] = {}

        def equal(names: list[str]) -> bool:
            for trial in trials:
                chosen = {name: trial[name] for name in names}
                try:
                    with evaluating(reference):
                        with self.masked(chosen, model=reference):
                            expected = all_outputs(reference(x))
                        pruned = surgery.apply_masks(reference, self.groups, chosen).eval()
                        actual = all_outputs(pruned(x))
                except Exception as error:  # surgery or the pruned model fails: not prunable as traced
                    if len(names) == 1:
                        failures[names[0]] = f"pruning its channels fails ({type(error).__name__}: {error})"
                    return False
                same = len(actual) == len(expected) and all(
                    a.shape == e.shape and torch.allclose(a, e, rtol=rtol, atol=atol) for a, e in zip(actual, expected)
                )
                if not same:
                    return False
            return True

        def differing(names: list[str]) -> list[str]:
            """The groups among ``names`` that differ alone, found by halving the set that differs."""
            if equal(names):
                return []
            if len(names) == 1:
                return names
            return differing(names[: len(names) // 2]) + differing(names[len(names) // 2 :])

        return {name: failures.get(name, MISMATCH) for name in differing(list(masks))}

    def _reference_copy(self) -> tuple[nn.Module, torch.Tensor, tuple[float, float]]:
        """A CPU copy of the model, probe inputs for it and the tolerances ``(rtol, atol)`` of
        the masking check: in float64 where the model runs so, else in its own dtype.

        The probe inputs are the example input and, for float inputs of up to 1 000 values per
        sample, 2 random samples with its mean and spread (the complementary masks already
        remove, for every sample, the unit a max picks in one of the two trials).
        """
        x = self.example_input.cpu()
        if x.is_floating_point():
            generator = torch.Generator().manual_seed(1)
            spread = float(x.double().std()) if x.numel() > 1 else 1.0
            extra = 2 if x[0].numel() <= 1_000 else 0  # small inputs only: the cost grows with the samples
            noise = torch.randn((extra, *x.shape[1:]), generator=generator, dtype=torch.float64)
            x = torch.cat([x.double(), noise * (spread if math.isfinite(spread) and spread > 0 else 1.0) + float(x.double().mean())])
        double = copy.deepcopy(self.model).cpu().double()
        try:
            with evaluating(double):
                double(x[:1])
            return double, x, (1e-7, 1e-9)
        except Exception:  # e.g. a forward that casts to float32 itself: check in the model's own dtype
            del double
            model = copy.deepcopy(self.model).cpu()
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
            return model, x.to(dtype) if x.is_floating_point() else x, (1e-4, 1e-5)

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

        def make_hook(module: nn.Module, vector: torch.Tensor) -> Callable:
            return lambda _m, args: (mask_features(args[0], module, vector), *args[1:])

        handles = []
        for name, removed in self.removed_inputs(masks).items():
            module = model.get_submodule(name)
            handles.append(module.register_forward_pre_hook(make_hook(module, ~removed)))
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

    def removed_inputs(self, masks: Masks) -> dict[str, torch.Tensor]:
        """Per consumer that reads a removed unit: a bool vector over its input features, True
        where it reads one."""
        removed: dict[str, torch.Tensor] = {}
        for group in self.groups:
            mask = masks.get(group.name)
            if mask is None or mask.all():
                continue
            for consumer in group.consumers:
                vector = removed.setdefault(consumer.name, torch.zeros(consumer.features, dtype=torch.bool))
                vector[consumer.positions[~mask.cpu()].flatten()] = True
        return removed

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
        maps at its first consumer's input, and ``on_output[name](output)`` for named modules;
        padded token positions read as zero (:mod:`infoprune.padding`).

        A batch holds at most ``batch_size`` samples and at most ``READ_BYTES`` of input (large
        images: ImageNet-sized batches of 256 would hold GiBs of activations); on the CPU the
        heap is trimmed after each batch (:func:`infoprune.running.release_freed_memory`)."""
        device = next(self.model.parameters()).device
        sample_bytes = inputs[0].numel() * inputs.element_size()
        batch_size = max(1, min(batch_size, READ_BYTES // max(1, sample_bytes)))
        with evaluating(self.model) as hooks:
            for group in self.groups:
                consumer = group.consumers[0]
                hooks.append(consumer.module.register_forward_pre_hook(
                    lambda m, args, g=group, c=consumer: on_units(g, gather_units(without_padding(args[0], m), m, c.positions))))
            for name, callback in (on_output or {}).items():
                hooks.append(self.modules[name].register_forward_hook(lambda m, _a, out, f=callback: f(without_padding(out, m))))
            for start in range(0, inputs.shape[0], batch_size):
                self.model(inputs[start : start + batch_size].to(device))
                if device.type == "cpu":
                    release_freed_memory()  # else the freed activations stay resident, fragmented

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
                return reduce_on_grid(maps, map_reduction, grid, real_token_positions(maps.shape[2])).cpu()
            except ValueError as error:
                raise ValueError(f"{where}: {error}; use spatial=1 (one value per map) for it.") from None

        def units(group: Group, maps: torch.Tensor) -> None:
            if group.heads is not None:  # a head is a feature of width columns, each reduced over the tokens
                maps = maps.reshape(maps.shape[0], group.units * group.heads.width, -1)
                collected.setdefault(group.name, []).append(reduce_maps(maps, map_reduction, real_token_positions(maps.shape[2])).cpu())
                return
            collected.setdefault(group.name, []).append(reduce(maps, f"The units of {group.name!r}"))

        def output(name: str) -> Callable[[torch.Tensor], None]:
            module = self.modules[name]
            return lambda out: collected.setdefault(name, []).append(reduce(feature_first(out, module), f"The output of {name!r}"))

        self.read(inputs, units, batch_size, {name: output(name) for name in extra_outputs})
        # one part (the input, or a single batch) is used as it is: a copy of 4096 ImageNet inputs is 2.3 GiB
        result = {name: (parts[0] if len(parts) == 1 else torch.cat(parts)).float() for name, parts in collected.items()}
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
        (see :mod:`infoprune.network.connectivity`). The model is left unchanged.

        Float inputs are probed with all ones, integer ones (token ids) with the example
        sample itself (an embedding row is a path as any weight). Where the check cannot see a
        path even in the unpruned model (inputs centred by a constant in the model's forward),
        it does not apply and the answer is False.
        """
        if self._signal({}, None) == 0:
            return False
        return self._signal(masks, input_mask) == 0

    def _signal(self, masks: Masks, input_mask: torch.Tensor | None) -> float:
        """The output sum of the linearised masked network (0: no input→output path), in
        float64, or in float32 for a model whose forward casts to float32 itself."""
        try:
            return self._linearised_output(masks, input_mask, torch.float64)
        except RuntimeError:
            return self._linearised_output(masks, input_mask, torch.float32)

    def _linearised_output(self, masks: Masks, input_mask: torch.Tensor | None, dtype: torch.dtype) -> float:
        example = self.example_input[:1]
        probe = torch.ones_like(example, dtype=dtype) if example.is_floating_point() else example
        with evaluating(self.model), self.masked(masks, input_mask):
            output = functional_call(self.model, linearised_state(self.model, zero_biases=True, dtype=dtype), (probe,))
        return float(sum(t.double().sum() for t in all_outputs(output) if t.is_floating_point()))
