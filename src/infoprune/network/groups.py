"""Coupled channel groups: the units of structured pruning, read from torch-pruning's graph.

A *group* is a set of channels that must be removed together: a layer's output channel with
the BatchNorm after it and the input channel of every layer reading it, and, where channels
are coupled, every other layer producing the same channel (a residual stream across all its
producers, a depthwise conv with its producer, an SE gate with the channels it scales, the
slices of a concatenation). A group has ``units`` units; unit j is one channel of each
producer, or, when a grouped convolution (``groups = g``) reads or writes the channels, one
channel of each of the g blocks (ResNeXt), so that every block keeps the same width.

For each group this module records which input positions each *consumer* (a Conv/Linear
reading the channels) sees for each unit, taken from torch-pruning's index mapping (through
concatenation, splits and flattening), so masking, recording and surgery agree by
construction. A group is left whole, with the reason kept in ``Network.whole``, when its
physical removal could not equal masking it: a GroupNorm, attention or recurrent layer, a
LayerNorm over more than the group's channels or a softmax among its members, an index
mapping that is not one-to-one per unit (channel shuffles), channels that reach the model
output, or the output layer and ``ignore=``d layers among its producers. A LayerNorm over exactly a group's channels (ConvNeXt's
channels-last norm) is allowed: masking then normalises over the kept channels only, which is
what the pruned LayerNorm computes. So is an ``nn.Embedding`` producing the channels (pruned
along ``embedding_dim``): a transformer's residual stream is one group through its token and
position embeddings, every block's LayerNorms and its head. Attention heads are groups of
their own (:mod:`infoprune.network.attention`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch_pruning as tp
from torch import nn

from infoprune.network.layers import is_rms_norm, rms_norm_pruners
from infoprune.running import all_outputs, evaluating

if TYPE_CHECKING:
    from infoprune.network.attention import Heads

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d, nn.Conv1d)
NOT_CHANNELWISE = (nn.GroupNorm, nn.MultiheadAttention, nn.RNNBase)
CROSS_CHANNEL_OPS = ("Softmax", "LogSoftmax")


@dataclass(frozen=True)
class Consumer:
    """A Conv/Linear reading a group's channels: ``positions[j]`` are the indices, along its
    input feature axis (``features`` long), that carry unit j (one per channel, K per channel
    behind a flatten)."""

    name: str
    module: nn.Module
    positions: torch.Tensor
    features: int  # the length of its input feature axis


@dataclass(frozen=True)
class Member:
    """Any module (or parameter) pruned with a group; ``handler`` is torch-pruning's function
    removing its channels, ``positions[j]`` its indices of unit j."""

    name: str
    module: object
    handler: object
    positions: torch.Tensor
    channels: int
    dim: int = -1  # the pruned axis, for a bare parameter (e.g. a layer scale or position embedding)

    @property
    def share(self) -> float:
        """Fraction of the member's channels (along the pruned axis) that belong to the group."""
        return self.positions.numel() / self.channels

    @property
    def produces(self) -> bool:
        """A Conv/Linear whose *output* channels are the group's."""
        return isinstance(self.module, PRUNABLE_TYPES) and _is_out_fn(self.handler)


@dataclass(frozen=True)
class Group:
    """Channels removed together. ``name``/``module``: its first producer in forward order
    (a group of one Linear/Conv has that layer's name); ``units``: its width. ``heads``: for
    a group of attention heads (:mod:`infoprune.network.attention`), the attention module, its
    adapter and layout; None for channel groups."""

    name: str
    module: nn.Module
    units: int
    producers: tuple[Member, ...]
    consumers: tuple[Consumer, ...]
    members: tuple[Member, ...]
    heads: Heads | None = None

    @property
    def kind(self) -> str:
        if self.heads is not None:
            return "heads"
        return "linear" if isinstance(self.module, nn.Linear) else "conv"

    @property
    def features_per_unit(self) -> int:
        """Features a unit is made of: a head's output columns (``heads.width``), else 1."""
        return self.heads.width if self.heads is not None else 1

    @property
    def coupled(self) -> bool:
        """More than one layer produces these channels (residual streams, depthwise convs, SE gates)."""
        return len(self.producers) > 1


def _is_out_fn(handler) -> bool:
    """torch-pruning's function removes output channels (not input channels)."""
    return getattr(handler, "__name__", "") == "prune_out_channels"


