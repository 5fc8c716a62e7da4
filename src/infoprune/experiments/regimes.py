"""The regimes in which a sweep reads a pruned network's accuracy (pruning papers' one-shot,
BatchNorm-recalibrated and re-trained results), from a run's record.

:func:`infoprune.experiments.pipeline.run` measures them all in one run: the accuracy straight
after pruning, after re-estimating BatchNorm statistics only, after the first re-training epoch
(a 1-epoch re-training: the recipes' first epoch has the same learning rate and data order for
any epoch count) and after the last.
"""

from __future__ import annotations

from collections.abc import Callable

from infoprune.experiments.record import SweepRecord as Record



def _one_shot(record: Record) -> float | None:
    return record.accuracy_pruned.test


def _batchnorm(record: Record) -> float | None:
    measured = record.accuracy_bn_recalibrated
    return None if measured is None else measured.test


def _first_epoch(record: Record) -> float | None:
    by_epoch = record.accuracy_by_epoch
    return by_epoch[0] if by_epoch else None


def _retrained(record: Record) -> float | None:
    return record.accuracy_retrained.test if record.config["retrain_epochs"] > 0 else None


REGIMES: dict[str, Callable[[Record], float | None]] = {
    "one-shot": _one_shot,
    "one-shot + BN": _batchnorm,
    "1 epoch": _first_epoch,
    "re-trained": _retrained,
}
"""Regime name → the run's test accuracy there (None where the run did not measure it: no
BatchNorm layer, or no re-training)."""


def regime_label(name: str, records: list[Record]) -> str:
    """``name`` with the epoch count for the final regime (e.g. "re-trained, 10 epochs")."""
    if name != "re-trained":
        return name
    epochs = sorted({r.config["retrain_epochs"] for r in records})
    return "re-trained, " + "/".join(map(str, epochs)) + (" epoch" if epochs == [1] else " epochs")


def measured_regimes(records: list[Record]) -> list[str]:
    """The regimes measured by at least one of ``records``, in order."""
    return [name for name, value in REGIMES.items() if any(value(r) is not None for r in records)]
