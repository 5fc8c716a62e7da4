"""The one interface every pruning method implements.

A method is a small object configured by constructor arguments (validated there, with a
message naming the bad value and the accepted ones) with a single job: turn a
:class:`PruningContext` into a :class:`MaskDecision`. It decides *what* to remove; removing
it (surgery), measuring and reporting happen elsewhere, identically for every method.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from infoprune.graph import NetworkStructure

ProgressFactory = Callable[..., Any]
"""``progress(total=..., desc=...)`` returns a tqdm-like object (``update``, ``set_postfix_str``, ``close``)."""


@dataclass
class PruningContext:
    """Everything a method may look at. Methods must not modify ``model``.

    ``inputs``/``labels`` are the calibration set on the CPU (labels may be None when the
    data came without them); ``device`` is where heavy work should run; ``seed`` makes the
    method deterministic; ``progress`` creates progress bars (the one mechanism for it).
    """

    model: nn.Module
    structure: NetworkStructure
    inputs: torch.Tensor
    labels: torch.Tensor | None
    device: torch.device
    seed: int
    progress: ProgressFactory


@dataclass
class MaskDecision:
    """What a method decided: a bool mask over each pruned layer's units (True = keep).

    Layers absent from ``masks`` are kept whole. ``input_mask`` is a bool mask over the
    flattened input features, when the method selects inputs. ``details`` carries
    method-specific diagnostics (scores, test statistics) that end up in the JSON summary.
    ``model`` is set by methods that also change weights (ThiNet's rescaling, a
    re-initialisation): a modified copy of the context's model, same architecture, that the
    masks are applied to instead of the original.
    """

    masks: dict[str, torch.Tensor]
    input_mask: torch.Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None


class PruningMethod(abc.ABC):
    """Base class: subclasses set ``name`` and implement :meth:`decide`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def decide(self, context: PruningContext) -> MaskDecision:
        """Return which units to keep. Must leave ``context.model`` unchanged."""

    def config(self) -> dict[str, Any]:
        """The method's parameters, for the JSON summary (public attributes by default)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def check_fraction(name: str, value: float, *, low_open: bool = True, high_open: bool = True) -> float:
    """Validate a number in (0, 1) (ends open or closed as asked) and return it as float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.") from None
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return value


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer ≥ ``minimum`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")
    return value
