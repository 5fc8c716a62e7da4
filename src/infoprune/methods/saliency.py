"""Pruning-at-initialisation saliencies made structured: SNIP, GraSP and SynFlow.

Each scores every weight as its paper does; :class:`~infoprune.methods.ranked.WeightScoreMethod`
sums the scores over all the weights associated with a unit (incoming and, by default,
outgoing) and ranks the units globally, as the MIPP paper does to make them structured (§5).
Scores are computed with ``torch.func.functional_call`` on detached parameter copies, so the
model is never modified.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from infoprune.methods import register
from infoprune.methods.base import PruningContext, check_positive_int
from infoprune.network import linearised_state, path_input, primary_output
from infoprune.running import all_outputs, differentiable_attention
from infoprune.methods.ranked import Masks, WeightScoreMethod, detached_parameters, labelled_batches, require_labels


def classification_loss(
    model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean cross-entropy of ``model`` with ``params`` substituted, logits divided by ``temperature``."""
    with differentiable_attention():
        logits = primary_output(functional_call(model, (params, dict(model.named_buffers())), (x,)))
    return F.cross_entropy(logits / temperature, y)


def gradients(output: torch.Tensor, leaves: list[torch.Tensor], create_graph: bool = False) -> list[torch.Tensor]:
    """``∂output/∂leaves``, zero for parameters the output does not use (an auxiliary head)."""
    grads = torch.autograd.grad(output, leaves, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]


@register
@dataclass
class SNIP(WeightScoreMethod):
    """SNIP (Lee et al. 2019, Eq. 6): connection sensitivity ``|∂L/∂w ⊙ w|`` on one mini-batch.

    ``batch_size`` calibration samples (a seeded random draw) form the mini-batch; the
    normalisation by Σ|g ⊙ w| in the paper does not change the ranking and is omitted. The
    units with the smallest summed sensitivity are removed. Needs labels.
    """

    name = "snip"

    batch_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    def weight_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        labels = require_labels(context, self.name)
        generator = torch.Generator().manual_seed(context.seed)
        pick = torch.randperm(context.inputs.shape[0], generator=generator)[: self.batch_size]
        params = detached_parameters(context.model)
        x, y = context.inputs[pick].to(context.device), labels[pick].to(context.device)
        grads = gradients(classification_loss(context.model, params, x, y), list(params.values()))
        return {name: (g * p).abs().detach().cpu() for (name, p), g in zip(params.items(), grads)}


def per_class_sample(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of up to ``per_class`` samples of every class present (seeded; GraSP's data draw)."""
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    chosen = [order[labels[order] == c][:per_class] for c in torch.unique(labels)]
    return torch.cat(chosen).sort().values


@register
@dataclass
class GraSP(WeightScoreMethod):
    """GraSP (Wang et al. 2020, Eq. 8): ``S(−w) = −w ⊙ Hg``; the *highest* scores are removed.

    ``g`` is the gradient of the loss and ``Hg`` the Hessian-gradient product (a double
    backward pass through ``∇L · g`` with ``g`` held constant), both on ``samples_per_class``
    samples of every class with the logits divided by ``temperature`` (10 and 200 in the
    authors' code). A unit's score is the sum of its weights' signed scores — the first-order
    change in gradient flow when all of them are removed together — so the sign convention
    survives the move to units: the units with the highest summed score are removed.
    Needs labels.
    """

    name = "grasp"
    removes_highest = True

    samples_per_class: int = 10
    temperature: float = 200.0
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.samples_per_class = check_positive_int("samples_per_class", self.samples_per_class)
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}.")
        self.temperature = float(self.temperature)
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    def weight_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        labels = require_labels(context, self.name)
        pick = per_class_sample(labels, self.samples_per_class, context.seed)
        inputs, labels = context.inputs[pick], labels[pick]
        params = detached_parameters(context.model)
        leaves = list(params.values())

        def batch_gradients(create_graph: bool) -> Iterator[tuple[tuple[torch.Tensor, ...], float]]:
            for x, y, share in labelled_batches(inputs, labels, self.batch_size, context.device):
                loss = classification_loss(context.model, params, x, y, self.temperature)
                yield gradients(loss, leaves, create_graph), share

        gradient = [torch.zeros_like(p) for p in leaves]
        for grads, share in batch_gradients(create_graph=False):
            for total, g in zip(gradient, grads):
                total += share * g
        hessian_gradient = [torch.zeros_like(p) for p in leaves]
        for grads, share in batch_gradients(create_graph=True):
            flow = sum((g * fixed).sum() for g, fixed in zip(grads, gradient))
            for total, hg in zip(hessian_gradient, gradients(flow, leaves)):
                total += share * hg
        return {name: (-p * hg).detach().cpu() for (name, p), hg in zip(params.items(), hessian_gradient)}


@register
@dataclass
class SynFlow(WeightScoreMethod):
    """SynFlow (Tanaka et al. 2020, Alg. 1): data-free, iterative synaptic-flow pruning.

    Every parameter is replaced by its absolute value (the authors' linearisation, BatchNorm
    statistics included, eval mode), an all-ones input is fed through the masked network,
    ``R = 1ᵀ f(1)`` and each weight scores ``(∂R/∂θ) ⊙ θ`` (non-negative, so a unit's sum is
    the L1 norm of its scores). Units are re-scored and re-ranked over ``rounds`` rounds
    whose kept fraction shrinks as ``(1 − ratio)^(k/rounds)``; pruned units stay pruned.
    Everything runs in float64: R sums products of ``|θ|`` along all input-output paths and
    overflows float32 on deep networks. Only the input *shape* of the data is used (of integer
    inputs, token ids, the first sample, as the all-ones input of an embedding).
    """

    name = "synflow"

    rounds: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rounds = check_positive_int("rounds", self.rounds)

    @property
    def rounds_to_run(self) -> int:
        return self.rounds

    def weight_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        params, buffers = linearised_state(context.model, zero_biases=False)
        params = {name: p.requires_grad_() for name, p in params.items()}
        ones = path_input(context.inputs, context.device)
        with context.network.masked(masks):
            flow = sum(t.sum() for t in all_outputs(functional_call(context.model, (params, buffers), (ones,))))
        if not torch.isfinite(flow):
            raise ValueError("SynFlow's path sum R overflowed even in float64; this network is too deep for it.")
        grads = gradients(flow, list(params.values()))
        return {name: (g * p).detach().cpu() for (name, p), g in zip(params.items(), grads)}
