"""SOSP-H (Nonnenmacher et al. 2022, "SOSP: Efficiently Capturing Global Correlations by
Second-Order Structured Pruning", §2): one-shot global pruning by a second-order saliency.

Removing a set M of structures perturbs the parameters by ``δθ = −P_M θ`` and changes the
loss by ``δL ≈ −gᵀ P_M θ + ½ θᵀ P_M H P_M θ`` (H: the Gauss–Newton matrix). SOSP-H replaces
the inner ``P_M θ`` — the structures pruned together with s — by ``P θ``, all structures,
which makes the saliency of structure s independent of M and of first-order cost:

    λ_s = | θᵀ P_s (½ H P θ − g) |,

i.e. the magnitude of the sum, over the weights of s, of ``θ ⊙ (½ H θ_P − g)``. Structures
with the smallest λ_s are removed, all layers ranked together, in one shot.

What is implemented: a structure is a unit of a group with all its associated weights
(incoming weights and bias in every producer, and outgoing weights with ``outgoing=True``;
see ``infoprune.methods.ranked``);
``P θ`` keeps θ on those parameters and zeroes the rest. ``H = E[Jᵀ ∇²ℓ J]`` with ℓ the
cross-entropy of the logits: per batch one forward-mode product ``J (Pθ)`` (``torch.func.jvp``),
the softmax Hessian ``diag(p) − ppᵀ`` applied to it, and one reverse-mode product
(``torch.func.vjp``) that returns ``½ H Pθ − g`` at once (the cotangent is
``½ ∇²ℓ J Pθ − ∇ℓ``). Averaged over the calibration set; needs labels. The formula above is
the one given in the project's issue; the search tool did not return the paper's §2 text,
so it has not been checked against the paper word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, jvp, vjp

from infoprune.methods import register
from infoprune.network import primary_output
from infoprune.running import differentiable_attention
from infoprune.methods.base import PruningContext, check_positive_int
from infoprune.methods.ranked import Masks, WeightScoreMethod, labelled_batches, require_labels, group_parameters


@register
@dataclass
class SOSPH(WeightScoreMethod):
    """SOSP-H: remove the units with the smallest ``|θ_sᵀ(½ H θ − g)|`` (Gauss–Newton H)."""

    name = "sosp"
    absolute = True

    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.batch_size = check_positive_int("batch_size", self.batch_size)

    def weight_scores(self, context: PruningContext, masks: Masks) -> dict[str, torch.Tensor]:
        labels = require_labels(context, self.name)
        model = context.model
        params = {name: p.detach() for name, p in model.named_parameters()}
        buffers = dict(model.named_buffers())
        in_structures = set(group_parameters(context.network, self.outgoing))
        direction = {name: p if name in in_structures else torch.zeros_like(p) for name, p in params.items()}

        def logits_of(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            with differentiable_attention():
                return primary_output(functional_call(model, (weights, buffers), (x,)))

        total = {name: torch.zeros_like(p) for name, p in params.items()}
        count = context.inputs.shape[0]
        for x, y, _ in labelled_batches(context.inputs, labels, self.batch_size, context.device):
            logits, logit_direction = jvp(lambda w: logits_of(w, x), (params,), (direction,))
            _, pullback = vjp(lambda w: logits_of(w, x), params)
            p = torch.softmax(logits, dim=1)
            curvature = p * logit_direction - p * (p * logit_direction).sum(dim=1, keepdim=True)
            loss_gradient = p - torch.nn.functional.one_hot(y, p.shape[1]).to(p.dtype)
            (half_h_theta_minus_g,) = pullback((0.5 * curvature - loss_gradient) / count)
            for name, value in half_h_theta_minus_g.items():
                total[name] += value
        return {name: (params[name] * total[name]).cpu() for name in params}
