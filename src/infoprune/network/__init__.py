"""A network's structure for pruning: coupled channel groups, and everything built on them.

``Network(model, example_input, ignore=...)`` is built once per ``prune`` call; methods get it
as ``context.network``. See :mod:`infoprune.network.groups` for what a group is.
"""

from infoprune.network.attention import (
    AttentionAdapter, HeadLayout, PackedAttention, ProjectionAttention, register_attention,
)
from infoprune.network.activations import MAP_REDUCTIONS, MapReduction, reduce_maps
from infoprune.network.connectivity import emptied_groups, linearised_state, path_input
from infoprune.network.budget import BUDGET_ARGUMENTS, Budget, check_budgets, check_method_budget, check_target
from infoprune.network.costs import QuadraticCost
from infoprune.network.groups import PRUNABLE_TYPES, Consumer, Group, Member
from infoprune.running import evaluating, primary_output
from infoprune.network.network import Network
from infoprune.network.surgery import InputMasked

__all__ = [
    "BUDGET_ARGUMENTS", "MAP_REDUCTIONS", "AttentionAdapter", "Budget", "HeadLayout", "PackedAttention", "ProjectionAttention", "register_attention", "Consumer", "Group", "InputMasked", "MapReduction", "Member", "Network",
    "PRUNABLE_TYPES", "QuadraticCost", "check_budgets", "check_method_budget", "check_target", "emptied_groups", "evaluating", "linearised_state", "path_input",
    "primary_output", "reduce_maps",
]
