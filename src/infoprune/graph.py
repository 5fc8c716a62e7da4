"""Which units of a network can be pruned, and who consumes them.

A *unit* is an output neuron of an ``nn.Linear`` or an output filter of an ``nn.Conv2d``.
A layer is *independently prunable* when removing one of its units touches nothing but that
layer, the normalisation that follows it, and the input channels of the layers that read it
(its *consumers*). Channels tied to a residual add (or any other coupling) form a group with
several producers; those layers are reported as *coupled* and left alone by default (MIPP
App. D.3.2: "skip connections in ResNets remain unaffected").

The coupling is read from torch-pruning's dependency graph, so a user's own architecture
needs no model-specific code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Consumer:
    """A layer that reads a prunable layer's units as (part of) its input."""

    name: str
    module: nn.Module


@dataclass(frozen=True)
class PrunableLayer:
    """A Linear/Conv2d layer whose output units can be removed one by one."""

    name: str
    module: nn.Module
    units: int
    consumers: tuple[Consumer, ...]

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.module, nn.Conv2d) else "linear"


@dataclass(frozen=True)
class NetworkStructure:
    """Prunable layers in forward order, plus what the pruning walk needs around them."""

    layers: tuple[PrunableLayer, ...]
    output_name: str
    coupled: tuple[str, ...] = field(default_factory=tuple)
    modules: dict[str, nn.Module] = field(default_factory=dict, compare=False, repr=False)

    def layer(self, name: str) -> PrunableLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{name!r} is not a prunable layer; prunable layers: {self.names}")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def prunable_consumers_of(self, name: str) -> list[PrunableLayer]:
        """Consumers of ``name`` that are themselves prunable (the next layers of the walk)."""
        prunable = {layer.name: layer for layer in self.layers}
        return [prunable[c.name] for c in self.layer(name).consumers if c.name in prunable]


def out_channel_pruning_fn(module: nn.Module):
    return tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model`` traced on ``example_input``."""
    return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Linear/Conv2d modules in the order a forward pass calls them."""
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda m, _i, _o: order.append(names[m]) if names[m] not in order else None)
        for module in model.modules()
        if isinstance(module, PRUNABLE_TYPES)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return order


def analyse(model: nn.Module, example_input: torch.Tensor) -> NetworkStructure:
    """Find the prunable layers of ``model`` and their consumers.

    The last Linear/Conv2d the forward pass calls is the output layer and is never pruned.
    Raises ``ValueError`` when the model has no prunable hidden layer.
    """
    was_training = model.training
    model.eval()
    try:
        order = execution_order(model, example_input)
        if len(order) < 2:
            raise ValueError(
                "The model has no prunable hidden layer: infoprune prunes the output units of "
                "nn.Linear and nn.Conv2d layers that feed another such layer, and found "
                f"{len(order)} Linear/Conv2d layer(s) in the forward pass ({order}). "
                "The output layer is never pruned."
            )
        modules = dict(model.named_modules())
        graph = build_dependency_graph(model, example_input)
        layers: list[PrunableLayer] = []
        coupled: list[str] = []
        for name in order[:-1]:
            module = modules[name]
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                coupled.append(name)
                continue
            group = graph.get_pruning_group(module, out_channel_pruning_fn(module), [0])
            producers, consumers = set(), []
            for dep, _idxs in group:
                target, handler = dep.target.module, dep.handler
                if handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels):
                    producers.add(target)
                elif handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                    consumer_name = next(n for n, m in modules.items() if m is target)
                    if all(c.name != consumer_name for c in consumers):
                        consumers.append(Consumer(consumer_name, target))
            if producers != {module} or not consumers:
                coupled.append(name)
                continue
            units = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            layers.append(PrunableLayer(name, module, units, tuple(consumers)))
        if not layers:
            raise ValueError(
                "The model has no independently prunable layer: every hidden Linear/Conv2d "
                f"({coupled}) has output channels coupled to other layers (e.g. by residual adds)."
            )
        return NetworkStructure(tuple(layers), order[-1], tuple(coupled), modules)
    finally:
        model.train(was_training)
