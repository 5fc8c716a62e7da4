"""Sweeps: config validation, planning, storing every run once across interruptions, the report."""

from __future__ import annotations

import copy
import math
import re
import sqlite3
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from infoprune import methods
from infoprune.cli import main
from infoprune.data import DATASETS, DatasetSplits, load_dataset
from infoprune.experiments.record import Accuracy, Level, SweepRecord
from infoprune.experiments.report import build_report, mean_std
from infoprune.experiments.results import FAILED, OK, ResultStore
from infoprune.experiments.sweep import plan, run_sweep
from infoprune.experiments.sweep_config import ConfigError, geometric_schedule, load_config, parse_config, parse_toml
from infoprune.methods.base import MaskDecision, PruningMethod, check_fraction
from infoprune.models import MODELS

from records import stand_in_record, stand_in_sweep_record

TINY_MIPP = {"hidden_size": 8, "fit_iterations": 10, "refit_iterations": 2, "ordering_iterations": 2, "repeats": 2}


class DropFirst(PruningMethod):
    """Test method with a known answer: removes the first ⌊ratio·units⌋ units of every layer."""

    name = "test-drop-first"

    def __init__(self, ratio: float | None = None) -> None:
        self.ratio = check_fraction("ratio", ratio, low_open=False)

    def decide(self, context) -> MaskDecision:
        masks = {}
        for layer in context.network.groups:
            keep = torch.ones(layer.units, dtype=torch.bool)
            keep[: math.floor(self.ratio * layer.units)] = False
            masks[layer.name] = keep
        return MaskDecision(masks)


@pytest.fixture(scope="module", autouse=True)
def drop_first_registered_and_one_thread():
    """Register the test method; one torch thread (MIPP's many tiny ops crawl on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(methods._REGISTRY, DropFirst.name, DropFirst)
        yield
    torch.set_num_threads(threads)


def tiny_config(**training) -> dict:
    return {
        "description": "tiny test sweep",
        "grid": {"models": ["lenet5"], "datasets": ["mnist"], "seeds": [0], "states": ["trained"]},
        "training": {"train_epochs": 1, "retrain_epochs": 1, "calibration_samples": 300, "device": "cpu", **training},
        "methods": [
            {"name": "test-drop-first", "match": "mipp"},  # listed first: the plan must still run mipp first
            {"name": "mipp", "params": TINY_MIPP, "levels": {"param": "confidence", "schedule": "geometric", "count": 2}},
        ],
    }


@pytest.fixture(scope="module")
def small_mnist() -> DatasetSplits:
    data = load_dataset("mnist")
    return DatasetSplits("mnist", data.train.subset(800, seed=0), data.val.subset(10), data.test.subset(500, seed=0), 10)


class CountingRunner:
    """The real pipeline, counting calls; raises KeyboardInterrupt on call number ``interrupt_at``."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls, self.interrupt_at = 0, interrupt_at

    def __call__(self, config, data, on_stage=None):
        from infoprune.experiments.pipeline import run

        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return run(config, data, on_stage=on_stage)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, small_mnist):
    """A tiny sweep run in three goes: stopped after one run, interrupted in its second, resumed."""
    out = tmp_path_factory.mktemp("sweep")
    config = parse_config(tiny_config(), "tiny")
    load = lambda name, data_dir, seed: small_mnist  # noqa: E731
    runners = [CountingRunner(), CountingRunner(interrupt_at=2), CountingRunner()]
    first = run_sweep(config, out, max_runs=1, runner=runners[0], load=load)
    stored_after_first = ResultStore(out).statuses()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, out, runner=runners[1], load=load)
    stored_after_interrupt = ResultStore(out).statuses()
    last = run_sweep(config, out, runner=runners[2], load=load)
    return SimpleNamespace(
        out=out, config=config, runners=runners, first=first, last=last,
        after_first=stored_after_first, after_interrupt=stored_after_interrupt,
    )  # fmt: skip


# --- configuration ------------------------------------------------------------------------------


