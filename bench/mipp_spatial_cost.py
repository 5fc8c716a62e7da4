"""What MIPP's ``spatial`` grid costs: one MIPP walk on trained LeNet-5 / real MNIST per setting.

    python bench/mipp_spatial_cost.py --threads 1                          # spatial 1, 2, 4, flatten at x = 0.999
    python bench/mipp_spatial_cost.py --spatial 1 2 --confidence 0.9999

One trained base model (3 epochs, seed 0, cached in --cache-dir) and one calibration set (2000
training images). Per setting it prints the CPU time (``time.process_time``, contention-robust
with one thread) and wall time of the walk, the MLP optimiser steps summed over predictors, the
columns each layer is tested with, the units kept per layer and the FLOPs kept (no re-training).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import infoprune
from infoprune.data import load_dataset
from infoprune.experiments.pipeline import RunConfig, base_model
from records import append_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spatial", nargs="+", default=["1", "2", "4", "flatten"])
    parser.add_argument("--confidence", type=float, default=0.999)
    parser.add_argument("--counts", type=int, nargs=3, default=[300, 30, 10], metavar=("FIT", "REFIT", "ORDER"))
    parser.add_argument("--calibration-samples", type=int, default=2000)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jsonl", help="append one JSON record per setting to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist")
    model = base_model(RunConfig(train_epochs=3, cache_dir=args.cache_dir, seed=0), data, torch.device("cpu"))
    calibration = data.train.subset(args.calibration_samples, seed=1)
    fit, refit, order = args.counts
    for raw in args.spatial:
        spatial = raw if raw == "flatten" else int(raw)
        cpu, wall = time.process_time(), time.perf_counter()
        result = infoprune.prune(
            model, calibration, "mipp", confidence=args.confidence, spatial=spatial, fit_iterations=fit,
            refit_iterations=refit, ordering_iterations=order, device="cpu", progress=None,
        )
        record = {
            "spatial": spatial, "confidence": args.confidence, "cpu_seconds": round(time.process_time() - cpu, 1),
            "wall_seconds": round(time.perf_counter() - wall, 1), "iterations": result.details["iterations"],
            "kept": {name: s.kept for name, s in result.layers.items()},
            "flops_kept": round(result.flops_after / result.flops_before, 4),
        }
        print(json.dumps(record), flush=True)
        append_record(args.jsonl, record)


if __name__ == "__main__":
    main()
