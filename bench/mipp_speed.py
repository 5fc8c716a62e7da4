"""MIPP's engines side by side on trained LeNet-5 / real MNIST, and MIPP at FLOPs budgets.

    python bench/mipp_speed.py --threads 1                       # everything below
    python bench/mipp_speed.py --engines fast --seeds 0 --budgets # fast engine only, no budgets
    python bench/mipp_speed.py --engines gaussian --set copula=true  # the closed-form engine on normal scores
    python bench/mipp_speed.py --engines reference --jsonl ref.jsonl   # append records as they finish

One trained base model (3 epochs, seed 0, cached in --cache-dir) and one calibration set
(2000 training images) for every run; the MIPP seed varies (``--seeds``), so the spread over
seeds is the method's own. Paper counts (App. D.3.2: 1500 / 150 / 35, MLP 2×256, 5 repeats)
unless overridden. Per run it prints: wall time, MLP optimiser steps summed over predictors
("iterations"), units kept per layer, test accuracy after pruning and after ``--retrain-epochs``
of re-training (MNIST re-training recipe, seed 0). Budget runs add the confidence found and the
number of MIPP passes. Runs on CUDA when present (``--device`` to choose).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import infoprune
from infoprune.estimators.terc import ENGINES
from infoprune.data import load_dataset
from infoprune.experiments.pipeline import RunConfig, base_model, recipe_for
from infoprune.training import evaluate, train
from infoprune.validation import resolve_device
from records import append_record


def one_run(model, calibration, data, device, args, seed: int, **method_params) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    result = infoprune.prune(model, calibration, "mipp", device=device, seed=seed, progress=_silent, **method_params)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    pruned = result.model
    record = {
        "params": method_params,
        "seed": seed,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "iterations": result.details["iterations"],
        "kept": {name: summary.kept for name, summary in result.layers.items()},
        "layer_iterations": {name: layer["iterations"] for name, layer in result.details["layers"].items()},
        "seconds_parts": result.details["seconds"],
        "units_removed": result.units_removed_fraction,
        "flops_fraction": result.flops_after / result.flops_before,
        "confidence": result.details["confidence"],
        "passes": result.details.get("passes", 1),
        "accuracy_pruned": evaluate(pruned, data.test),
    }
    if args.retrain_epochs > 0:
        recipe = recipe_for("mnist", retrain=True, epochs=args.retrain_epochs)
        train(pruned, data.train, recipe, device, seed=0, transform=data.train_transform, desc="re-train")
    record["accuracy_retrained"] = evaluate(pruned, data.test)
    return record


def _silent(total=None, desc="", **_):
    class Bar:
        n = 0

        def update(self, k=1):
            self.n += k

        def set_description(self, _d):
            pass

        def set_postfix_str(self, _s):
            pass

        def close(self):
            pass

    return Bar()


def describe(record: dict) -> str:
    kept = " ".join(f"{n} {k}" for n, k in record["kept"].items())
    return (
        f"{json.dumps(record['params'])} seed {record['seed']}: {record['seconds']:.1f}s wall, {record['cpu_seconds']:.1f}s CPU, "
        f"{record['iterations']:,} MLP iterations, x={record['confidence']:.6g}, passes {record['passes']}, "
        f"kept [{kept}], units removed {100 * record['units_removed']:.1f}%, FLOPs {100 * record['flops_fraction']:.1f}%, "
        f"acc pruned {record['accuracy_pruned']:.4f} re-trained {record['accuracy_retrained']:.4f}"
    )


def summarise(records: list[dict], engine: str, confidence: float) -> str:
    runs = [r for r in records if r["params"].get("engine") == engine and r["params"].get("confidence") == confidence]
    if not runs:
        return ""
    layers = runs[0]["kept"]
    ranges = " ".join(f"{n} {min(r['kept'][n] for r in runs)}-{max(r['kept'][n] for r in runs)}" for n in layers)
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    return (
        f"{engine:9s} x={confidence}: {len(runs)} seeds, mean {mean('seconds'):.1f}s wall {mean('cpu_seconds'):.1f}s CPU, "
        f"{mean('iterations'):,.0f} iterations, kept {ranges}, re-trained acc {mean('accuracy_retrained'):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--confidences", type=float, nargs="*", default=[0.9, 0.999, 0.9999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.5, 0.25, 0.1], help="FLOPs budgets (first of --engines)")
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--calibration-samples", type=int, default=2000)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="another MIPP parameter for every run, e.g. refit_iterations=20")
    parser.add_argument("--device", default=None, help="default: CUDA when present")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--jsonl", help="append one JSON record per finished run to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.settings)}
    device = resolve_device(args.device)
    data = load_dataset("mnist")
    config = RunConfig(train_epochs=3, cache_dir=args.cache_dir, seed=0)
    model = base_model(config, data, device)
    calibration = data.train.subset(args.calibration_samples, seed=1)
    print(f"device {device}, {torch.get_num_threads()} threads; original test accuracy {evaluate(model, data.test):.4f}", flush=True)

    plan = [dict(engine=e, confidence=x) for e in args.engines for x in args.confidences]
    plan += [dict(engine=args.engines[0], flops=b) for b in args.budgets]
    runs = [(seed, params) for seed in args.seeds for params in plan if "confidence" in params or seed == args.seeds[0]]
    records = []
    for seed, params in runs:  # seed-major, so a run cut short has every level for the first seeds
        record = one_run(copy.deepcopy(model), calibration, data, device, args, seed, **params, **extra)
        records.append(record)
        print(describe(record), flush=True)
        append_record(args.jsonl, record)
    print("\nsummary")
    for engine in args.engines:
        for confidence in args.confidences:
            line = summarise(records, engine, confidence)
            if line:
                print(line)


if __name__ == "__main__":
    main()
