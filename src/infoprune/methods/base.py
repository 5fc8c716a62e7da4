"""The one interface every pruning method implements.

A method is a small object configured by constructor arguments (validated there, with a
message naming the bad value and the accepted ones) with a single job: turn a
:class:`PruningContext` into a :class:`MaskDecision`. It decides *what* to remove; removing
it (surgery), measuring and reporting happen elsewhere, identically for every method. A
method that also changes weights (re-initialising, ThiNet's rescaling) says so with
:class:`WeightStep` objects in its decision, which ``prune`` applies to the pruned model
after surgery, the same way for every method.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from infoprune.network import Network
from infoprune.validation import check_count

ProgressFactory = Callable[..., Any]
"""``progress(total=..., desc=...)`` returns a tqdm-like object (``update``, ``set_postfix_str``, ``set_description``, ``close``)."""


class _SilentBar:
    """What ``progress=None`` gives: a bar that shows nothing."""

    def update(self, *_args, **_kwargs) -> None: ...
    def set_description(self, *_args, **_kwargs) -> None: ...
    def set_postfix_str(self, *_args, **_kwargs) -> None: ...
    def close(self) -> None: ...


def silent_progress(*_args, **_kwargs) -> _SilentBar:
    return _SilentBar()


@dataclass
class PruningContext:
    """Everything a method may look at. Methods must not modify ``model``.

    ``network`` is the model's structure (its prunable groups, recording, masking, cost
    forms; see :class:`infoprune.network.Network`); ``inputs``/``labels`` are the
    calibration set on the CPU (labels may be None when the data came without them);
    ``device`` is where heavy work should run; ``seed`` makes the method deterministic;
    ``progress`` creates progress bars (the one mechanism for it; None shows none).
    """

    model: nn.Module
    network: Network
    inputs: torch.Tensor
    labels: torch.Tensor | None
    device: torch.device
    seed: int
    progress: ProgressFactory | None = None

    def __post_init__(self) -> None:
        if self.progress is None:
            self.progress = silent_progress


class WeightStep(Protocol):
    """A change of weights a method asks for, applied to the pruned model after surgery."""

    def apply(self, pruned: nn.Module, network: Network, masks: dict[str, torch.Tensor]) -> None:
        """Modify ``pruned`` (the physically pruned model) in place; ``masks`` shaped it."""


@dataclass
class MaskDecision:
    """What a method decided: a bool mask over each pruned group's units (True = keep).

    Groups absent from ``masks`` are kept whole. ``input_mask`` is a bool mask over the
    flattened input features, when the method selects inputs. ``details`` carries
    method-specific diagnostics (scores, test statistics) that end up in the JSON summary.
    ``after_surgery``: weight changes to apply to the pruned model, in order.
    """

    masks: dict[str, torch.Tensor]
    input_mask: torch.Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)
    after_surgery: tuple[WeightStep, ...] = ()


@dataclass(frozen=True)
class CliOption:
    """A method parameter that ``infoprune prune`` offers as a flag of its own: ``parameter``
    becomes ``--parameter-name``, read as ``kind`` (a ``bool`` is a switch: given = True).
    Every other parameter is reachable through ``--set KEY=VALUE``."""

    parameter: str
    help: str
    kind: type = float

    @property
    def flag(self) -> str:
        return "--" + self.parameter.replace("_", "-")


@dataclass(frozen=True)
class Resumable:
    """A method that can resume an interrupted run from a state file: ``parameter`` names the
    file (``infoprune prune`` points it into ``--out``), ``holds`` says what it keeps
    (for the message of an interrupted run)."""

    parameter: str
    holds: str


class PruningMethod(abc.ABC):
    """Base class: subclasses set ``name`` and implement :meth:`decide`.

    ``cli_options``: the parameters the command line offers as flags (:class:`CliOption`);
    ``resumable``: set when the method resumes from a state file (:class:`Resumable`). The CLI
    reads both from the class, so it names no method.
    """

    name: ClassVar[str]
    cli_options: ClassVar[tuple[CliOption, ...]] = ()
    resumable: ClassVar[Resumable | None] = None

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
    """Validate an integer ≥ ``minimum`` (1 unless given) and return it (:func:`infoprune.validation.check_count`)."""
    return check_count(name, value, minimum)
