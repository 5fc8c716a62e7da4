"""``infoprune report DIR``: the figures and tables of a sweep, in one Markdown file.

Reads the successful runs of ``DIR/results.sqlite`` that belong to the sweep's current plan
(``DIR/plan.json``; runs left from an earlier version of the config are counted, not shown)
and writes, per (model, data set), the figures of :mod:`infoprune.experiments.figures`, then
a table of every (state, method, level) with mean ± std over seeds, the collapse rates, and
the runs that failed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from infoprune.experiments import characterise, figures
from infoprune.experiments.record import FailedRun, SweepRecord as Record
from infoprune.experiments.regimes import REGIMES, measured_regimes, regime_label
from infoprune.experiments.results import FAILED, OK, ResultStore
from infoprune.experiments.sweep import PLAN_FILE
from infoprune.io import atomic_write_bytes

REPORT_FILE = "report.md"


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` (sample std over seeds); just the mean for a single value."""
    array = scale * np.asarray(values, dtype=float)
    if len(array) == 1:
        return f"{array[0]:.{digits}f}"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _plan(folder: Path) -> dict[str, Any]:
    """The sweep's current plan (``runs``: ids, ``description``), or {} for a bare results file."""
    path = folder / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _level_text(records: list[Record]) -> str:
    level = records[0].level
    if level.param is None:
        return "–"
    values = [r.level.value for r in records]
    if level.matches is not None:
        return f"{level.param} (matched) {mean_std(values, digits=3)}"
    value = values[0]
    return f"{level.param} = {value:.6g}" if isinstance(value, float) else f"{level.param} = {value!r}"


def results_table(records: list[Record]) -> list[str]:
    """Markdown rows: one per (state, method, level), mean ± std over seeds."""
    header = [
        "| state | method | level | seeds | units removed (%) | params kept (%) | FLOPs kept (%) "
        "| test acc. pruned (%) | train acc. re-trained (%) | test acc. re-trained (%) | collapsed | pruning time (s) |",
        "|" + "---|" * 12,
    ]
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.state, r.label, r.level.index)].append(r)
    order = {label: i for i, label in enumerate(dict.fromkeys(r.label for r in records))}
    rows = []
    for (state, label, _index), runs in sorted(groups.items(), key=lambda item: (item[0][0], order[item[0][1]], item[0][2])):
        rows.append(
            "| " + " | ".join([
                state, label, _level_text(runs), str(len(runs)),
                mean_std([figures.units_removed(r) for r in runs], digits=1),
                mean_std([r.kept_fraction("params") for r in runs], 100, 1),
                mean_std([r.kept_fraction("flops") for r in runs], 100, 1),
                mean_std([r.accuracy_pruned.test for r in runs], 100),
                mean_std([r.accuracy_retrained.train for r in runs], 100),
                mean_std([r.accuracy_retrained.test for r in runs], 100),
                f"{sum(r.collapsed for r in runs)}/{len(runs)}",
                mean_std([r.prune_seconds for r in runs], digits=1),
            ]) + " |"
        )  # fmt: skip
    return header + rows


def headline_table(records: list[Record], state: str) -> list[str]:
    """Markdown rows for one state: per method, each level's test accuracy after re-training
    (mean over seeds), the units removed and the FLOPs and parameters kept there, level by
    level — the table to read first."""
    runs = [r for r in records if r.state == state]
    levels = sorted({r.level.index for r in runs})
    rows = [
        "| method | " + " | ".join(f"level {i + 1}" for i in levels) + " | collapsed |",
        "|" + "---|" * (len(levels) + 2),
    ]
    for label in dict.fromkeys(r.label for r in runs):
        mine = [r for r in runs if r.label == label]
        cells = []
        for index in levels:
            at_level = [r for r in mine if r.level.index == index]
            if not at_level:
                cells.append("–")
                continue
            accuracy = 100 * np.mean([r.accuracy_retrained.test for r in at_level])
            removed = np.mean([figures.units_removed(r) for r in at_level])
            flops, params = (np.mean([figures.kept_percent(r, what) for r in at_level]) for what in ("flops", "params"))
            cells.append(f"{accuracy:.1f} ({removed:.0f} % removed; FLOPs {flops:.0f} %, params {params:.0f} % kept)")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {sum(r.collapsed for r in mine)}/{len(mine)} |")
    return rows


def _levels_of(runs: list[Record]) -> list[int]:
    return sorted({r.level.index for r in runs})