def test_geometric_schedule_is_appendix_d1():
    assert geometric_schedule(5) == [0.5, 0.75, 0.875, 0.9375, 0.96875]
    assert geometric_schedule(3, start=0.6, rate=0.25) == pytest.approx([0.6, 0.7, 0.775])


def _with(path: str, value):
    raw = tiny_config()
    *parents, key = path.split(".")
    table = raw
    for part in parents:
        table = table[int(part)] if part.isdigit() else table[part]
    table[key] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with("grid.modles", ["lenet5"]), r"\[grid\]: unknown key\(s\) \['modles'\]"),
        (_with("grid.models", ["lenet6"]), r"unknown models \['lenet6'\]; available: .*lenet5"),
        (_with("grid.seeds", [0, 0]), "seeds must be distinct"),
        (_with("grid.states", ["pretrained"]), "states must be a non-empty list of distinct values from"),
        (_with("training.train_epochs", -1), r"\[training\]: train_epochs must be an integer ≥ 0, got -1"),
        (_with("methods.1.name", "mip"), r"#2: name must be one of .*mipp.*, got 'mip'"),
        (_with("methods.1.params", {"confidance": 0.9}), r"\(mipp\): method 'mipp' does not take \['confidance'\]"),
        (_with("methods.1.levels", {"param": "confidence", "values": [0.5, 1.5]}), r"mipp\(.*confidence=1.5\) is invalid: confidence must lie in \(0, 1\)"),
        (_with("methods.1.levels", {"param": "confidence", "schedule": "linear", "count": 2}), "schedule must be one of"),
        (_with("methods.1.levels", {"param": "confidence", "schedule": "geometric"}), r"count must be an integer ≥ 1"),
        (_with("methods.1.levels", {"param": "confidence"}), "give either values"),
        (_with("methods.0.match", "snip-typo"), r"matches 'snip-typo', which is not another entry's label"),
        (_with("methods.0.match", {"entry": "mipp", "take": "flops"}), "take must be one of"),
        (_with("methods.0.levels", {"param": "ratio", "values": [0.5]}), "give levels or match, not both"),
        (_with("methods.1.label", "test-drop-first"), "two method entries are labelled 'test-drop-first'"),
        (_with("methods.1.states", ["untrained"]), r"not all in the grid's states"),
        (_with("methods", []), r"needs at least one \[\[methods\]\]"),
    ],
)
def test_config_errors_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, "cfg")


def test_match_cycles_and_state_mismatch_are_rejected():
    raw = tiny_config()
    raw["methods"][1] = {"name": "test-drop-first", "label": "other", "match": "test-drop-first"}
    raw["methods"][0]["match"] = "other"
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(raw, "cfg")
    raw = tiny_config()
    raw["grid"]["states"] = ["trained", "untrained"]
    raw["methods"][1]["states"] = ["trained"]
    with pytest.raises(ConfigError, match=r"runs in states \['untrained'\] where 'mipp', which it matches, does not"):
        parse_config(raw, "cfg")


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\nmodels = 1")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2


CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_ready_configs_are_valid(path):
    raw = parse_toml(path.read_text(), path.name)
    missing = sorted(
        {m["name"] for m in raw["methods"]} - set(methods.available_methods())
        | set(raw["grid"]["models"]) - set(MODELS)
        | set(raw["grid"]["datasets"]) - set(DATASETS)
    )
    if missing:
        pytest.skip(f"{path.name} needs {missing}, not on this branch")
    assert plan(load_config(path))


def test_plan_runs_matched_entries_after_their_target_with_stable_ids():
    config = parse_config(tiny_config(), "tiny")
    runs = plan(config)
    assert [(r.label, r.level_index) for r in runs] == [
        ("mipp", 0), ("test-drop-first", 0), ("mipp", 1), ("test-drop-first", 1)
    ]  # fmt: skip
    assert runs[1].matches == runs[0].run_id and runs[3].matches == runs[2].run_id
    assert [r.level_value for r in runs[::2]] == [0.5, 0.75]
    assert [r.run_id for r in plan(parse_config(tiny_config(), "tiny"))] == [r.run_id for r in runs]
    changed = plan(parse_config(tiny_config(retrain_epochs=2), "tiny"))
    assert not {r.run_id for r in changed} & {r.run_id for r in runs}


