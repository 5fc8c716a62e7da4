"""Run records for tests whose runner stands in for the pipeline."""

from __future__ import annotations

from typing import Any

from infoprune.experiments.record import Accuracy, GridCell, Level, RunRecord, SweepRecord


def stand_in_record(pruning: dict[str, Any] | None = None, accuracy: float = 0.5, **fields: Any) -> RunRecord:
    """A :class:`RunRecord` with ``accuracy`` in every regime, ``pruning`` as the summary (by
    default half the units removed) and the other fields set to plausible values or ``fields``."""
    measured = Accuracy(train=accuracy, test=accuracy)
    values: dict[str, Any] = {
        "config": {"retrain_epochs": 1}, "device": "cpu", "num_classes": 10, "input_shape": [1, 28, 28],
        "accuracy_original": measured, "accuracy_pruned": measured, "accuracy_retrained": measured,
        "prune_seconds": 0.0, "pruning": pruning or {"units_removed_fraction": 0.5}, "chance_accuracy": 0.1,
        "collapsed": False,
    }  # fmt: skip
    return RunRecord(**{**values, **fields})


def stand_in_sweep_record(record: RunRecord | None = None, **fields: Any) -> SweepRecord:
    """``record`` (default :func:`stand_in_record`) as a sweep's run: a first-level run of
    ``mipp`` on LeNet-5 / MNIST, or the cell and the other sweep fields given in ``fields``."""
    values: dict[str, Any] = {
        "run_id": "run", "model": "lenet5", "dataset": "mnist", "seed": 0, "state": "trained", "label": "mipp",
        "method": "mipp", "level": Level(index=0, param=None, value=None, matches=None), "masks": {},
    }  # fmt: skip
    values |= fields
    cell = GridCell(**{name: values.pop(name) for name in GridCell.__dataclass_fields__})
    return SweepRecord.of(record or stand_in_record(), cell, **values)
