"""The typed run record and the one set of training settings."""

import json
import sqlite3
from dataclasses import fields

import pytest

from infoprune import cli
from infoprune.experiments.pipeline import RunConfig, Training
from infoprune.experiments.record import Accuracy, FailedRun, Level, RunRecord, SweepRecord
from infoprune.experiments.results import OK, ResultsError, ResultStore
from infoprune.experiments.sweep_config import ConfigError, parse_config

from records import stand_in_record, stand_in_sweep_record


def exactly(message: str) -> str:
    import re

    return "^" + re.escape(message) + "$"


def test_a_sweep_record_reads_back_as_written():
    record = stand_in_sweep_record(
        stand_in_record(accuracy_bn_recalibrated=Accuracy(test=0.3), accuracy_by_epoch=[0.4, 0.5], epoch_cpu_seconds=2.0,
                        prune_epochs=0.25, characterisation={"original": {}}),
        level=Level(index=1, param="flops", value=0.25, matches=None), masks={"fc1": "0110"}, input_mask="01", code="v1",
    )  # fmt: skip
    assert SweepRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_record_written_before_the_regimes_and_cpu_timing_reads_with_those_fields_empty():
    old = stand_in_sweep_record().to_json()
    for name in ("accuracy_bn_recalibrated", "accuracy_by_epoch", "prune_cpu_seconds", "epoch_cpu_seconds", "characterisation"):
        del old[name]
    old |= {"epoch_seconds": 3.0, "prune_epochs": 0.5}  # timed in wall seconds then
    record = SweepRecord.from_json(old)
    assert record.accuracy_bn_recalibrated is None and record.accuracy_by_epoch == []
    assert record.prune_epochs is None and record.epoch_seconds == 3.0


def test_a_record_that_lacks_a_measurement_is_refused_by_name():
    data = stand_in_record().to_json()
    del data["pruning"], data["device"]
    with pytest.raises(ValueError, match=exactly("the run record lacks device, pruning")):
        RunRecord.from_json(data)
    with pytest.raises(ValueError, match=exactly("the failed-run record lacks traceback")):
        FailedRun.from_json({"run_id": "r", "label": "l", "error": "e"})


def test_a_failed_run_keeps_its_planned_settings_in_the_same_json_as_before():
    failed = FailedRun(run_id="r", label="l1", error="ValueError: x", traceback="...", planned={"seed": 2, "method": "l1"})
    assert failed.to_json() == {"seed": 2, "method": "l1", "run_id": "r", "label": "l1", "error": "ValueError: x", "traceback": "..."}
    assert FailedRun.from_json(failed.to_json()) == failed


def test_a_results_file_holding_a_foreign_record_names_the_file(tmp_path):
    store = ResultStore(tmp_path)
    store.put("r", OK, stand_in_sweep_record(run_id="r"))
    assert store.get("r") == (OK, stand_in_sweep_record(run_id="r"))
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET record = ? WHERE run_id = 'r'", (json.dumps({"run_id": "r"}),))
    with pytest.raises(ResultsError, match="holds a run record that cannot be read \\(the run record lacks model, dataset, seed, "):
        store.records()


def test_training_settings_are_written_once():
    """The CLI, a run and a sweep's [training] table share :class:`Training`'s defaults."""
    defaults = Training()
    run_fields = {f.name: getattr(RunConfig(), f.name) for f in fields(Training)}
    assert run_fields == {f.name: getattr(defaults, f.name) for f in fields(Training)}
    args = cli.build_parser().parse_args(["prune", "--out", "unused"])
    assert (args.train_epochs, args.retrain_epochs, args.calibration_samples) == (
        defaults.train_epochs, defaults.retrain_epochs, defaults.calibration_samples,
    )  # fmt: skip
    raw = {"grid": {"models": ["lenet5"], "datasets": ["mnist"]}, "methods": [{"name": "l1", "params": {"ratio": 0.5}}]}
    assert parse_config(raw).training == defaults


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"device": 3}, "device must be a string, got 3."),
        ({"characterise": "yes"}, "characterise must be true or false, got 'yes'."),
        ({"test_samples": 0}, "test_samples must be an integer ≥ 1 or None, got 0."),
        ({"compensate": 1}, "compensate must be true or false, got 1."),
    ],
)
def test_bad_training_settings_are_refused_in_one_place(setting, message):
    with pytest.raises(ValueError, match=exactly(message)):
        Training(**setting)
    with pytest.raises(ValueError, match=exactly(message)):
        RunConfig(**setting)
    raw = {"grid": {"models": ["lenet5"], "datasets": ["mnist"]}, "training": setting, "methods": [{"name": "l1", "params": {"ratio": 0.5}}]}
    with pytest.raises(ConfigError, match=exactly(f"config [training]: {message}")):
        parse_config(raw)
