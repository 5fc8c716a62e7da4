"""MINT (Ganesh, Corso & Yasaei Sekeh 2020): prune the connections that carry little information.

For every prunable layer l (the *parent*) and each layer l+1 that reads it (the *child*),
units are split into contiguous groups and every (child group i, parent group j) pair gets
the score ρ(i, j) = I(child group i ; parent group j | the other parent groups), the
conditional geometric MI of §III-A (:mod:`infoprune.estimators.geometric_mi`). Scores of all
pairs are pooled, a threshold δ is set (directly or as a quantile of the pooled scores), and
child group i keeps its connections from parent group j when ρ(i, j) ≥ δ (Alg. 1). The cap γ
(App. A) stops a layer pair from losing more than a fraction γ of its weights by re-deriving δ
from that pair's scores.

Two outputs:
- the paper's *connection-level* pruning: the weights of dropped parent-group→child-group
  blocks are zeroed. :func:`connection_masks` turns ``result.details`` into weight-shaped
  masks and :func:`apply_connection_masks` zeroes them in a copy of the original model;
  ``details["connections"]`` reports the fraction of weights pruned and the CSR memory
  (Table I); :func:`rethreshold` decides again from the stored scores with another δ or γ;
- the *structured* decision of the ``prune`` API: a parent unit none of whose connections
  survive (to any child group of any child) is removed, by the shared surgery. A surviving
  unit keeps all its connections there, so this model is the coarser of the two.

Our extension, the default (``conditioning="contribution"``): each pair is conditioned on the
other parents' contribution W_z z + b to child group i's pre-activation instead of on all
other parent units (:func:`other_parents_contribution`; the estimator's changes for it are in
:mod:`infoprune.estimators.geometric_mi`), and δ defaults to 2/√n1 (:func:`independence_delta`).
Reason: with hundreds of other units in Z the paper's statistic sees mostly Z — on a net with
20 dead units it keeps as many dead as live ones, and on the MNIST MLP random blocks re-train
better (``bench/mint_power.py``, ``docs/results/mint-*``). ``conditioning="others"`` is the
paper's estimator.

Activations are those of :meth:`infoprune.network.Network.record`: a parent as its child reads it,
a prunable child as *its* consumer reads it (σ(wx + b) of Eq. 5), a child that is the output
(or a layer that cannot be pruned) as its raw output; conv maps are averaged over H×W
(App. B: "the average activation across a filter's dimensions"). Samples are drawn per class
(App. B, m samples per class), and parent and child rows come from the same inputs.
"""

from infoprune.network.groups import contiguous_groups  # MINT's groups (§III-B), kept importable from here
from infoprune.methods.mint.connections import apply_connection_masks, connection_masks, connection_summary
from infoprune.methods.mint.method import MINT, GroupCount
from infoprune.methods.mint.scores import (
    Conditioning, child_channels, draw_per_class, independence_delta, other_parents_contribution,
)
from infoprune.methods.mint.selection import (
    Cap, LayerPair, check_gamma, check_threshold, keep_connections, rethreshold, threshold_pairs,
)

__all__ = [
    "MINT", "Cap", "Conditioning", "GroupCount", "LayerPair", "apply_connection_masks", "check_gamma", "check_threshold",
    "child_channels", "connection_masks", "connection_summary", "contiguous_groups", "draw_per_class",
    "independence_delta", "keep_connections", "other_parents_contribution", "rethreshold", "threshold_pairs",
]
