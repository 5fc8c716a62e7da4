"""MIPP on trained LeNet-5 / real MNIST: wall time, units kept per layer, accuracy.

    python bench/mipp_lenet5.py [--confidences 0.5 0.9 0.99] [--train-epochs 3] [--retrain-epochs 2]

Uses the paper's iteration counts (App. D.3.2: 1500 / 150 / 35, MLP 2×256, 5 repeats) unless
overridden. The trained base model is cached in --cache-dir, so later runs skip training.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from infoprune.data import load_dataset
from infoprune.experiments.pipeline import RunConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.5, 0.9, 0.99])
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--calibration-samples", type=int, default=2000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the records to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset("mnist")
    records = []
    for confidence in args.confidences:
        config = RunConfig(
            model="lenet5",
            dataset="mnist",
            method="mipp",
            method_params={"confidence": confidence},
            train_epochs=args.train_epochs,
            retrain_epochs=args.retrain_epochs,
            calibration_samples=args.calibration_samples,
            device=args.device,
            cache_dir=args.cache_dir,
        )
        start = time.perf_counter()
        result, record = run(config, data)
        records.append({**record.to_json(), "total_seconds": time.perf_counter() - start})
        seconds = result.details["seconds"]
        kept = ", ".join(f"{n} {s.kept}/{s.total}" for n, s in result.layers.items())
        print(
            f"confidence {confidence}: MIPP {record.prune_seconds:.1f}s "
            f"(recording {seconds['recording']:.1f}, ordering {seconds['ordering']:.1f}, TERC {seconds['terc']:.1f}) "
            f"on {record.device} with {torch.get_num_threads()} threads\n"
            f"  kept {kept}; units removed {100 * result.units_removed_fraction:.1f}%; "
            f"params {result.params_before} -> {result.params_after}\n"
            f"  test accuracy: original {record.accuracy_original.test:.4f}, "
            f"pruned {record.accuracy_pruned.test:.4f}, "
            f"re-trained ({args.retrain_epochs} epochs) {record.accuracy_retrained.test:.4f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=2)


if __name__ == "__main__":
    main()
