"""Sweeps that match an entry by FLOPs or parameters kept, and the report's cost axes and tables."""

from __future__ import annotations

import pytest
import torch

import infoprune
from infoprune.data import DatasetSplits, LabelledTensors
from infoprune.experiments import figures
from infoprune.experiments.report import accuracy_at_flops, build_report, fixed_flops_table
from infoprune.experiments.results import OK, ResultStore
from infoprune.experiments.sweep import run_sweep
from infoprune.experiments.sweep_config import ConfigError, parse_config
from infoprune.network import Network
from infoprune.models import build_model

from records import stand_in_record

X = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
DATA = LabelledTensors(X, torch.arange(64) % 10)
SPLITS = DatasetSplits("mnist", DATA, DATA.subset(8), DATA, 10)


def prune_only(config, data, on_stage=None):
    """A runner that prunes an untrained LeNet-5 (no training): what matching needs, fast."""
    torch.manual_seed(config.seed)
    model = build_model("lenet5").eval()
    result = infoprune.prune(
        model, DATA, config.method, device="cpu", seed=config.seed, allow_collapse=True, **config.method_params
    )  # as the pipeline does for sweeps: collapses are counted, not refused
    accuracy = 1 - result.flops_after / result.flops_before  # a stand-in, monotone in FLOPs
    return result, stand_in_record(result.summary(), accuracy, collapsed=result.collapsed)


def matching_config(by: str) -> dict:
    return {
        "grid": {"models": ["lenet5"], "datasets": ["mnist"], "seeds": [0], "states": ["trained"]},
        "methods": [
            {"name": "l1", "levels": {"param": "ratio", "values": [0.3, 0.6, 0.9]}},
            {"name": "tp-magnitude", "match": {"entry": "l1", "by": by}},
            {"name": "synflow", "params": {"rounds": 3}, "match": {"entry": "l1", "by": by}},
        ],
    }


def largest_unit_cost(cost, widths: dict[str, int]) -> float:
    """The most that removing one more unit of any layer saves, at these widths."""
    full = cost.at_widths(widths)
    return max(full - cost.at_widths({**widths, name: max(w - 1, 0)}) for name, w in widths.items())


@pytest.mark.parametrize("by", ["flops", "params"])
def test_match_by_cost_lands_within_one_unit_of_the_matched_run(by, tmp_path):
    config = parse_config(matching_config(by), "match")
    outcome = run_sweep(config, tmp_path, runner=prune_only, load=lambda *a: SPLITS)
    assert outcome.failed == 0 and outcome.finished == 9
    records = {r.run_id: r for r in ResultStore(tmp_path).records(OK)}
    model = build_model("lenet5").eval()
    network = Network(model, X[:2])
    form = network.flops_cost() if by == "flops" else network.params_cost()
    for record in records.values():
        if record.level.matches is None:
            continue
        target = records[record.level.matches].pruning
        mine = record.pruning
        assert record.level.param == by
        assert record.level.value == pytest.approx(target[f"{by}_after"] / target[f"{by}_before"])
        widths = {name: max(layer["kept"], 1) for name, layer in mine["layers"].items()}  # physical widths
        assert mine[f"{by}_after"] <= target[f"{by}_after"]
        assert target[f"{by}_after"] - mine[f"{by}_after"] <= largest_unit_cost(form, widths)


def test_match_by_a_cost_needs_a_method_that_takes_the_budget():
    raw = matching_config("flops")
    raw["methods"][1] = {"name": "reinit", "match": {"entry": "l1", "by": "flops"}}
    with pytest.raises(ConfigError, match=r"method 'reinit' does not take \['flops'\]"):
        parse_config(raw, "bad")
    raw["methods"][1] = {"name": "tp-lamp", "match": {"entry": "l1", "by": "latency"}}
    with pytest.raises(ConfigError, match="match by must be one of"):
        parse_config(raw, "bad")


def test_report_has_cost_axes_fixed_flops_table_and_latency(tmp_path):
    config = parse_config(matching_config("flops"), "match")
    run_sweep(config, tmp_path, runner=prune_only, load=lambda *a: SPLITS)
    records = ResultStore(tmp_path).records(OK)
    l1 = [r for r in records if r.label == "l1"]
    flops = sorted((figures.kept_percent(r, "flops"), 100 * r.accuracy_retrained.test) for r in l1)
    middle = (flops[0][0] + flops[1][0]) / 2  # halfway between two levels: the mean of their accuracies
    assert accuracy_at_flops(l1, middle) == pytest.approx((flops[0][1] + flops[1][1]) / 2)
    assert accuracy_at_flops(l1, flops[-1][0] + 1) is None  # never extrapolated
    table = fixed_flops_table(records, "trained", (middle,))
    assert "(interpolated)" in table[0] and len(table) == 2 + 3
    report = build_report(tmp_path).read_text()
    for name in ("accuracy-flops.png", "accuracy-params.png"):
        assert name in report and (tmp_path / "report" / f"lenet5-on-mnist-{name}").stat().st_size > 1000
    assert "FLOPs" in report and "params" in report and "at fixed FLOPs kept" in report
