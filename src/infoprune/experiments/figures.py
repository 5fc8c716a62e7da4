"""The MIPP paper's figures, drawn from sweep records (matplotlib, written to PNG).

Each function takes the records of one (model, data set) and writes one figure with a column
per state (trained / untrained): accuracy against units removed (Fig. 2), collapse rate per
5 % bin (Fig. 3), layer-wise pruning ratios over the run's mean (Figs. 4, 11), selected input
pixels (Fig. 7) and the map-reduction comparison (Fig. 10). A *series* is a dict
``{legend label: records}``; a series' points are its levels, averaged over seeds, with a
band of ± one standard deviation. A series keeps its colour in every panel of a figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from infoprune.experiments.record import SweepRecord as Record
from infoprune.experiments.regimes import REGIMES, measured_regimes, regime_label
from infoprune.experiments.sweep import decode_mask
from infoprune.plots import plt

Series = dict[str, list[Record]]
BIN_WIDTH = 5.0  # percent of units removed per collapse-rate bin (MIPP Fig. 3)


def units_removed(record: Record) -> float:
    """Percent of all prunable units removed in the run."""
    return 100 * record.units_removed_fraction


def kept_percent(record: Record, what: str) -> float:
    """Percent of the unpruned model's ``flops`` or ``params`` the physically pruned model keeps."""
    return 100 * record.kept_fraction(what)


AXES: dict[str, tuple[Callable[[Record], float], str]] = {
    "units": (units_removed, "units removed (%)"),
    "flops": (lambda r: kept_percent(r, "flops"), "FLOPs kept (%)"),
    "params": (lambda r: kept_percent(r, "params"), "parameters kept (%)"),
}
"""The x-axes of the accuracy figure: a value per record and its label."""


def states_of(records: list[Record]) -> list[str]:
    return sorted({r.state for r in records}, key=["trained", "untrained"].index)


def palette(names) -> dict[str, Any]:
    """One distinct colour per name, in order (tab10, or tab20 beyond ten names)."""
    names = list(dict.fromkeys(names))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def series_by(records: list[Record], key: Callable[[Record], str]) -> Series:
    groups: Series = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return dict(groups)


def level_points(
    records: list[Record], value: Callable[[Record], float], x: Callable[[Record], float] = units_removed
) -> np.ndarray:
    """Rows (mean x, mean value, std value) per level, over seeds, sorted by x (% removed by default)."""
    levels = series_by(records, lambda r: f"{r.label}#{r.level.index}")
    rows = []
    for runs in levels.values():
        xs = np.array([x(r) for r in runs])
        ys = np.array([value(r) for r in runs])
        rows.append((xs.mean(), ys.mean(), ys.std(ddof=1) if len(ys) > 1 else 0.0))
    return np.array(sorted(rows))


def draw_accuracy(ax, series: Series, split: str, colours: dict[str, Any], axis: str = "units") -> None:
    """Re-trained accuracy (%) against ``axis`` (see :data:`AXES`), one line and band per series;
    a "kept" axis runs from 100 % down, so that more pruning is to the right on every axis."""
    x, label = AXES[axis]
    for name, records in series.items():
        points = level_points(records, lambda r: 100 * getattr(r.accuracy_retrained, split), x)
        ax.plot(points[:, 0], points[:, 1], marker="o", markersize=3, label=name, color=colours[name])
        ax.fill_between(points[:, 0], points[:, 1] - points[:, 2], points[:, 1] + points[:, 2], color=colours[name], alpha=0.2)
    if axis != "units" and not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel(label)
    ax.set_ylabel(f"{split} accuracy after re-training (%)")
    ax.grid(alpha=0.3)


