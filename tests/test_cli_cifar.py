"""``infoprune prune`` on CIFAR-format data: the generated stand-in directory, end to end."""

from __future__ import annotations

import json

import pytest

from infoprune.cli import main
from infoprune.data import write_cifar_standin

TINY_MIPP = ["--set", "fit_iterations=20", "--set", "refit_iterations=2", "--set", "ordering_iterations=2",
             "--set", "repeats=3", "--set", "hidden_size=32"]  # fmt: skip


def run_cli(tmp_path, model: str, train_size: int, calibration: int, train_epochs: int) -> dict:
    write_cifar_standin(tmp_path / "cifar", train_size=train_size, test_size=50)
    out = tmp_path / "out"
    argv = ["prune", "--model", model, "--data", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--out", str(out)]
    argv += ["--train-epochs", str(train_epochs), "--retrain-epochs", "1", "--device", "cpu"]
    argv += ["--calibration-samples", str(calibration)]
    assert main(argv + TINY_MIPP) == 0
    assert (out / "pruned_model.pt").is_file() and (out / "layer_ratios.png").is_file()
    return json.loads((out / "summary.json").read_text())


def test_cli_prunes_a_cifar_resnet_read_from_a_cifar_directory(tmp_path):
    summary = run_cli(tmp_path, "resnet20", train_size=150, calibration=128, train_epochs=0)  # prune at init
    assert summary["config"]["dataset"] == "cifar10" and summary["config"]["model"] == "resnet20"
    assert 0 <= summary["accuracy_retrained"]["test"] <= 1


@pytest.mark.slow
def test_cli_prunes_vgg11_on_cifar_format_data(tmp_path):
    summary = run_cli(tmp_path, "vgg11", train_size=1200, calibration=1024, train_epochs=1)
    assert summary["config"]["model"] == "vgg11"


def test_cli_names_the_expected_cifar_files_when_the_directory_is_wrong(tmp_path, capsys):
    argv = ["prune", "--model", "resnet20", "--data", "cifar10", "--data-dir", str(tmp_path)]
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    assert "data_batch_1" in capsys.readouterr().err
