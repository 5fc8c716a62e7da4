"""One page across the equal-FLOPs sweeps: per network, regime and level, the methods ranked.

    python bench/equal_flops_summary.py runs/equal-flops-mlp-mnist runs/equal-flops-lenet5-mnist \
        runs/equal-flops-resnet20-deformed-mnist > docs/results/equal-flops/summary.md

For every (network, regime, level) cell it lists each method's test accuracy (mean ± std over
seeds) best first, marks the methods whose mean is within the best method's standard deviation
("tied"), and counts over all cells how often each method is best or tied. Then the cost of each
method's pruning step in training-epoch equivalents per network. Reads each folder's current
plan only (as ``infoprune report``); a cell a method has fewer than all seeds for says so.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict

import numpy as np

from infoprune.experiments.regimes import REGIMES, measured_regimes, regime_label
from infoprune.experiments.report import sweep_records

Record = dict


def cell_ranking(runs: list[Record], value) -> list[tuple[str, float, float, int]]:
    """``(method, mean %, std %, seeds)`` of one cell, best mean first."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        measured = value(r)
        if measured is not None:
            by_method[r.label].append(100 * measured)
    rows = [(m, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for m, v in by_method.items()]
    return sorted(rows, key=lambda row: -row[1])


def network_section(name: str, records: list[Record], wins: Counter, cells: Counter) -> list[str]:
    seeds = len({r.seed for r in records})
    levels = sorted({(r.level.index, r.level.value) for r in records})
    lines = [f"## {name}", "", f"{len(records)} runs, {seeds} seeds. Unpruned test accuracy "
             f"{100 * np.mean([r.accuracy_original.test for r in records]):.2f} %.", ""]  # fmt: skip
    for regime in measured_regimes(records):
        value = REGIMES[regime]
        lines += [f"**{regime_label(regime, records)}**", "", "| FLOPs kept | ranking (test accuracy %, mean ± std; † tied with the best) |", "|---|---|"]
        for index, level in levels:
            ranking = cell_ranking([r for r in records if r.level.index == index], value)
            if not ranking:
                continue
            best_mean, best_std = ranking[0][1], ranking[0][2]
            cells_text = []
            for method, mean, std, count in ranking:
                tied = mean >= best_mean - best_std
                cells[method] += 1
                wins[method] += tied
                partial = "" if count == seeds else f" [{count} seeds]"
                cells_text.append(f"{'**' if method == ranking[0][0] else ''}{method}{'**' if method == ranking[0][0] else ''} "
                                  f"{mean:.2f} ± {std:.2f}{' †' if tied and method != ranking[0][0] else ''}{partial}")  # fmt: skip
            lines.append(f"| {level:g} | " + "; ".join(cells_text) + " |")
        lines.append("")
    epochs: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.prune_epochs is not None:  # CPU-timed runs only
            epochs[r.label].append(r.prune_epochs)
    epoch_cpu = np.mean([r.epoch_cpu_seconds for r in records if r.epoch_cpu_seconds is not None])
    lines += [f"Pruning cost in training epochs of the unpruned network (CPU seconds over CPU seconds; one epoch ≈ {epoch_cpu:.1f} CPU s, 1 thread), "
              "mean over levels and seeds: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in sorted(epochs.items(), key=lambda kv: np.mean(kv[1]))), ""]  # fmt: skip
    return lines


def main(folders: list[str]) -> None:
    wins: Counter = Counter()
    cells: Counter = Counter()
    lines = ["# Equal-FLOPs evidence: every method, three networks, four regimes", ""]
    for folder in folders:
        records, failed, _ = sweep_records(folder)
        name = f"{records[0].model} on {records[0].dataset}"
        lines += network_section(name, records, wins, cells)
        if failed:
            lines += [f"{len(failed)} failed run(s) in {folder}: " + "; ".join(r.run_id for r in failed), ""]
    lines += ["## Best or tied, over every cell", "", "| method | cells best or tied | cells |", "|---|---|---|"]
    lines += [f"| {m} | {wins[m]} | {cells[m]} |" for m in sorted(cells, key=lambda m: (-wins[m] / cells[m], m))]
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
