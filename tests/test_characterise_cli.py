"""`infoprune prune --characterise`, `infoprune characterise RUN...`, `--weights` and the report's tables."""

import json
from dataclasses import replace

import pytest
import torch

from infoprune import cli
from infoprune.data import DatasetSplits, LabelledTensors
from infoprune.experiments.characterise import (
    characterisation_table,
    sweep_characterisation_figure,
    sweep_characterisation_table,
)
from infoprune.experiments.pipeline import RunConfig, run
from infoprune.experiments.record import GridCell, Level, SweepRecord
from infoprune.experiments.report import build_report
from infoprune.experiments.results import OK, ResultStore
from infoprune.models import build_model


def prune_run(out, *extra):
    """A quick MNIST run: one epoch of training (cached beside ``out``) and of re-training."""
    argv = ["prune", "--model", "lenet5", "--data", "mnist", "--method", "l1",
            "--ratio", "0.3", "--train-epochs", "1", "--retrain-epochs", "1", "--calibration-samples", "100",
            "--device", "cpu", "--out", str(out), "--cache-dir", str(out.parent / "cache"),
            "--allow-collapse", *extra]  # fmt: skip (global l1 may empty a LeNet-5 layer: recorded, not refused)
    assert cli.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_prune_records_and_characterise_compares_runs(tmp_path):
    summary = prune_run(tmp_path / "l1", "--characterise")
    recorded = summary["characterisation"]
    assert set(recorded) == {"original", "retrained"}
    assert recorded["original"]["adversarial"]["ifgsm"]["0"] == pytest.approx(recorded["original"]["accuracy"])
    assert len(recorded["retrained"]["calibration"]["count"]) == 15
    prune_run(tmp_path / "random", "--set", "scope='layer'")

    assert cli.main(["characterise", str(tmp_path / "l1"), str(tmp_path / "random"), "--samples", "40",
                     "--out", str(tmp_path / "char")]) == 0  # fmt: skip
    results = json.loads((tmp_path / "char" / "characterisation.json").read_text())
    assert list(results) == ["original", "l1", "l1 (random)"]
    assert results["l1 (random)"]["run"]["pruning"]["units_removed"] == pytest.approx(0.3, abs=0.05)
    assert results["original"]["samples"] == 40
    for name in ("reliability.png", "adversarial.png", "gradcam.png", "characterisation.md"):
        assert (tmp_path / "char" / name).stat().st_size > 500
    table = characterisation_table(results)
    assert table[2].startswith("| original | 0 | 100 |") and len(table) == 5


def test_characterise_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["characterise", str(tmp_path)]) == 2
    assert "lacks summary.json, pruned_model.pt" in capsys.readouterr().err


def test_prune_starts_from_weights_and_refuses_a_mismatched_checkpoint(tmp_path, capsys):
    trained = build_model("lenet5", num_classes=10)
    with torch.no_grad():
        trained.fc3.bias.fill_(0.25)
    torch.save(trained.state_dict(), tmp_path / "lenet.pth")
    summary = prune_run(tmp_path / "run", "--weights", str(tmp_path / "lenet.pth"), "--retrain-epochs", "0")
    assert summary["config"]["weights"] == str(tmp_path / "lenet.pth")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.pt"))

    torch.save(build_model("lenet5", num_classes=4).state_dict(), tmp_path / "four.pth")
    argv = ["prune", "--model", "lenet5", "--method", "l1", "--ratio", "0.3", "--weights", str(tmp_path / "four.pth"),
            "--out", str(tmp_path / "bad")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "shapes differ (checkpoint vs model): 2 (fc3.weight (4, 84) vs (10, 84)" in capsys.readouterr().err


def bars(count: int, seed: int) -> LabelledTensors:
    """A learnable 4-class stand-in for MNIST: a bright bar in one of four bands."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=generator)
    inputs = 0.2 * torch.rand(count, 1, 28, 28, generator=generator)
    for c in range(4):
        inputs[labels == c, :, 7 * c : 7 * c + 7, 4:24] += 0.6
    return LabelledTensors(inputs.clamp(0, 1), labels)


def test_a_run_with_characterise_records_both_networks_and_the_report_tables_them(tmp_path):
    data = DatasetSplits("bars", bars(300, 0), bars(40, 1), bars(40, 2), num_classes=4)
    config = RunConfig(model="lenet5", dataset="mnist", method="l1", method_params={"ratio": 0.3}, train_epochs=2,
                       retrain_epochs=1, calibration_samples=100, device="cpu", characterise=True)  # fmt: skip
    _result, record = run(config, data)
    recorded = record.characterisation
    assert set(recorded) == {"original", "retrained"} and recorded["original"]["samples"] == 40
    assert recorded["original"]["adversarial"]["ifgsm"]["0"] == pytest.approx(recorded["original"]["accuracy"])
    assert recorded["retrained"]["accuracy"] == pytest.approx(record.accuracy_retrained.test)
    assert len(recorded["retrained"]["calibration"]["count"]) == 15
    cell = GridCell(run_id="r1", model="lenet5", dataset="bars", seed=0, state="trained", label="l1", method="l1")
    record = SweepRecord.of(record, cell, level=Level(index=0, param="ratio", value=0.3, matches=None), masks={})
    table = sweep_characterisation_table([record, replace(record, label="other", characterisation=None)])
    assert len(table) == 3 and table[2].startswith("| trained | l1 | 1 | ")
    assert sweep_characterisation_figure([record], tmp_path / "c.png", "bars").stat().st_size > 1000
    ResultStore(tmp_path / "sweep").put("r1", OK, record)
    text = build_report(tmp_path / "sweep").read_text()
    assert "### Characterisation (MINT §IV-E" in text and "| trained | l1 | 1 |" in text
    assert "](lenet5-on-bars-characterisation.png)" in text