def draw_collapse_rate(ax, series: Series, colours: dict[str, Any]) -> None:
    """Percent of runs that collapsed in each 5 % bin of units removed, one line per series."""
    for name, records in series.items():
        bins: dict[int, list[bool]] = defaultdict(list)
        for record in records:
            bins[min(int(units_removed(record) // BIN_WIDTH), int(100 // BIN_WIDTH) - 1)].append(record.collapsed)
        centres = [(b + 0.5) * BIN_WIDTH for b in sorted(bins)]
        rates = [100 * np.mean(bins[b]) for b in sorted(bins)]
        ax.plot(centres, rates, marker="o", markersize=4, label=name, color=colours[name])
    ax.set_xlim(0, 100)
    ax.set_ylim(-5, 105)
    ax.set_xlabel(f"units removed (%, {BIN_WIDTH:g} % bins)")
    ax.set_ylabel("runs collapsed (%)")
    ax.grid(alpha=0.3)


def _state_grid(states: list[str], rows: int, title: str):
    fig, axes = plt.subplots(
        rows, len(states), figsize=(5.2 * len(states), 3.8 * rows), squeeze=False, layout="constrained"
    )
    fig.suptitle(title)
    return fig, axes


def _save(fig, path: Path) -> Path:
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="outside right center")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_figure(records: list[Record], path: Path, title: str, axis: str = "units") -> Path:
    """MIPP Fig. 2: train and test accuracy after re-training against units removed (or FLOPs
    or parameters kept, ``axis``), per method."""
    states = states_of(records)
    colours = palette(r.label for r in records)
    fig, axes = _state_grid(states, 2, title)
    for column, state in enumerate(states):
        runs = [r for r in records if r.state == state]
        for row, split in enumerate(("train", "test")):
            ax = axes[row, column]
            draw_accuracy(ax, series_by(runs, lambda r: r.label), split, colours, axis)
            if state == "trained":
                unpruned = 100 * np.mean([getattr(r.accuracy_original, split) for r in runs])
                ax.axhline(unpruned, color="grey", linestyle="--", linewidth=0.8, label="unpruned (trained)")
            ax.set_title(f"{state}, {split}")
    return _save(fig, path)


def regime_figure(records: list[Record], path: Path, title: str) -> Path:
    """Test accuracy against FLOPs kept, one panel per regime (:data:`REGIMES`) and state, per
    method; runs that did not measure a regime are left out of its panel."""
    states = states_of(records)
    colours = palette(r.label for r in records)
    regimes = measured_regimes(records)
    fig, axes = plt.subplots(len(states), len(regimes), figsize=(4.6 * len(regimes), 3.8 * len(states)),
                             squeeze=False, layout="constrained")  # fmt: skip
    fig.suptitle(title)
    x = AXES["flops"][0]
    for row, state in enumerate(states):
        for column, name in enumerate(regimes):
            ax, value = axes[row, column], REGIMES[name]
            runs = [r for r in records if r.state == state and value(r) is not None]
            for label, mine in series_by(runs, lambda r: r.label).items():
                points = level_points(mine, lambda r: 100 * value(r), x)
                ax.plot(points[:, 0], points[:, 1], marker="o", markersize=3, label=label, color=colours[label])
                ax.fill_between(points[:, 0], points[:, 1] - points[:, 2], points[:, 1] + points[:, 2], color=colours[label], alpha=0.15)
            ax.invert_xaxis()
            ax.set_xlabel(AXES["flops"][1])
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{state}, {regime_label(name, runs or records)}")
            ax.grid(alpha=0.3)
    return _save(fig, path)


def collapse_figure(records: list[Record], path: Path, title: str) -> Path:
    """MIPP Fig. 3: percent of runs that collapse, per 5 % bin of units removed, per method."""
    states = states_of(records)
    colours = palette(r.label for r in records)
    fig, axes = _state_grid(states, 1, title)
    for column, state in enumerate(states):
        draw_collapse_rate(axes[0, column], series_by([r for r in records if r.state == state], lambda r: r.label), colours)
        axes[0, column].set_title(state)
    return _save(fig, path)


def normalised_layer_ratios(record: Record) -> dict[str, float] | None:
    """Each layer's pruning ratio divided by the run's mean layer ratio (None if nothing was pruned)."""
    ratios = {name: layer["pruning_ratio"] for name, layer in record.pruning["layers"].items()}
    mean = np.mean(list(ratios.values()))
    return None if mean == 0 else {name: ratio / mean for name, ratio in ratios.items()}


def layer_ratio_figure(records: list[Record], path: Path, title: str, per_row: int = 4) -> Path:
    """MIPP Figs. 4 and 11: layer-wise pruning ratios over the run's mean, one panel per method,
    one line per state (mean ± std over levels and seeds)."""
    layers = list(records[0].pruning["layers"])
    by_label = series_by(records, lambda r: r.label)
    colours = palette(states_of(records))
    rows, columns = -(-len(by_label) // per_row), min(per_row, len(by_label))
    rotate = len(layers) > 6
    width = max(3.2, 0.35 * len(layers) + 1.6)
    height = 2.6 + (0.07 * max(map(len, layers)) if rotate else 0.4)  # room for rotated layer names
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, sharey=True, layout="constrained"
    )
    fig.suptitle(f"{title}: layer-wise pruning ratio / the run's mean ratio")
    for ax, (label, runs) in zip(axes.flat, by_label.items()):
        for state, state_runs in series_by(runs, lambda r: r.state).items():
            normalised = [n for n in map(normalised_layer_ratios, state_runs) if n is not None]
            if not normalised:
                continue
            values = np.array([[n[layer] for layer in layers] for n in normalised])
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(range(len(layers)), mean, marker="o", markersize=3, label=state, color=colours[state])
            ax.fill_between(range(len(layers)), mean - std, mean + std, color=colours[state], alpha=0.15)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(layers)), layers, rotation=90 if rotate else 0, fontsize=8)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("ratio / run's mean")
    for ax in axes[-1]:
        ax.set_xlabel("layer (input → output)")
    for ax in list(axes.flat)[len(by_label):]:
        ax.axis("off")
    return _save(fig, path)