def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Linear/Conv modules in the order a forward pass first calls them."""
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    with evaluating(model) as hooks:
        for module in model.modules():
            if isinstance(module, PRUNABLE_TYPES):
                hooks.append(module.register_forward_hook(
                    lambda m, _i, _o: order.append(names[m]) if names[m] not in order else None))
        model(example_input)
    return order


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's graph of ``model``, traced with gradients on for every parameter (frozen
    layers and ``torch.no_grad()`` callers included); outputs that are tuples/dicts are summed."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with evaluating(model, grad=True), _reshapes_checked():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False, customized_pruners=rms_norm_pruners(model),
                output_transform=lambda out: sum(t.sum() for t in all_outputs(out)),
            )
    except Exception as error:  # torch-pruning's tracer fails in its own words; say what to do
        cache = " Set model.config.use_cache = False: a key/value cache concatenates tensors the tracer cannot follow." \
            if getattr(getattr(model, "config", None), "use_cache", False) else ""
        raise ValueError(
            f"torch-pruning could not trace the model's forward pass ({type(error).__name__}: {error}). "
            "infoprune needs a model whose output is a tensor (or tuple/dict of tensors) computed "
            f"from the input with autograd-traceable operations.{cache}"
        ) from error
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _input_sizes(node) -> tuple[int, ...] | None:
    """The sizes of a reshape node's input, as autograd saved them (None if it did not)."""
    sizes = getattr(node.grad_fn, "_saved_self_sizes", None)  # older torch's name
    sizes = sizes if sizes is not None else getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    return None if sizes is None else tuple(int(s) for s in sizes)


def _flattens_maps(node, sizes: tuple[int, ...]) -> bool:
    """Every index mapping torch-pruning set on this reshape of an ``(N, C, *S)`` tensor flattens
    it into ``C·prod(S)`` features (a conv map read by a Linear layer)."""
    flatten = tp.dependency.index_mapping._FlattenIndexMapping
    return all(d.target in node.inputs and d.index_mapping[0].reverse and d.index_mapping[0]._stride == math.prod(sizes[2:])
               for d in node.dependencies if isinstance(d.index_mapping[0], flatten))


@contextmanager
def _reshapes_checked() -> Iterator[None]:
    """While the graph is built, the reshapes torch-pruning maps are only the ones it means to
    map: flattening a conv map for a Linear layer (and reshapes of 1-D tensors). Any other
    reshape (a channel shuffle's view of a 4-D tensor into 5-D and back) is retyped as passing
    its channels through, so that no index mapping is set on it, now or by later group queries.

    torch-pruning skips the other reshapes by reading ``grad_fn._saved_self_sizes``, which
    torch (2.13 and later) saves as ``_saved_self_sym_sizes``; without that check it maps
    ShuffleNetV2's channel shuffles as unflattening channels, dividing by a channel count it
    infers as 0 (the trace fails) or multiplying every index at each shuffle (the groups grow
    exponentially). Passed through, the groups across a shuffle are judged by ``Network``'s
    masking check, which leaves those that the shuffle permutes whole. The function is swapped
    on torch-pruning's module for the build only (not thread-safe).
    """
    module = tp.dependency.index_mapping
    original = module.update_reshape_index_mapping

    def update(graph: tp.DependencyGraph, node) -> None:
        sizes = _input_sizes(node)
        if sizes is None or len(sizes) == 1:
            return original(graph, node)
        try:
            original(graph, node)
            if _flattens_maps(node, sizes):
                return
        except ZeroDivisionError:
            pass
        for dep in [*node.dependencies, *(d for n in (*node.inputs, *node.outputs) for d in n.dependencies if d.target is node)]:
            dep.index_mapping[0] = tp.dependency.constants.INDEX_MAPPING_PLACEHOLDER
        node.type = tp.ops.OPTYPE.ELEMENTWISE

    module.update_reshape_index_mapping = update
    try:
        yield
    finally:
        module.update_reshape_index_mapping = original


def _positions(idxs: list[int], root_idxs: list[int], root_channels: int) -> torch.Tensor | None:
    """``(root_channels, k)``: the k indices mapped from each root channel; None if uneven."""
    per_root: list[list[int]] = [[] for _ in range(root_channels)]
    for idx, root in zip(idxs, root_idxs):
        if root is None or not 0 <= root < root_channels:
            return None
        per_root[root].append(int(idx))
    if len({len(p) for p in per_root}) != 1 or not per_root[0]:
        return None
    return torch.tensor(per_root, dtype=torch.long)


def _block(module: object, positions: torch.Tensor) -> int | str:
    """Channels per unit a grouped conv imposes (1 if none), or a reason it cannot be pruned."""
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)) or module.groups == 1:
        return 1
    if module.groups == module.in_channels == module.out_channels:
        return 1  # depthwise: in and out channels move together, one by one
    if positions.shape[1] != 1 or not torch.equal(positions[:, 0], torch.arange(positions.shape[0])):
        return f"grouped convolution {module} reads a mix of channels"
    return module.groups


