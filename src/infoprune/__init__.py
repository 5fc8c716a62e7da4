"""infoprune: structured pruning that keeps the information flowing between layers.

>>> result = infoprune.prune(model, calibration_inputs, method="mipp", confidence=0.9)
>>> result.model, result.masks, result.layers, result.collapsed
"""

from infoprune.api import prune
from infoprune.methods import available_methods, register
from infoprune.result import LayerSummary, PruningResult

__version__ = "0.1.0"

__all__ = ["LayerSummary", "PruningResult", "available_methods", "prune", "register"]
