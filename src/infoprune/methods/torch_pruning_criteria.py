"""Torch-Pruning's channel-importance criteria as infoprune methods (``tp-*``).

The scores come from torch-pruning's own importance classes (``torch_pruning.importance``,
version 1.6), called on torch-pruning's pruning group of each prunable group (its first producer's
output channels, with every layer coupled to them) exactly
as ``tp.pruner.MetaPruner`` calls them; only the ranking (global or per layer, by ratio or
by a FLOPs / parameter budget) is infoprune's, shared with every ranking baseline
(:class:`~infoprune.methods.ranked.RankedPruningMethod`). With torch-pruning's default
``normalizer="mean"`` a group's scores are divided by their mean before the global ranking,
as ``MetaPruner(global_pruning=True)`` does.

* ``tp-magnitude``: ``GroupMagnitudeImportance(p)``, the group L``p`` norm (p = 1 or 2);
* ``tp-taylor``: ``GroupTaylorImportance``, ``Σ |w ⊙ ∂L/∂w|`` over the group (Molchanov et al.
  2019), the gradient of the mean cross-entropy over the labelled calibration set;
* ``tp-lamp``: ``LAMPImportance`` (Lee et al. 2021), group L2 scores normalised within the layer;
* ``tp-bn-scale``: ``BNScaleImportance``, ``|γ|`` of the BatchNorm after the layer (network
  slimming, Liu et al. 2017); layers without one are kept whole, an error when none has one;
* ``tp-hessian``: ``GroupHessianImportance``, Optimal Brain Damage ``Σ w² · h`` with the
  empirical-Fisher diagonal ``h = E[(∂ℓ/∂w)²]`` over calibration samples. Deviation: the
  per-sample gradients are averaged here and handed to the class as ``.grad``, instead of
  through its ``accumulate_grad``, which in torch-pruning 1.6.1 keys its sums by parameter
  but tests membership by name, so it keeps only the last sample's squared gradient.

:func:`group_scores` is the one place that maps between torch-pruning's groups and
infoprune's groups.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.func import functional_call, grad, vmap

from infoprune.methods import register
from infoprune.methods.base import PruningContext, check_positive_int
from infoprune.methods.ranked import Masks, RankedPruningMethod, labelled_batches, require_labels
from infoprune.network import Network, primary_output
from infoprune.network.groups import Group, dependency_graph
from infoprune.progress import logger

NORMALIZERS = (None, "mean", "sum", "max", "standarization", "gaussian", "lamp")
GROUP_REDUCTIONS = ("mean", "sum", "max", "prod", "first")


def group_scores(model: nn.Module, network: Network, importance: tp.importance.Importance) -> dict[str, torch.Tensor]:
    """torch-pruning's per-unit scores of each prunable group, ``(units,)`` on the CPU.

    ``model`` must be the module whose parameters (and ``.grad``) the importance reads, with
    the same module names as the model ``network`` was found on. The importance is called on
    torch-pruning's pruning group of the group's first producer, with the producer's channels
    of every unit; a unit spanning several channels (a grouped convolution's blocks) scores
    their mean. A group the importance cannot score (BatchNorm scale, no BatchNorm after the
    layer) is left out, so it is kept whole, as torch-pruning's pruners skip it;
    ``ValueError`` when none is scored.
    """
    graph = dependency_graph(model, network.example_input)
    modules = dict(model.named_modules())
    scores = {}
    for group in network.groups:
        producer = group.producers[0]
        channels = producer.positions.flatten().tolist()
        if group.heads is not None:
            tp_group = head_pruning_group(graph, modules, group)
        else:
            tp_group = graph.get_pruning_group(modules[producer.name], producer.handler, channels)
        score = importance(tp_group)
        if score is not None:
            scores[group.name] = score.detach().float().cpu().reshape(group.units, -1).mean(dim=1)
    if not scores:
        raise ValueError(
            f"torch-pruning's {type(importance).__name__} finds nothing to score in any prunable group "
            f"(of {network.names}; e.g. no BatchNorm follows them): choose another criterion for this model."
        )
    return scores


def head_pruning_group(graph: tp.DependencyGraph, modules: dict[str, nn.Module], group: Group) -> tp.dependency.Group:
    """torch-pruning's pruning group of a group of attention heads, built from its members.

    Asking torch-pruning to follow the query rows through the attention's reshapes does not
    end on some models (Llama's rotary embedding and ``repeat_kv``: minutes for two layers).
    Root indices number the query projection's rows: row j of a unit's key or value rows
    counts as the unit's query row j, so every member adds to its unit's score.
    """
    tp_group = tp.dependency.Group()
    tp_group._DG = graph
    width = group.producers[0].positions.shape[1]
    for member in group.members:
        node = graph.module2node[modules[member.name]]
        dependency = tp.dependency.Dependency(member.handler, member.handler, node, node)
        tp_group.add_dep(dependency, member.positions.flatten().tolist())
        roots = torch.arange(group.units)[:, None] * width + torch.arange(member.positions.shape[1]) % width
        tp_group.items[-1].root_idxs = roots.flatten().tolist()
    return tp_group


def check_gradients(model: nn.Module, network: Network, method: str) -> None:
    """A clear error when no prunable layer has a non-zero gradient (every unit would score 0)."""
    grads = [model.get_submodule(p.name).weight.grad for g in network.groups for p in g.producers]
    if all(grad is None or not bool(grad.any()) for grad in grads):
        raise ValueError(
            f"Every gradient of the calibration loss at the prunable layers is 0, so {method!r} would score every "
            "unit 0. Is the output layer zero-initialised (a freshly built torchvision ViT's head is)? Train the "
            "model first, or choose a criterion that needs no gradients (tp-magnitude, l1)."
        )


@dataclass
class TorchPruningCriterion(RankedPruningMethod):
    """Rank units by a torch-pruning importance; subclasses build it in :meth:`importance`.

    ``normalizer`` and ``group_reduction`` are passed to torch-pruning (its defaults);
    ``needs_gradients`` marks criteria that read ``∂L/∂w`` of the calibration loss.
    """

    needs_gradients: ClassVar[bool] = False

    normalizer: str | None = "mean"
    group_reduction: str = "mean"
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {self.normalizer!r}.")
        if self.group_reduction not in GROUP_REDUCTIONS:
            raise ValueError(f"group_reduction must be one of {GROUP_REDUCTIONS}, got {self.group_reduction!r}.")
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    @abc.abstractmethod
    def importance(self) -> tp.importance.Importance:
        """A fresh torch-pruning importance object, configured from this method's parameters."""

    def fill_gradients(self, model: nn.Module, context: PruningContext) -> None:
        """Set ``.grad`` of ``model``'s parameters to what the importance reads."""
        labels = require_labels(context, self.name)
        model.zero_grad()
        for x, y, share in labelled_batches(context.inputs, labels, self.batch_size, context.device):
            (share * F.cross_entropy(primary_output(model(x)), y)).backward()

    def unit_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(context.model).eval().requires_grad_(True)  # gradients land on the copy, frozen layers too
        if self.needs_gradients:
            self.fill_gradients(model, context)
            check_gradients(model, context.network, self.name)
        return group_scores(model, context.network, self.importance())


@register
@dataclass
class TPMagnitude(TorchPruningCriterion):
    """``tp.importance.GroupMagnitudeImportance(p)``: the L``p`` norm over the unit's group."""

    name = "tp-magnitude"

    p: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 (group L1 norm) or 2 (group L2 norm), got {self.p!r}.")

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(
            p=self.p, group_reduction=self.group_reduction, normalizer=self.normalizer
        )


@register
@dataclass
class TPTaylor(TorchPruningCriterion):
    """``tp.importance.GroupTaylorImportance``: ``Σ |w ⊙ ∂L/∂w|``, L the mean calibration loss."""

    name = "tp-taylor"
    needs_gradients = True

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupTaylorImportance(group_reduction=self.group_reduction, normalizer=self.normalizer)


@register
@dataclass
class TPLamp(TorchPruningCriterion):
    """``tp.importance.LAMPImportance``: group L2 scores, LAMP-normalised within each layer."""

    name = "tp-lamp"

    normalizer: str | None = "lamp"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalizer != "lamp":
            raise ValueError(f"tp-lamp's normalizer is 'lamp' (that is the criterion), got {self.normalizer!r}.")

    def importance(self) -> tp.importance.Importance:
        return tp.importance.LAMPImportance(group_reduction=self.group_reduction)


@register
@dataclass
class TPBNScale(TorchPruningCriterion):
    """``tp.importance.BNScaleImportance``: ``|γ|`` of the BatchNorm after each layer."""

    name = "tp-bn-scale"

    def importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance(group_reduction=self.group_reduction, normalizer=self.normalizer)


@register
@dataclass
class TPHessian(TorchPruningCriterion):
    """``tp.importance.GroupHessianImportance`` (OBD): ``Σ w² · E[(∂ℓ/∂w)²]`` over the group."""

    name = "tp-hessian"
    needs_gradients = True

    def fill_gradients(self, model: nn.Module, context: PruningContext) -> None:
        labels = require_labels(context, self.name)
        params = {name: p.detach() for name, p in model.named_parameters()}
        buffers = dict(model.named_buffers())

        def sample_loss(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = primary_output(functional_call(model, (weights, buffers), (x.unsqueeze(0),)))
            return F.cross_entropy(logits, y.unsqueeze(0))

        batched = vmap(grad(sample_loss), in_dims=(None, 0, 0))

        def one_by_one(weights: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
            grads = [grad(sample_loss)(weights, x, y) for x, y in zip(xs, ys)]
            return {name: torch.stack([g[name] for g in grads]) for name in weights}

        per_sample = batched
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        for x, y, share in labelled_batches(context.inputs, labels, self.batch_size, context.device):
            try:
                sample_grads = per_sample(params, x, y)
            except RuntimeError as error:  # vmap cannot batch data-dependent control flow (.item(), argmax-indexing)
                if per_sample is one_by_one:
                    raise
                logger.info("tp-hessian: per-sample gradients one sample at a time (vmap cannot batch this model: %s)",
                            str(error).split(".")[0])
                per_sample = one_by_one
                sample_grads = per_sample(params, x, y)
            for name, g in sample_grads.items():
                fisher[name] += share * g.pow(2).mean(dim=0)
        for name, p in model.named_parameters():
            p.grad = fisher[name]

    def importance(self) -> tp.importance.Importance:
        return tp.importance.GroupHessianImportance(group_reduction=self.group_reduction, normalizer=self.normalizer)
