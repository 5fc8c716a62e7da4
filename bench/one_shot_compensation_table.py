"""The Markdown table of ``bench/one_shot_compensation.py``'s JSON lines: per budget and method,
test accuracy (%, mean ± std over seeds) one-shot and compensated, each with BatchNorm
statistics re-estimated where the network has BatchNorm.

    python bench/one_shot_compensation_table.py docs/results/equal-flops/compensation/lenet5-mnist.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from statistics import mean

from infoprune.experiments.report import mean_std

COLUMNS = {"one_shot": "one-shot", "compensated": "compensated", "one_shot_bn": "one-shot + BN", "compensated_bn": "compensated + BN"}


def cell(runs: list[dict], key: str) -> str:
    values = [run[key] for run in runs if run[key] is not None]
    return mean_std(values, 100) if values else "–"


def table(rows: list[dict]) -> list[str]:
    """The table's lines; a run whose one-shot accuracy differs from its sweep's is an error."""
    for row in rows:
        if row["sweep_one_shot"] is not None and abs(row["one_shot"] - row["sweep_one_shot"]) > 1e-9:
            raise ValueError(f"{row['label']} seed {row['seed']} at {row['flops']}: one-shot {row['one_shot']} is not the sweep's")
    columns = [key for key in COLUMNS if any(row[key] is not None for row in rows)]
    groups: dict[tuple[float, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["flops"], row["label"])].append(row)
    lines = ["| FLOPs kept | method | " + " | ".join(COLUMNS[key] for key in columns) + " | seeds |", "|" + "---|" * (len(columns) + 3)]
    for (flops, label), runs in sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1])):
        lines.append(f"| {flops:g} | {label} | " + " | ".join(cell(runs, key) for key in columns) + f" | {len(runs)} |")
    cost = {label: (mean(r["one_shot_cpu_seconds"] for r in rows if r["label"] == label),
                    mean(r["compensated_cpu_seconds"] for r in rows if r["label"] == label))
            for label in sorted({row["label"] for row in rows})}  # fmt: skip
    return lines + ["", "CPU seconds of a pruning call without → with compensation, mean: "
                    + ", ".join(f"{label} {a:.1f} → {b:.1f}" for label, (a, b) in cost.items())]  # fmt: skip


if __name__ == "__main__":
    print("\n".join(table([json.loads(line) for line in open(sys.argv[1])])))