# --- running, interrupting, resuming --------------------------------------------------------------


def test_interrupted_sweep_resumes_and_records_every_run_once(finished_sweep):
    s = finished_sweep
    planned = [r.run_id for r in plan(s.config)]
    assert s.first.stopped_early and s.first.finished == 1
    assert list(s.after_first) == planned[:1]
    # the second go ran one run and was interrupted in the next: one more stored, nothing else
    assert set(s.after_interrupt) == set(planned[:2])
    assert s.last.skipped == 2 and s.last.finished == 2 and s.last.failed == 0 and not s.last.stopped_early
    # each run executed once, plus the one lost to the interrupt
    assert [r.calls for r in s.runners] == [1, 2, 2]
    with sqlite3.connect(s.out / "results.sqlite") as db:
        rows = db.execute("SELECT run_id, status FROM runs").fetchall()
    assert sorted(rows) == sorted((run_id, OK) for run_id in planned)


def test_records_hold_what_the_paper_measures(finished_sweep):
    records = {(r.label, r.level.index): r for r in ResultStore(finished_sweep.out).records()}
    mipp, drop = records[("mipp", 1)], records[("test-drop-first", 1)]
    assert mipp.level == Level(index=1, param="confidence", value=0.75, matches=None)
    assert mipp.pruning["config"]["confidence"] == 0.75
    # the matched run took the global ratio MIPP reached in the same setting
    reached = mipp.units_removed_fraction
    assert drop.level.value == reached and drop.config["method_params"] == {"ratio": reached}
    for name, layer in drop.pruning["layers"].items():
        assert layer["kept"] == layer["total"] - math.floor(reached * layer["total"])
        assert drop.masks[name] == "0" * (layer["total"] - layer["kept"]) + "1" * layer["kept"]
    for record in records.values():
        assert record.accuracy_retrained.train is not None
        assert record.prune_seconds > 0 and record.pruning["flops_after"] < record.pruning["flops_before"]
        assert isinstance(record.collapsed, bool) and 0 < record.chance_accuracy < 0.2
        # the regimes: one-shot, BatchNorm re-estimated (LeNet-5 has none), each re-training epoch
        assert record.accuracy_bn_recalibrated is None
        assert record.accuracy_by_epoch == [record.accuracy_retrained.test]  # retrain_epochs = 1
        assert record.epoch_seconds > 0 and record.epoch_cpu_seconds > 0 and 0 < record.prune_cpu_seconds
        assert record.prune_epochs == record.prune_cpu_seconds / record.epoch_cpu_seconds


def test_a_failing_run_is_stored_with_its_error_and_retried_on_resume(tmp_path):
    config = parse_config(tiny_config(), "tiny")
    failing = {"confidence": 0.75}

    def fake_run(run_config, data, on_stage=None):
        if run_config.method_params.get("confidence") == failing["confidence"]:
            raise ValueError("boom")
        record = stand_in_record({"units_removed_fraction": run_config.method_params.get("confidence", 0.5) / 2}, 0.9)
        return SimpleNamespace(masks={"fc": torch.ones(3, dtype=torch.bool)}, input_mask=None), record

    data = SimpleNamespace(train=SimpleNamespace(inputs=torch.zeros(2, 1, 28, 28)))
    outcome = run_sweep(config, tmp_path, runner=fake_run, load=lambda *a: data)
    assert (outcome.finished, outcome.failed) == (2, 2)
    failed = ResultStore(tmp_path).records(FAILED)
    assert sorted(r.label for r in failed) == ["mipp", "test-drop-first"]
    assert "ValueError: boom" in next(r.error for r in failed if r.label == "mipp")
    assert "did not finish successfully" in next(r.error for r in failed if r.label == "test-drop-first")

    failing["confidence"] = -1.0
    outcome = run_sweep(config, tmp_path, runner=fake_run, load=lambda *a: data)
    assert (outcome.skipped, outcome.finished, outcome.failed) == (2, 2, 0)
    assert sorted(ResultStore(tmp_path).statuses().values()) == [OK] * 4


