"""One-shot accuracy with and without least-squares compensation (``prune(..., compensate=True)``).

For runs of an equal-FLOPs sweep, prunes the sweep's cached base model again (the same
calibration data, seed and budget as the sweep's run) twice: as the sweep did, and with each
consumer's weights re-fitted to read the least-squares prediction of the removed units from the
kept ones (:mod:`infoprune.network.compensation`). Prints one JSON line per run: test accuracy
one-shot and compensated, each also with BatchNorm statistics re-estimated (None without
BatchNorm), the CPU seconds of each pruning call, and the sweep's own one-shot accuracy (the
first number must equal it).

    python bench/one_shot_compensation.py configs/research/equal-flops-lenet5-mnist.toml \
        runs/equal-flops-lenet5-mnist --labels mipp tp-magnitude tp-taylor thinet itpruner --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

import infoprune
from infoprune.data import load_dataset
from infoprune.experiments.pipeline import base_model, bn_recalibrated_accuracy, test_split, training_split
from infoprune.experiments.results import ResultStore
from infoprune.experiments.sweep import plan, run_config
from infoprune.experiments.sweep_config import load_config
from infoprune.training import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the sweep's config")
    parser.add_argument("sweep", help="the sweep's output folder (its cache holds the base models)")
    parser.add_argument("--labels", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: the sweep's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    store = ResultStore(Path(args.sweep), create=False)
    loaded = {}
    for planned in plan(config):
        if planned.label not in args.labels or (args.seeds and planned.seed not in args.seeds):
            continue
        params = {**planned.params, planned.level_param: planned.level_value}
        run = run_config(planned, config, params, Path(args.sweep) / "cache")
        key = (run.dataset, run.seed)
        if key not in loaded:
            loaded = {key: load_dataset(run.dataset, run.data_dir, seed=run.seed)}
        data = loaded[key]
        train, test = training_split(run, data), test_split(run, data)
        model = base_model(run, replace(data, train=train), torch.device("cpu")).eval()
        calibration = train.subset(run.calibration_samples, seed=run.seed + 1)
        measured = {}
        for compensate in (False, True):
            start = time.process_time()
            result = infoprune.prune(
                model, calibration, run.method, device="cpu", seed=run.seed, allow_collapse=True, progress=False,
                compensate=compensate, **params,
            )  # fmt: skip
            seconds = time.process_time() - start
            batchnorm = bn_recalibrated_accuracy(result.model, calibration.inputs, test)
            name = "compensated" if compensate else "one_shot"
            measured |= {name: evaluate(result.model, test), f"{name}_bn": None if batchnorm is None else batchnorm.test,
                         f"{name}_cpu_seconds": seconds}  # fmt: skip
        stored = store.get(planned.run_id)
        print(json.dumps({
            "label": planned.label, "seed": planned.seed, "flops": planned.level_value,
            "flops_kept": result.flops_after / result.flops_before, **measured,
            "sweep_one_shot": None if stored is None else stored[1].accuracy_pruned.test,
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