def _level_name(runs: list[Record], index: int) -> str:
    """A level's column name: its value where every method shares it (e.g. "flops = 0.25")."""
    at_level = [r for r in runs if r.level.index == index]
    values = {(r.level.param, r.level.value) for r in at_level if r.level.matches is None}
    if len(values) == 1:
        (param, value), = values
        return f"{param} = {value:g}" if isinstance(value, float) else f"level {index + 1}"
    return f"level {index + 1}"


def regime_tables(records: list[Record], state: str) -> list[str]:
    """Markdown: per regime (:data:`REGIMES`), each method's test accuracy at each level, mean ±
    std over seeds, with the FLOPs it kept in brackets — read at the levels the methods ran at,
    no interpolation."""
    runs = [r for r in records if r.state == state]
    levels = _levels_of(runs)
    lines: list[str] = []
    for name in measured_regimes(runs):
        value = REGIMES[name]
        lines += [f"*{regime_label(name, runs)}* (test accuracy %, mean ± std over seeds; FLOPs kept % in brackets)", ""]
        lines += ["| method | " + " | ".join(_level_name(runs, i) for i in levels) + " |", "|" + "---|" * (len(levels) + 1)]
        for label in dict.fromkeys(r.label for r in runs):
            cells = []
            for index in levels:
                at_level = [r for r in runs if r.label == label and r.level.index == index]
                measured = [value(r) for r in at_level if value(r) is not None]
                if not measured:
                    cells.append("–")
                    continue
                flops = np.mean([figures.kept_percent(r, "flops") for r in at_level])
                cells.append(f"{mean_std(measured, 100)} ({flops:.0f})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def cost_table(records: list[Record], state: str) -> list[str]:
    """Markdown rows: per method, the pruning step's seconds and training-epoch equivalents
    (``prune_epochs``: its CPU seconds over those of one epoch of the unpruned model), mean ± std over every
    level and seed, the parameters kept at each level, and the collapses."""
    runs = [r for r in records if r.state == state]
    levels = _levels_of(runs)
    rows = [
        "| method | pruning (s) | pruning (training epochs) | " + " | ".join(f"params kept (%), {_level_name(runs, i)}" for i in levels)
        + " | collapsed |",
        "|" + "---|" * (len(levels) + 4),
    ]
    for label in dict.fromkeys(r.label for r in runs):
        mine = [r for r in runs if r.label == label]
        epochs = [r.prune_epochs for r in mine if r.prune_epochs is not None]  # CPU-timed runs only
        params = []
        for index in levels:
            at_level = [figures.kept_percent(r, "params") for r in mine if r.level.index == index]
            params.append(mean_std(at_level, digits=1) if at_level else "–")
        rows.append(
            f"| {label} | {mean_std([r.prune_seconds for r in mine], digits=2)} | "
            f"{mean_std(epochs, digits=3) if epochs else '–'} | " + " | ".join(params)
            + f" | {sum(r.collapsed for r in mine)}/{len(mine)} |"
        )
    return rows


FLOPS_LEVELS = (50.0, 25.0, 10.0)
"""Percent of the unpruned FLOPs at which the fixed-FLOPs table reads each method's accuracy."""


def accuracy_at_flops(records: list[Record], flops: float) -> float | None:
    """Test accuracy after re-training (%) at ``flops`` % kept, linearly interpolated between the
    two levels of the runs (means over seeds) that bracket it; None outside their range."""
    points = figures.level_points(records, lambda r: 100 * r.accuracy_retrained.test, lambda r: figures.kept_percent(r, "flops"))
    if len(points) == 0 or not points[0, 0] <= flops <= points[-1, 0]:
        return None
    return float(np.interp(flops, points[:, 0], points[:, 1]))


def fixed_flops_table(records: list[Record], state: str, levels: tuple[float, ...] = FLOPS_LEVELS) -> list[str]:
    """Markdown rows for one state: each method's test accuracy at fixed FLOPs kept, *interpolated*
    between its runs (no extrapolation: "–" outside the FLOPs its runs reached)."""
    runs = [r for r in records if r.state == state]
    rows = ["| method | " + " | ".join(f"{level:g} % FLOPs (interpolated)" for level in levels) + " |", "|" + "---|" * (len(levels) + 1)]
    for label in dict.fromkeys(r.label for r in runs):
        values = [accuracy_at_flops([r for r in runs if r.label == label], level) for level in levels]
        rows.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in values) + " |")
    return rows