# --- the report -----------------------------------------------------------------------------------


def test_mean_std_over_seeds():
    assert mean_std([0.9, 0.92], 100) == "91.00 ± 1.41"
    assert mean_std([0.5], 100, 1) == "50.0"


def test_report_has_plots_and_a_table_with_every_method(finished_sweep):
    path = build_report(finished_sweep.out)
    text = path.read_text()
    for name in ("lenet5-on-mnist-accuracy.png", "lenet5-on-mnist-collapse.png", "lenet5-on-mnist-layer-ratios.png"):
        assert (path.parent / name).stat().st_size > 10_000
        assert f"]({name})" in text
    table = text[text.index("### Results") :]
    rows = [line for line in table.splitlines() if line.startswith("| trained |")]
    assert len(rows) == 4
    assert sum("| mipp | confidence = 0.5 |" in row for row in rows) == 1
    assert sum("| test-drop-first | ratio (matched)" in row for row in rows) == 2
    headline = text[text.index("**trained: test accuracy") : text.index("### Results")]
    assert "| method | level 1 | level 2 | collapsed |" in headline
    mipp_runs = {r.level.index: r for r in ResultStore(finished_sweep.out).records() if r.label == "mipp"}
    first = mipp_runs[0]
    pruning = first.pruning
    cell = (
        f"{100 * first.accuracy_retrained.test:.1f} ({100 * pruning['units_removed_fraction']:.0f} % removed; "
        f"FLOPs {100 * pruning['flops_after'] / pruning['flops_before']:.0f} %, "
        f"params {100 * pruning['params_after'] / pruning['params_before']:.0f} % kept)"
    )
    assert re.search(rf"\| mipp \| {re.escape(cell)} \| .+ \| \d/2 \|", headline)
    assert re.search(r"\| test-drop-first \| .+ \| .+ \| \d/2 \|", headline)
    assert "4 of 4 planned runs finished, 0 failed" in text
    # regimes read at the levels the methods ran at: one-shot and 1 epoch (no BatchNorm: no such table)
    one_shot = text[text.index("*one-shot*") : text.index("*1 epoch*")]
    shot = f"{100 * first.accuracy_pruned.test:.2f} ({100 * pruning['flops_after'] / pruning['flops_before']:.0f})"
    assert f"| mipp | {shot} |" in one_shot and "*one-shot + BN*" not in text
    assert "(lenet5-on-mnist-regimes.png)" in text and "| method | pruning (s) | pruning (training epochs) |" in text
    assert "Produced by infoprune " in text
    assert not (path.parent / "lenet5-on-mnist-inputs.png").exists()


def test_report_draws_input_maps_and_map_reductions_when_runs_vary_them(finished_sweep, tmp_path):
    """Runs with selected inputs (Fig. 7) and with several map reductions (Fig. 10), untrained."""
    store = ResultStore(tmp_path)
    for record in ResultStore(finished_sweep.out).records():
        for reduction, state in (("l1", "trained"), ("l2", "untrained"), ("std", "untrained")):
            variant = replace(copy.deepcopy(record), run_id=f"{record.run_id}-{reduction}-{state}", state=state)
            variant.pruning["config"]["map_reduction"] = reduction
            if record.method == "mipp":
                variant = replace(variant, input_mask="01" * 392)
                variant.pruning.update(input_features_kept=392, input_features_total=784)
            store.put(variant.run_id, OK, variant)
    path = build_report(tmp_path, tmp_path / "r")
    text = path.read_text()
    assert (path.parent / "lenet5-on-mnist-inputs.png").stat().st_size > 5_000
    assert (path.parent / "lenet5-on-mnist-mipp-map-reductions.png").stat().st_size > 10_000
    assert "| untrained | mipp |" in text
    assert re.search(r"\| mipp \| \d/2 \| \d/4 \|", text)