def _describe(graph: tp.DependencyGraph, group, root_channels: int, names: dict):
    """(members, block) of a torch-pruning group, or a reason string if it must stay whole."""
    members: list[tuple] = []
    block = 1
    for item in group.items:
        dep, target = item.dep, item.dep.target
        module = target.module
        if target.type == tp.ops.OPTYPE.OUTPUT:
            return "its channels are part of the model's output"
        if isinstance(module, NOT_CHANNELWISE):
            return f"{names.get(module, type(module).__name__)} ({type(module).__name__}) mixes channels, so removing one changes the others"
        grad_fn = type(target.grad_fn).__name__ if target.grad_fn is not None else ""
        if any(op in grad_fn for op in CROSS_CHANNEL_OPS):
            return f"a {grad_fn.replace('Backward0', '').lower()} across its channels"
        if module not in names:
            continue  # an operation node (add, concat, reshape): nothing to prune
        positions = _positions(list(item.idxs), list(item.root_idxs), root_channels)
        if positions is None:
            return (f"{names[module]} maps its channels unevenly (a channel shuffle or reshape); for attention heads, "
                    "register an adapter with infoprune.network.register_attention")
        if isinstance(module, nn.LayerNorm) and (len(module.normalized_shape) != 1 or positions.numel() != module.normalized_shape[0]):
            return f"{names[module]} (LayerNorm) normalises over more than this group's channels"
        if is_rms_norm(module) and positions.numel() != module.weight.numel():
            return f"{names[module]} ({type(module).__name__}) normalises over more than this group's channels"
        need = _block(module, positions)
        if isinstance(need, str):
            return need
        block = math.lcm(block, need)
        count = graph.get_out_channels(target) if _is_out_fn(dep.handler) else graph.get_in_channels(target)
        members.append((names[module], module, dep.handler, positions, int(count), target.pruning_dim))
    if root_channels % block:
        return f"{root_channels} channels do not split into {block} equal convolution groups"
    return members, block


def _unit_positions(positions: torch.Tensor, block: int) -> torch.Tensor:
    """Regroup ``(C, k)`` per-channel positions into ``(C / block, block · k)`` per unit:
    unit j = channels j, j + C/block, … (the same place in every conv group)."""
    units = positions.shape[0] // block
    return positions.reshape(block, units, -1).transpose(0, 1).reshape(units, -1)


def find_groups(
    model: nn.Module, graph: tp.DependencyGraph, order: list[str], ignored: set[str], claimed: frozenset[str] = frozenset()
) -> tuple[list[Group], dict[str, str]]:
    """Every group rooted at a Conv/Linear of ``order`` (forward order), and why the others stay
    whole. Layers in ``claimed`` (the head projections of attention modules) root no group."""
    names: dict[object, str] = {m: n for n, m in model.named_modules()}
    names.update({p: n for n, p in model.named_parameters()})
    modules = dict(model.named_modules())
    groups: list[Group] = []
    whole: dict[str, str] = {}
    visited: set[str] = set(claimed)
    for root_name in order:
        if root_name in visited:
            continue
        root = modules[root_name]
        pruner = graph.get_pruner_of_module(root)
        channels = pruner.get_out_channels(root)
        try:
            tp_group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))
        except Exception as error:  # an operation torch-pruning cannot map: leave the layer whole
            whole[root_name] = f"torch-pruning cannot follow its channels ({type(error).__name__}: {error})"
            visited.add(root_name)
            continue
        producers = [names[i.dep.target.module] for i in tp_group.items
                     if i.dep.target.module in names and _is_out_fn(i.dep.handler)
                     and isinstance(i.dep.target.module, PRUNABLE_TYPES)]
        visited.update(producers)
        producers = [n for n in order if n in producers] or [root_name]
        name = producers[0]
        if name == order[-1] or order[-1] in producers:
            whole[name] = "it is (coupled to) the output layer"
            continue
        if ignored & set(producers):
            whole[name] = f"ignore= names {sorted(ignored & set(producers))}"
            continue
        described = _describe(graph, tp_group, channels, names)
        if isinstance(described, str):
            whole[name] = described
            continue
        raw, block = described
        members = tuple(Member(n, m, h, _unit_positions(p, block), c, d) for n, m, h, p, c, d in raw)
        consumers = tuple(
            Consumer(m.name, m.module, m.positions, m.channels) for m in members
            if isinstance(m.module, PRUNABLE_TYPES) and not m.produces
        )
        if not consumers:
            whole[name] = "no Linear/Conv reads its channels"
            continue
        by_name = {m.name: m for m in members if m.produces}
        ordered = tuple(by_name[n] for n in producers if n in by_name)
        groups.append(Group(name, modules[name], channels // block, ordered, consumers, members))
    return groups, whole


def contiguous_groups(width: int, groups: int) -> list[slice]:
    """Split ``width`` units into ``groups`` contiguous, balanced blocks (MINT §III-B, "Group Extension").

    Sizes differ by at most one, the larger blocks first (``width = 10, groups = 4`` gives
    3, 3, 2, 2). ``groups ≥ width`` gives one unit per group.
    """
    groups = min(groups, width)
    size, larger = divmod(width, groups)
    bounds = [0]
    for g in range(groups):
        bounds.append(bounds[-1] + size + (1 if g < larger else 0))
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