def latency_table(records: list[Record], state: str) -> list[str]:
    """Markdown rows for one state: per method and level, the FLOPs ratio and the measured
    latency ratios (pruned / original, the minimum over repeats; mean over seeds)."""
    runs = [r for r in records if r.state == state and r.latency]
    panels = [p for p in figures.LATENCY_PANELS if any(figures.latency_ratio(r, *p) is not None for r in runs)]
    if not runs:
        return []
    rows = [
        "| method | level | FLOPs ratio | " + " | ".join(f"latency ratio, {b} batch {n}" for b, n in panels) + " |",
        "|" + "---|" * (len(panels) + 3),
    ]
    groups: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for r in runs:
        groups[(r.label, r.level.index)].append(r)
    for (label, index), group in groups.items():
        ratios = [np.mean([figures.latency_ratio(r, *p) for r in group]) for p in panels]
        flops = np.mean([figures.kept_percent(r, "flops") for r in group]) / 100
        rows.append(f"| {label} | {index + 1} | {flops:.3f} | " + " | ".join(f"{v:.3f}" for v in ratios) + " |")
    first = runs[0].latency["original"]
    threads, repeats = first["threads"], first["repeats"]
    return rows + ["", f"Timed with {threads} thread(s), {repeats} repeats per model, original and pruned in turn."]


def collapse_table(records: list[Record]) -> list[str]:
    """Markdown rows: per method and state, runs collapsed out of runs, and how many of those
    lost every input-output path (the rest re-trained only to chance) — MIPP Fig. 3 in numbers."""
    states = figures.states_of(records)
    rows = ["| method | " + " | ".join(f"collapsed, {s}" for s in states) + " |", "|" + "---|" * (len(states) + 1)]
    for label in dict.fromkeys(r.label for r in records):
        cells = []
        for state in states:
            runs = [r for r in records if r.label == label and r.state == state]
            disconnected = sum(r.pruning["collapsed"] for r in runs)
            cell = f"{sum(r.collapsed for r in runs)}/{len(runs)}" + (f" ({disconnected} disconnected)" if disconnected else "")
            cells.append(cell if runs else "–")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _map_reduction_comparisons(records: list[Record]) -> dict[str, list[Record]]:
    """Runs of one method whose settings differ only in ``map_reduction`` (and the level), when
    more than one map reduction was run (MIPP Fig. 10); keyed by a name for the figure.

    Runs with other differences (e.g. input selection) form their own comparison, so that a
    map reduction's curve never mixes settings.
    """
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        config = r.pruning["config"]
        if "map_reduction" in config:
            others = {k: v for k, v in config.items() if k not in ("map_reduction", r.level.param)}
            groups[(r.method, json.dumps(others, sort_keys=True, default=str))].append(r)
    varied = [(key, runs) for key, runs in groups.items() if len({r.pruning["config"]["map_reduction"] for r in runs}) > 1]
    methods = [method for (method, _), _ in varied]
    return {
        method if methods.count(method) == 1 else f"{method} ({index + 1})": runs
        for index, ((method, _), runs) in enumerate(varied)
    }


