"""Command line: ``infoprune prune --model lenet5 --data mnist --method mipp --out DIR``."""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
from pathlib import Path
from typing import Any

from infoprune.methods import available_methods


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a Python literal when it is one (``4``, ``0.5``, ``True``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    from infoprune.data import DATASETS
    from infoprune.models import MODELS

    parser = argparse.ArgumentParser(prog="infoprune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prune = commands.add_parser("prune", help="train, prune, re-train and save a model")
    prune.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    prune.add_argument("--data", default="mnist", choices=sorted(DATASETS))
    prune.add_argument("--data-dir", help="directory of data sets read from disk (e.g. CIFAR)")
    prune.add_argument("--method", default="mipp", choices=available_methods())
    prune.add_argument("--out", required=True, type=Path, help="output folder")
    prune.add_argument("--confidence", type=float, help="MIPP: confidence x needed to keep a unit")
    prune.add_argument("--select-inputs", action="store_true", help="MIPP: also select input features")
    prune.add_argument("--ratio", type=float, help="fraction of units to remove (ratio-driven methods; MIPP: a budget)")
    prune.add_argument("--flops", type=float, help="FLOPs budget: fraction ≤ 1 or absolute (ITPruner, MIPP)")
    prune.add_argument("--params", type=float, help="parameter budget: fraction ≤ 1 or absolute")
    prune.add_argument("--set", dest="settings", action="append", default=[], type=parse_assignment,
                       metavar="KEY=VALUE", help="any other method parameter (repeatable)")
    prune.add_argument("--train-epochs", type=int, default=3, help="epochs before pruning (0: prune at init)")
    prune.add_argument("--retrain-epochs", type=int, default=2)
    prune.add_argument("--calibration-samples", type=int, default=2000)
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    prune.add_argument("--cache-dir", type=Path, help="cache trained base models here (default: OUT/cache)")

    sweep = commands.add_parser("sweep", help="run a grid of prune runs from a TOML config (resumable)")
    sweep.add_argument("config", type=Path, help="sweep config, e.g. configs/lenet5-mnist.toml")
    sweep.add_argument("--out", type=Path, help="output folder (default: runs/CONFIG-NAME)")
    sweep.add_argument("--max-runs", type=int, help="stop after this many runs (run the rest later)")
    sweep.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")

    report = commands.add_parser("report", help="plots and tables of a sweep's results")
    report.add_argument("dir", type=Path, help="the sweep's output folder")
    report.add_argument("--out", type=Path, help="where to write report.md and the PNGs (default: DIR/report)")

    commands.add_parser("list", help="list models, data sets and methods")
    return parser


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for flag in ("confidence", "ratio", "flops", "params"):
        if getattr(args, flag) is not None:
            params[flag] = getattr(args, flag)
    if args.select_inputs:
        params["select_inputs"] = True
    params.update(dict(args.settings))
    return params


def state_file(args: argparse.Namespace, params: dict[str, Any]) -> Path | None:
    """A state file under --out for methods that can resume (a ``checkpoint`` parameter)."""
    import inspect

    from infoprune.methods import get_method

    if "checkpoint" not in inspect.signature(get_method(args.method).__init__).parameters:
        return None
    params.setdefault("checkpoint", str(args.out / f"{args.method}-state.pt"))
    return Path(params["checkpoint"])


def command_prune(args: argparse.Namespace) -> int:
    from infoprune.experiments.pipeline import RunConfig, run
    from infoprune.io import atomic_write_json, save_pruned
    from infoprune.plots import plot_layer_ratios

    params = method_params(args)
    state = state_file(args, params)
    config = RunConfig(
        model=args.model,
        dataset=args.data,
        method=args.method,
        method_params=params,
        data_dir=args.data_dir,
        train_epochs=args.train_epochs,
        retrain_epochs=args.retrain_epochs,
        calibration_samples=args.calibration_samples,
        seed=args.seed,
        device=args.device,
        cache_dir=str(args.cache_dir or args.out / "cache"),
    )
    result, record = run(config)
    args.out.mkdir(parents=True, exist_ok=True)
    save_pruned(args.out / "pruned_model.pt", result.model, result.masks, result.input_mask)
    atomic_write_json(args.out / "summary.json", record)
    plot_layer_ratios(result.layers, args.out / "layer_ratios.png", f"{args.method} on {args.model} / {args.data}")
    if state is not None:
        state.unlink(missing_ok=True)  # done: an interrupted run would have continued from it
    acc = {k: record[k]["test"] for k in ("accuracy_original", "accuracy_pruned", "accuracy_retrained")}
    print(
        f"{args.method}: removed {100 * result.units_removed_fraction:.1f}% of units "
        f"({', '.join(f'{n} {s.kept}/{s.total}' for n, s in result.layers.items())}); "
        f"params {result.params_before} -> {result.params_after}; FLOPs {result.flops_before} -> {result.flops_after}\n"
        f"test accuracy: original {acc['accuracy_original']:.4f}, pruned {acc['accuracy_pruned']:.4f}, "
        f"re-trained {acc['accuracy_retrained']:.4f}; pruning took {record['prune_seconds']:.1f}s\n"
        f"wrote {args.out}/pruned_model.pt, summary.json, layer_ratios.png"
    )
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    from infoprune.experiments.sweep import run_sweep
    from infoprune.experiments.sweep_config import load_config

    config = load_config(args.config)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / args.config.stem
    try:
        outcome = run_sweep(config, out, config_text=args.config.read_text(), max_runs=args.max_runs)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are stored in {out}/results.sqlite; run the same command to go on")
        return 130
    print(
        f"{outcome.total} runs planned: {outcome.skipped} already done, {outcome.finished} finished now, "
        f"{outcome.failed} failed{' (stopped early: run the same command to go on)' if outcome.stopped_early else ''}\n"
        f"results in {out}/results.sqlite; next: infoprune report {out}"
    )
    return 1 if outcome.failed else 0


def command_report(args: argparse.Namespace) -> int:
    from infoprune.experiments.report import build_report

    print(f"wrote {build_report(args.dir, args.out)}")
    return 0


def command_list() -> int:
    from infoprune.data import DATASETS
    from infoprune.models import MODELS

    print("models:   " + ", ".join(sorted(MODELS)))
    print("data:     " + ", ".join(sorted(DATASETS)))
    print("methods:  " + ", ".join(available_methods()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("INFOPRUNE_PROGRESS", "1")
    try:
        if args.command == "prune":
            return command_prune(args)
        if args.command == "sweep":
            return command_sweep(args)
        if args.command == "report":
            return command_report(args)
        return command_list()
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"infoprune: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