def input_map(record: Record) -> np.ndarray:
    """The run's selected inputs as an (H, W) image: the fraction of channels kept per pixel."""
    shape = record.input_shape
    mask = np.array(decode_mask(record.input_mask), dtype=float)
    if len(shape) == 3:
        return mask.reshape(shape).mean(axis=0)
    return mask.reshape(1, -1)


def input_maps_figure(records: list[Record], path: Path, title: str, per_row: int = 6) -> Path:
    """MIPP Fig. 7: selected input pixels (blue) at several sparsities, one row per method and state.

    Uses the lowest seed's runs, at most ``per_row`` of them spread over the levels."""
    rows = {}
    for name, runs in series_by([r for r in records if r.input_mask], lambda r: f"{r.label}, {r.state}").items():
        seed = min(r.seed for r in runs)
        runs = sorted((r for r in runs if r.seed == seed), key=units_removed)
        rows[name] = [runs[i] for i in np.unique(np.linspace(0, len(runs) - 1, min(per_row, len(runs))).round().astype(int))]
    columns = max(len(picks) for picks in rows.values())
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.9 * columns, 2.3 * len(rows)), squeeze=False, layout="constrained"
    )
    fig.suptitle(title)
    for row, (name, picks) in enumerate(rows.items()):
        for column, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(picks):
                ax.axis("off")
                continue
            record = picks[column]
            kept = 100 * record.pruning["input_features_kept"] / record.pruning["input_features_total"]
            ax.imshow(input_map(record), cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"units −{units_removed(record):.0f}%\npixels −{100 - kept:.0f}%", fontsize=8)
            if column == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def map_reduction_figure(records: list[Record], path: Path, title: str) -> Path:
    """MIPP Fig. 10: one method's runs grouped by ``map_reduction`` (L1, L2, mean, std): test accuracy
    after re-training (top) and collapse rate (bottom) against units removed."""
    states = states_of(records)
    colours = palette(sorted(f"map reduction = {r.pruning['config']['map_reduction']}" for r in records))
    fig, axes = _state_grid(states, 2, title)
    for column, state in enumerate(states):
        series = series_by([r for r in records if r.state == state], lambda r: f"map reduction = {r.pruning['config']['map_reduction']}")
        series = dict(sorted(series.items()))
        draw_accuracy(axes[0, column], series, "test", colours)
        draw_collapse_rate(axes[1, column], series, colours)
        axes[0, column].set_title(state)
    return _save(fig, path)


LATENCY_PANELS = (("cpu", "1"), ("cpu", "64"), ("onnxruntime", "1"), ("onnxruntime", "64"), ("cuda", "1"), ("cuda", "64"))


def latency_ratio(record: Record, backend: str, batch: str) -> float | None:
    """Pruned over original forward time (the minimum over repeats), or None when not measured."""
    latency = record.latency or {}
    try:
        return latency["pruned"][backend][batch]["min"] / latency["original"][backend][batch]["min"]
    except KeyError:
        return None


def latency_figure(records: list[Record], path: Path, title: str) -> Path:
    """Latency ratio (pruned / original) against FLOPs ratio, one panel per measured backend and
    batch size, one point per run: on the diagonal, FLOPs savings are time savings one for one."""
    panels = [p for p in LATENCY_PANELS if any(latency_ratio(r, *p) is not None for r in records)]
    colours = palette(r.label for r in records)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, layout="constrained")
    fig.suptitle(title)
    for ax, (backend, batch) in zip(axes[0], panels):
        for label, runs in series_by(records, lambda r: r.label).items():
            points = [(kept_percent(r, "flops") / 100, latency_ratio(r, backend, batch)) for r in runs]
            points = np.array([p for p in points if p[1] is not None])
            if len(points):
                ax.scatter(points[:, 0], points[:, 1], s=14, label=label, color=colours[label])
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="latency ratio = FLOPs ratio")
        ax.set_xlabel("FLOPs ratio (pruned / original)")
        ax.set_ylabel("latency ratio (pruned / original)")
        ax.set_title(f"{backend}, batch {batch}")
        ax.grid(alpha=0.3)
    return _save(fig, path)