def _setting_section(records: list[Record], setting: str, out: Path) -> list[str]:
    """Figures and tables of one (model, data set)."""
    slug = _slug(setting)
    lines = [f"## {setting}", ""]
    for state in figures.states_of(records):
        if any(r.accuracy_by_epoch for r in records if r.state == state):
            lines += [f"**{state}: test accuracy by regime, at each level**", "", *regime_tables(records, state)]
            lines += [f"**{state}: cost of the pruning step, parameters kept and collapses**", "", *cost_table(records, state), ""]
        lines += [
            f"**{state}: test accuracy after re-training (%, mean over seeds), units removed and FLOPs and "
            "parameters kept, by level**",
            "",
            *headline_table(records, state),
            "",
            f"**{state}: test accuracy after re-training (%, mean over seeds) at fixed FLOPs kept, linearly "
            "interpolated between each method's levels (– outside the FLOPs its runs reached)**",
            "",
            *fixed_flops_table(records, state),
            "",
        ]
        latency = latency_table(records, state)
        if latency:
            lines += [f"**{state}: measured latency, pruned over original (mean over seeds)**", "", *latency, ""]
    figure_list = []
    if any(r.accuracy_by_epoch for r in records):
        figure_list.append(("Test accuracy against FLOPs kept in each regime: one-shot, BatchNorm statistics re-estimated, "
                            "1 epoch and all re-training epochs (band: ± 1 std over seeds)", figures.regime_figure,
                            f"{slug}-regimes.png"))  # fmt: skip
    figure_list += [
        ("Accuracy after re-training against units removed (MIPP Fig. 2; band: ± 1 std over seeds)",
         figures.accuracy_figure, f"{slug}-accuracy.png"),
        ("Accuracy after re-training against FLOPs kept (band: ± 1 std over seeds)",
         lambda rs, path, title: figures.accuracy_figure(rs, path, title, "flops"), f"{slug}-accuracy-flops.png"),
        ("Accuracy after re-training against parameters kept (band: ± 1 std over seeds)",
         lambda rs, path, title: figures.accuracy_figure(rs, path, title, "params"), f"{slug}-accuracy-params.png"),
        ("Runs that collapse (a layer emptied, no input-output path, or re-trained at chance), per 5 % bin "
         "of units removed (MIPP Fig. 3)", figures.collapse_figure, f"{slug}-collapse.png"),
        ("Layer-wise pruning ratios divided by the run's mean ratio, per method and state, mean ± std over "
         "levels and seeds (MIPP Figs. 4, 11)", figures.layer_ratio_figure, f"{slug}-layer-ratios.png"),
    ]  # fmt: skip
    if any(r.latency for r in records):
        figure_list.append(("Measured latency ratio against FLOPs ratio, pruned over original, one point per run "
                            "(minimum over repeats)", figures.latency_figure, f"{slug}-latency.png"))  # fmt: skip
    if any(r.input_mask for r in records):
        figure_list.append(("Selected input pixels (blue) at several sparsities (MIPP Fig. 7)", figures.input_maps_figure, f"{slug}-inputs.png"))
    for method, runs in _map_reduction_comparisons(records).items():
        figure_list.append((
            f"{method}: map reductions compared (MIPP Fig. 10)",
            lambda rs, path, title, runs=runs: figures.map_reduction_figure(runs, path, title),
            f"{slug}-{_slug(method)}-map-reductions.png",
        ))  # fmt: skip
    characterised = any(r.characterisation is not None for r in records)
    if characterised:
        figure_list.append(("Calibration and accuracy under attack after re-training (MINT §IV-E, Figs. 6, 8)",
                            characterise.sweep_characterisation_figure, f"{slug}-characterisation.png"))  # fmt: skip
    for caption, draw, name in figure_list:
        draw(records, out / name, setting)
        lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    lines += ["### Results (mean ± std over seeds)", "", *results_table(records), ""]
    if characterised:
        lines += ["### Characterisation (MINT §IV-E; original → re-trained, mean over seeds)", "",
                  *characterise.sweep_characterisation_table(records), ""]  # fmt: skip
    lines += [
        "### Collapse rates",
        "",
        "A run collapses when no path from the input to the output survives (*disconnected*; a layer "
        "emptied in a plain chain) or when the re-trained network is no better than always predicting "
        "the most frequent class (within 1 point).",
        "",
        *collapse_table(records),
        "",
    ]
    return lines


def sweep_records(folder: str | Path) -> tuple[list[Record], list[FailedRun], int]:
    """``(finished, failed, stale)`` of the sweep in ``folder``: the records of its current plan
    (``plan.json``) that finished and that failed, and how many stored finished runs belong to an
    earlier version of the config (not returned). A ValueError when no run of the plan finished."""
    store = ResultStore(folder, create=False)
    planned = _plan(Path(folder)).get("runs")
    records, failed = store.records(OK), store.records(FAILED)
    stale = 0
    if planned is not None:
        keep = set(planned)
        stale = sum(r.run_id not in keep for r in records)
        records = [r for r in records if r.run_id in keep]
        failed = [r for r in failed if r.run_id in keep]
    if not records:
        raise ValueError(f"{store.path} holds no finished run of the sweep; run `infoprune sweep` first.")
    return records, failed, stale


def build_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for the sweep in ``folder`` (into ``out``,
    default ``folder/report``); returns the report's path."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(folder)
    planned = plan.get("runs")
    records, failed, stale = sweep_records(folder)

    lines = [f"# Sweep report: {folder.name}", ""]
    if plan.get("description"):
        lines += [plan["description"], ""]
    codes = sorted({r.code or "unknown code" for r in records})
    lines += [f"Produced by {' and '.join(codes)}.", ""]
    total = len(planned) if planned is not None else len(records) + len(failed)
    lines += [
        f"{len(records)} of {total} planned runs finished, {len(failed)} failed"
        + (f"; {stale} stored runs from an earlier version of the config are not shown" if stale else "")
        + ". Accuracies are top-1 in %; params and FLOPs of the physically pruned model relative to the "
        "unpruned one; units are the prunable neurons and filters.",
        "",
    ]
    settings: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        settings[f"{r.model} on {r.dataset}"].append(r)
    for setting, runs in settings.items():
        lines += _setting_section(runs, setting, out)
    if failed:
        lines += ["## Failed runs", "", "| run | error |", "|---|---|"]
        lines += [f"| {r.run_id} | {' '.join(r.error.split()).replace('|', '/')} |" for r in failed]
        lines.append("")
    path = out / REPORT_FILE
    atomic_write_bytes(path, lambda f: f.write("\n".join(lines).encode()))
    return path
