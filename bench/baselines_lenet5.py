"""Every baseline on trained LeNet-5 / MNIST at 80 % and 95 % of units removed (MIPP §5, Fig. 2-3).

Trains LeNet-5 (or loads it from the cache), prunes it with each method at each ratio,
re-trains the pruned model briefly, and prints test accuracy before and after re-training,
the ratio reached, the per-layer units kept and whether the network collapsed (no
input→output path left). MIPP, driven by a confidence rather than a ratio, is run at the
given confidences and reports the ratio it reached (on the cached 3-epoch model 0.999 and
0.9999 removed 75 % and 94 %); at the paper's iteration counts each MIPP run took 6-25
minutes on one shared thread, the other methods seconds.

    PYTHONPATH=src python bench/baselines_lenet5.py                      # defaults below
    PYTHONPATH=src python bench/baselines_lenet5.py --methods l1 synflow --retrain-epochs 1

Runs on one CPU thread by default (the machine is shared); budgets are scaled-down versions
of Table 2's 90-epoch recipe, so accuracies are below the paper's.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import infoprune
from infoprune.data import load_dataset
from infoprune.methods import get_method
from infoprune.models import build_model
from infoprune.training import RECIPES, evaluate, train

RATIO_METHODS = ["random", "l1", "snip", "grasp", "synflow", "thinet", "sosp", "reinit"]


def trained_lenet5(data, epochs: int, cache: Path) -> torch.nn.Module:
    """LeNet-5 trained with the MNIST recipe cut to ``epochs`` (cached on disk)."""
    model = build_model("lenet5")
    path = cache / f"lenet5-mnist-{epochs}ep.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path))
        return model.eval()
    train(model, data.train, RECIPES["mnist"].with_epochs(epochs), device="cpu", desc="pre-train")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def run(label: str, model, data, calibration, retrain_epochs: int, **kwargs) -> dict:
    result = infoprune.prune(model, calibration, device="cpu", allow_collapse=True, **kwargs)  # collapses are counted
    pruned = copy.deepcopy(result.model)
    before = evaluate(pruned, data.test)
    start = time.perf_counter()
    train(pruned, data.train, RECIPES["mnist-retrain"].with_epochs(retrain_epochs), device="cpu", desc=label)
    return {
        "label": label,
        "reached": result.units_removed_fraction,
        "kept": "/".join(str(s.kept) for s in result.layers.values()),
        "collapsed": result.collapsed,
        "emptied": ",".join(result.collapsed_layers) or "-",
        "before": before,
        "after": evaluate(pruned, data.test),
        "prune_s": result.seconds,
        "retrain_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=RATIO_METHODS + ["mipp"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.8, 0.95])
    parser.add_argument("--mipp-confidences", nargs="+", type=float, default=[0.999, 0.9999])
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=1000, help="validation samples used to prune")
    parser.add_argument("--reinit-source", default="sosp", help="method whose architecture reinit re-initialises")
    parser.add_argument(
        "--also-per-layer", nargs="*", default=["l1"], help="methods also run with scope='layer' (Li et al. prune L1 per layer)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/infoprune-bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset("mnist")
    calibration = data.val.subset(args.calibration)
    model = trained_lenet5(data, args.train_epochs, args.cache)
    print(f"LeNet-5 pre-trained {args.train_epochs} epochs: test accuracy {evaluate(model, data.test):.4f}")
    print(f"re-training: {args.retrain_epochs} epochs of the MNIST recipe; calibration: {args.calibration} validation samples")
    header = f"{'method':<22}{'removed':>8}  {'kept c1/c2/f1/f2':<18}{'collapsed':<10}{'emptied':<18}{'acc pruned':>10}{'acc retrained':>14}{'prune s':>9}{'retrain s':>10}"
    print(header)
    print("-" * len(header))
    for method in args.methods:
        try:
            get_method(method)
        except (ValueError, ModuleNotFoundError):
            print(f"{method:<22}not available on this branch")
            continue
        if method == "mipp":
            settings = [(f"mipp c={c}", {"method": "mipp", "confidence": c}) for c in args.mipp_confidences]
        elif method == "reinit":
            settings = [
                (f"reinit({args.reinit_source}) r={r}", {"method": "reinit", "source": args.reinit_source, "ratio": r})
                for r in args.ratios
            ]
        else:
            settings = [(f"{method} r={r}", {"method": method, "ratio": r}) for r in args.ratios]
            if method in args.also_per_layer:
                settings += [(f"{method}/layer r={r}", {"method": method, "ratio": r, "scope": "layer"}) for r in args.ratios]
        for label, kwargs in settings:
            row = run(label, model, data, calibration, args.retrain_epochs, **kwargs)
            print(
                f"{row['label']:<22}{row['reached']:>8.3f}  {row['kept']:<18}{str(row['collapsed']):<10}{row['emptied']:<18}"
                f"{row['before']:>10.4f}{row['after']:>14.4f}{row['prune_s']:>9.1f}{row['retrain_s']:>10.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
