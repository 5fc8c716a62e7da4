"""MIPP's ``top_up`` from a sweep's stored budget runs, without running MIPP again.

    python bench/mipp_top_up.py runs/lenet5-mnist-spatial --label mipp-grid2 --threads 1

``top_up`` only changes the finish of a budget search: the walks, and so the stored masks and
per-unit TERC confidences of a ``top_up=False`` run, are those a ``top_up=True`` run computes
before topping up. For every stored run of ``--label`` this applies :func:`top_up` to its masks,
re-trains the pruned model exactly as the sweep does (its recipe, epochs, seed and training
split; the base model from the sweep's cache) and evaluates it; then Torch-Pruning's group-L2
magnitude at the FLOPs the topped-up masks keep (``--baseline``, through the sweep pipeline).
Prints one line per run and writes ``--jsonl`` records.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from infoprune.data import load_dataset
from infoprune.experiments import pipeline
from infoprune.experiments.results import ResultStore
from infoprune.experiments.sweep import decode_mask
from infoprune.methods.mipp import WalkOutcome, top_up, trim_by_cost, trim_or_fill
from infoprune.network import Budget, Network
from infoprune.training import evaluate, train
from records import append_record


def topped_up(record: dict, cache_dir: str | None, trim: str) -> dict:
    """Re-train the topped-up masks of one stored MIPP budget run; returns a summary.

    ``trim="cost"``: re-finish the search's closest walk (its per-layer ``kept`` lists) with
    :func:`trim_by_cost` first, as a ``trim="cost"`` run does, when that walk was over budget.
    """
    fields = {k: v for k, v in record.config.items() if k in pipeline.RunConfig.__dataclass_fields__}
    config = pipeline.RunConfig(**{**fields, "cache_dir": cache_dir or fields["cache_dir"]})
    device = torch.device("cpu")
    data = load_dataset(config.dataset, config.data_dir, seed=config.seed)
    split = pipeline.training_split(config, data)
    model = pipeline.base_model(config, replace(data, train=split), device)
    network = Network(model, split.inputs[:2])
    masks = {name: torch.tensor(decode_mask(text)) for name, text in record.masks.items()}
    units = {group.name: group.units for group in network.groups}
    budget = Budget.on(network, "flops", config.method_params["flops"])
    layers = record.pruning["details"]["layers"]
    outcome = WalkOutcome(record.pruning["details"]["confidence"], masks, None, layers)
    if trim == "cost" and record.pruning["details"].get("finish") == "trim":
        walk = {name: torch.zeros(units[name], dtype=torch.bool).index_fill_(0, torch.tensor(layers[name]["kept"]), True)
                for name in masks}
        start = replace(outcome, masks=walk)
        outcome = replace(outcome, masks=trim_or_fill(replace(start, masks=trim_by_cost(start, budget)), budget)[0])
    outcome = top_up(outcome, budget)
    pruned = network.apply_masks(outcome.masks)
    recipe = pipeline.recipe_for(config.dataset, retrain=True, epochs=config.retrain_epochs)
    train(pruned, split, recipe, device, seed=config.seed, transform=data.train_transform, desc="re-train")
    return {
        "run_id": record.run_id, "seed": config.seed, "flops_budget": config.method_params["flops"],
        "kept_before": {n: int(m.sum()) for n, m in masks.items()},
        "flops_before": budget.of_masks(masks) / budget.full,
        "accuracy_before": record.accuracy_retrained.test,
        "kept": {n: int(m.sum()) for n, m in outcome.masks.items()},
        "flops": budget.of_masks(outcome.masks) / budget.full,
        "accuracy": evaluate(pruned, data.test),
        "trim": trim,
        "config": config,
    }


def baseline(summary: dict, method: str) -> dict:
    """``method`` at the FLOPs fraction the topped-up masks keep, through the sweep's pipeline."""
    config = replace(summary["config"], method=method, method_params={"flops": summary["flops"]})
    _result, record = pipeline.run(config)
    layers = record.pruning["layers"]
    return {
        "kept": {n: v["kept"] for n, v in layers.items()},
        "flops": record.kept_fraction("flops"),
        "accuracy": record.accuracy_retrained.test,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep's output folder (results.sqlite)")
    parser.add_argument("--label", default="mipp-grid2", help="the MIPP entry whose runs to top up")
    parser.add_argument("--flops", type=float, nargs="*", help="only the runs at these FLOPs budgets")
    parser.add_argument("--trim", choices=["confidence", "cost"], default="confidence", help="the search's trim rule")
    parser.add_argument("--baseline", default="tp-magnitude", help="'' to skip the baseline")
    parser.add_argument("--cache-dir", help="base models (default: each run's own cache_dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jsonl", help="append one JSON record per run to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = [
        r for r in ResultStore(Path(args.sweep)).records()
        if r.label == args.label and (not args.flops or r.config["method_params"]["flops"] in args.flops)
    ]
    for record in sorted(records, key=lambda r: (r.config["method_params"]["flops"], r.seed)):
        summary = topped_up(record, args.cache_dir, args.trim)
        if args.baseline:
            summary["baseline"] = baseline(summary, args.baseline)
        summary.pop("config")
        print(json.dumps(summary), flush=True)
        append_record(args.jsonl, summary)


if __name__ == "__main__":
    main()
