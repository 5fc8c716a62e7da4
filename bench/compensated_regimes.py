"""Each regime of a sweep pruned with ``compensate = true`` beside the same runs without it.

Prints a Markdown table: per level and method, test accuracy (%, mean ± std over seeds) one-shot,
after 1 re-training epoch and after all of them, plain → compensated. The two sweeps must share
the training, calibration, levels and seeds, so that each pair prunes the same base model with the
same masks (checked: a method whose masks differ is marked).

    python bench/compensated_regimes.py runs/equal-flops-lenet5-mnist runs/equal-flops-lenet5-compensated
"""

from __future__ import annotations

import sys
from infoprune.experiments.record import SweepRecord
from infoprune.experiments.regimes import REGIMES
from infoprune.experiments.report import mean_std, sweep_records

SHOWN = ("one-shot", "1 epoch", "re-trained")


def table(plain: list[SweepRecord], compensated: list[SweepRecord]) -> list[str]:
    by_key = {(r.label, r.level.index, r.seed): r for r in plain}
    lines = ["| level | method | " + " | ".join(f"{name}: plain → compensated" for name in SHOWN) + " |", "|" + "---|" * 5]
    for index in sorted({r.level.index for r in compensated}):
        for label in dict.fromkeys(r.label for r in compensated):
            mine = [r for r in compensated if r.label == label and r.level.index == index]
            pairs = [(by_key[(r.label, index, r.seed)], r) for r in mine if (r.label, index, r.seed) in by_key]
            if not pairs:
                continue
            cells = [
                f"{mean_std([REGIMES[name](a) for a, _ in pairs], 100)} → {mean_std([REGIMES[name](b) for _, b in pairs], 100)}"
                for name in SHOWN
            ]
            same = all(a.masks == b.masks for a, b in pairs)
            level = f"{mine[0].level.param} = {mine[0].level.value:g}"
            lines.append(f"| {level} | {label}{'' if same else ' (other masks)'} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    print("\n".join(table(sweep_records(sys.argv[1])[0], sweep_records(sys.argv[2])[0])))