def test_report_command(finished_sweep, tmp_path, capsys):
    assert main(["report", str(finished_sweep.out), "--out", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_an_interrupted_base_model_training_resumes_from_its_checkpoint(tmp_path, small_mnist):
    """Base-model training checkpoints next to the cache; a second call resumes and ends where an
    uninterrupted training would, then leaves only the cache entry."""
    from infoprune.experiments.pipeline import RunConfig, base_model

    data = replace(small_mnist, train=small_mnist.train.subset(200, seed=0))
    batches = 0

    def interrupt_in_second_epoch(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        nonlocal batches
        batches += 1
        if batches == 3:  # 200 samples, batches of 100: the first batch of epoch 2
            raise KeyboardInterrupt
        return inputs

    config = RunConfig(train_epochs=2, cache_dir=str(tmp_path / "cache"), device="cpu")
    with pytest.raises(KeyboardInterrupt):
        base_model(config, replace(data, train_transform=interrupt_in_second_epoch), torch.device("cpu"))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["lenet5-mnist-2ep-lr0.01-seed0.partial.ckpt"]
    resumed = base_model(config, data, torch.device("cpu"))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["lenet5-mnist-2ep-lr0.01-seed0.pt"]
    uninterrupted = base_model(replace(config, cache_dir=None), data, torch.device("cpu"))
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_map_reduction_comparisons_never_mix_other_settings():
    """Fig. 10 compares runs that differ only in the map reduction (and level)."""
    from infoprune.experiments.report import _map_reduction_comparisons as _comparisons

    def run(reduction: str, confidence: float, select_inputs: bool = False, method: str = "mipp") -> SweepRecord:
        config = {"confidence": confidence, "map_reduction": reduction, "select_inputs": select_inputs}
        level = Level(index=0, param="confidence", value=confidence, matches=None)
        return stand_in_sweep_record(stand_in_record({"config": config}), method=method, level=level)

    plain = [run(c, x) for c in ("l1", "l2") for x in (0.9, 0.99)]
    pixels = [run("l1", 0.9, select_inputs=True), run("l1", 0.99, select_inputs=True)]
    assert _comparisons(plain + pixels) == {"mipp": plain}
    pixels_varied = pixels + [run("std", 0.9, select_inputs=True)]
    assert _comparisons(plain + pixels_varied) == {"mipp (1)": plain, "mipp (2)": pixels_varied}
    assert _comparisons(pixels + [run("l1", 0.9, method="other")]) == {}


def test_regime_tables_read_each_regime_at_each_level_without_interpolation():
    from infoprune.experiments.report import regime_tables

    def record(label, index, seed, shot, bn, epochs):
        return stand_in_sweep_record(
            stand_in_record(
                {"flops_after": [50, 24][index], "flops_before": 100}, config={"retrain_epochs": len(epochs)},
                accuracy_pruned=Accuracy(test=shot), accuracy_bn_recalibrated=None if bn is None else Accuracy(test=bn),
                accuracy_by_epoch=epochs, accuracy_retrained=Accuracy(test=epochs[-1]),
            ),
            state="trained", label=label, level=Level(index=index, param="flops", value=[0.5, 0.25][index], matches=None),
            seed=seed, run_id=f"{label}-{index}-{seed}", method=label,
        )  # fmt: skip

    records = [record("a", i, s, 0.1 + i, 0.5 + s / 10, [0.8, 0.9]) for i in (0, 1) for s in (0, 1)]
    records.append(record("b", 0, 0, 0.3, None, [0.7, 0.75]))
    text = "\n".join(regime_tables(records, "trained"))
    bn = text[text.index("*one-shot + BN*") : text.index("*1 epoch*")]
    assert "| method | flops = 0.5 | flops = 0.25 |" in bn
    assert "| a | 55.00 ± 7.07 (50) | 55.00 ± 7.07 (24) |" in bn and "| b | – | – |" in bn
    assert "*re-trained, 2 epochs*" in text and "| b | 75.00 (50) | – |" in text
