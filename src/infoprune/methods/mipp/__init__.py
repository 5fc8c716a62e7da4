"""MIPP: Mutual Information Preserving Pruning (Westphal et al.), Algorithm 1.

Walk the network from the output back to the input (§4.4). For each prunable layer, keep
the units whose activations transfer entropy to the *already pruned* downstream layer,
decided by TERC with MI ordering (Alg. 2, :mod:`infoprune.estimators.terc`):

* the last hidden layer is tested against the logits (the output layer is never pruned);
* an earlier group against the kept units of the groups its consumers produce; where that
  group is not decided yet (a residual stream read inside its own block) or kept whole, all
  its units; a consumer producing no prunable group (the output layer, a group left whole
  for a reason) through its raw output, reduced per channel;
* with ``select_inputs=True`` the input features are tested the same way against the pruned
  first layer (App. E.1).

Per-layer pruning ratios emerge from the test; every layer keeps at least one unit.
Activations are recorded once on the unpruned network (conv maps reduced over H×W by
``map_reduction``, App. E.2; L1 by default). ``spatial=g`` reduces each map per cell of a
g × g grid instead (``"flatten"``: every position, App. E.2's alternative): a filter is then a
group of g² columns that TERC keeps or removes together, and a layer tested against it sees
g² columns per kept filter (:func:`check_spatial`). The units are those of coupled channel groups
(:mod:`infoprune.network.groups`): a residual stream's channel is one feature, read where its
consumers read it. ``coupled="prune"`` (the default) tests every group, so residual streams,
depthwise convs and SE-gated channels shrink too; ``coupled="keep"`` leaves every group with
more than one producer whole, as the paper does for ResNets (App. D.3.2: "skip connections in
ResNets remain unaffected").

Beyond the paper: a FLOPs / params / units budget instead of a confidence (the confidence
is searched, :func:`search_confidence`), and a state file that makes a long run resumable
(:class:`WalkState`). Each layer's test draws from its own generator seeded by (seed,
layer), so a layer's decisions depend only on its inputs and settings, not on what ran
before it in the process.
"""

from infoprune.methods.mipp.budget import landed, search_confidence, top_up, trim_by_cost, trim_or_fill
from infoprune.methods.mipp.method import MIPP
from infoprune.methods.mipp.state import WalkState
from infoprune.methods.mipp.walk import Walk, WalkOutcome, check_spatial, input_patches

__all__ = [
    "MIPP", "Walk", "WalkOutcome", "WalkState", "check_spatial", "input_patches", "landed", "search_confidence",
    "top_up", "trim_by_cost", "trim_or_fill",
]
