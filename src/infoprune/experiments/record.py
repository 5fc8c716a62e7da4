"""The typed record of a pruning run, shared by the pipeline, the sweep, the report and the
characterisation.

:func:`infoprune.experiments.pipeline.run` returns a :class:`RunRecord` (``infoprune prune``
writes it as ``summary.json``); the sweep adds which cell of its grid the run was
(:class:`SweepRecord`) and stores it, or a :class:`FailedRun`, as JSON in its results file.
``to_json`` and ``from_json`` convert both ways; records written by earlier versions, which
lack the fields added since (the BatchNorm regime, the per-epoch accuracies, the CPU-timed
cost), read with those fields None or empty.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

JSON = dict[str, Any]
T = TypeVar("T", bound="RunRecord")
ACCURACIES = ("accuracy_original", "accuracy_pruned", "accuracy_retrained", "accuracy_bn_recalibrated")


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy (a fraction) on the test split and, where measured, the training split."""

    test: float
    train: float | None = None


@dataclass(frozen=True)
class Level:
    """Which level of its method entry a sweep run is: the ``index`` in the entry's levels, the
    method parameter that varies (``param``, None for a single run) and its ``value``;
    ``matches`` is the id of the run whose pruning it matched (None if not matched)."""

    index: int
    param: str | None
    value: Any
    matches: str | None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What one run measured (see :func:`infoprune.experiments.pipeline.run`).

    ``config`` is the run's :class:`~infoprune.experiments.pipeline.RunConfig` as a dict (kept
    as written, so a record from another machine reads without its data folder or device);
    ``pruning`` is :meth:`infoprune.result.PruningResult.summary`; ``latency`` is
    :func:`infoprune.metrics.latency_profiles` of the original and the pruned model;
    ``prune_epochs`` is the pruning step's CPU seconds over those of one training epoch of the
    unpruned model (None without re-training, and for records timed before CPU seconds were).
    """

    config: JSON
    device: str
    num_classes: int
    input_shape: list[int]
    accuracy_original: Accuracy
    accuracy_pruned: Accuracy
    accuracy_retrained: Accuracy
    accuracy_bn_recalibrated: Accuracy | None = None
    accuracy_by_epoch: list[float] = field(default_factory=list)
    prune_seconds: float
    prune_cpu_seconds: float | None = None
    epoch_seconds: float | None = None
    epoch_cpu_seconds: float | None = None
    prune_epochs: float | None = None
    latency: JSON | None = None
    pruning: JSON
    chance_accuracy: float
    collapsed: bool
    characterisation: JSON | None = None

    def kept_fraction(self, what: str) -> float:
        """The fraction of the unpruned model's ``"flops"`` or ``"params"`` the pruned one keeps."""
        return self.pruning[f"{what}_after"] / self.pruning[f"{what}_before"]

    @property
    def units_removed_fraction(self) -> float:
        return self.pruning["units_removed_fraction"]

    def to_json(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_json(cls: type[T], data: JSON) -> T:
        """The record written by :meth:`to_json` (or by an earlier version); a ValueError naming
        the missing fields otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"a run record is a JSON object, not {type(data).__name__}")
        names = {f.name: f for f in fields(cls)}
        required = [name for name, f in names.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"the run record lacks {', '.join(missing)}")
        values = {name: data[name] for name in names if name in data}
        if "epoch_cpu_seconds" not in data:  # timed in wall seconds then: not the ratio named here
            values["prune_epochs"] = None
        for name in ACCURACIES:
            if values.get(name) is not None:
                values[name] = Accuracy(**values[name])
        if "level" in values:
            values["level"] = Level(**values["level"])
        return cls(**values)


@dataclass(frozen=True)
class GridCell:
    """Which cell of a sweep's grid a run is: its id, the model, data set, seed, state
    ("trained" or "untrained"), the method entry's label and the method's name."""

    run_id: str
    model: str
    dataset: str
    seed: int
    state: str
    label: str
    method: str


@dataclass(frozen=True, kw_only=True)
class SweepRecord(RunRecord, GridCell):
    """A sweep's run: its record, its :class:`GridCell` and its ``level``. ``masks`` (and the
    ``input_mask``) are encoded by :func:`infoprune.experiments.sweep.encode_mask`; ``code`` names
    the code that ran it (:func:`infoprune.experiments.sweep.code_version`)."""

    level: Level
    masks: dict[str, str]
    input_mask: str | None = None
    run_seconds: float | None = None
    code: str | None = None

    @classmethod
    def of(cls, record: RunRecord, cell: GridCell, **fields_: Any) -> SweepRecord:
        """``record`` in the grid's ``cell``, with the sweep's other ``fields_`` (level, masks, ...)."""
        parts = {f.name: getattr(record, f.name) for f in fields(RunRecord)}
        return cls(**parts, **{f.name: getattr(cell, f.name) for f in fields(GridCell)}, **fields_)


@dataclass(frozen=True, kw_only=True)
class FailedRun:
    """A sweep's run that raised: its id, label and planned settings (``planned``, as the sweep
    planned them), the error and its traceback."""

    run_id: str
    label: str
    error: str
    traceback: str
    planned: JSON = field(default_factory=dict)

    def to_json(self) -> JSON:
        return {**self.planned, "run_id": self.run_id, "label": self.label, "error": self.error, "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: JSON) -> FailedRun:
        own = ("run_id", "label", "error", "traceback")
        missing = [name for name in own if name not in data]
        if missing:
            raise ValueError(f"the failed-run record lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in own}, planned={k: v for k, v in data.items() if k not in own})
