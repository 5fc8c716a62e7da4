"""What the fast engine's early looks would decide, against its own full-length test.

    python bench/mipp_looks.py --threads 1 --confidences 0.9 0.999 0.9999 --seed 0 --out looks.json
    python bench/mipp_looks.py --analyse looks.json        # the tables only, from stored looks

Runs MIPP's fast engine on trained LeNet-5 / real MNIST at the paper's counts with every look
(40, 80 and 150 iterations) evaluated and the decision always taken at the last one, and records
each test's confidence at every look. Then, per x: how many units an early keep (one look, or two
consecutive looks, at the early threshold of ``terc.look_thresholds``) would keep that the
full-length test removes, and how many units a futility rule "t below f · t₁₋ₓ" at 40 or 80
iterations would remove early, and wrongly. The run goes through the public hook
``terc.every_look``: each test evaluates all its looks and decides at the last, nothing else changes.
"""

from __future__ import annotations

import argparse
import json

import torch
from scipy import stats

import infoprune
from infoprune.data import load_dataset
from infoprune.estimators import terc
from infoprune.experiments.pipeline import RunConfig, base_model


def record_looks(
    model: torch.nn.Module, calibration, confidence: float, seed: int, hidden_size: int
) -> list[list[float]]:
    """The confidences at every look of every test of one MIPP walk (decided at the last look)."""
    with terc.every_look() as tests:
        infoprune.prune(
            model, calibration, "mipp", confidence=confidence, seed=seed, engine="fast", hidden_size=hidden_size,
        )
    return tests


def analyse(confidence: float, tests: list[list[float]]) -> list[str]:
    config = terc.TercConfig(confidence=confidence, engine="fast")
    early, last = terc.look_thresholds(config)
    t = lambda c: stats.t.ppf(min(max(c, 1e-15), 1 - 1e-15), config.repeats - 1)  # noqa: E731
    keeps = [c for c in tests if c[-1] >= last]
    removes = [c for c in tests if c[-1] < last]
    one_look = [c for c in tests if c[0] >= early or c[1] >= early]
    two_looks = [c for c in tests if min(c[0], c[1]) >= early]
    lines = [
        f"x = {confidence}: {len(tests)} tests, the full-length test keeps {len(keeps)} and removes {len(removes)}",
        f"  early keep on one look:   {len(one_look)} units, {sum(c[-1] < last for c in one_look)} of them removed at the last look",
        f"  early keep on two looks:  {len(two_looks)} units, {sum(c[-1] < last for c in two_looks)} of them removed at the last look",
    ]
    for fraction in (0.1, 0.2, 0.3, 0.5):
        threshold = fraction * t(last)
        for look, name in ((0, 40), (1, 80)):
            early_removes = sum(t(c[look]) < threshold for c in removes)
            wrong = sum(t(c[look]) < threshold for c in keeps)
            lines.append(f"  remove at {name} if t < {fraction} t_(1-x): {early_removes} of {len(removes)} removals early, {wrong} kept units removed")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.9, 0.999, 0.9999])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="write the recorded looks to this JSON file")
    parser.add_argument("--analyse", help="only analyse the looks stored in this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.analyse:
        looks = {float(x): tests for x, tests in json.load(open(args.analyse)).items()}
    else:
        data = load_dataset("mnist")
        model = base_model(RunConfig(train_epochs=3, cache_dir="runs/cache", seed=0), data, torch.device("cpu"))
        calibration = data.train.subset(2000, seed=1)
        looks = {x: record_looks(model, calibration, x, args.seed, args.hidden_size) for x in args.confidences}
        if args.out:
            json.dump({str(x): tests for x, tests in looks.items()}, open(args.out, "w"))
    for x, tests in looks.items():
        print("\n".join(analyse(x, tests)))


if __name__ == "__main__":
    main()
