"""Command line: ``infoprune prune --model lenet5 --data mnist --method METHOD --out DIR``.

A method's own flags come from its class (:attr:`infoprune.methods.PruningMethod.cli_options`),
read for the ``--method`` given, so this module names no method.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infoprune.experiments.pipeline import Training
from infoprune.methods import DEFAULT_METHOD, available_methods, get_method
from infoprune.network import BUDGET_ARGUMENTS
from infoprune.validation import count_argument

DEFAULTS = Training()
"""The training settings ``infoprune prune`` uses where its options are not given."""

if TYPE_CHECKING:
    from infoprune.experiments.sweep import Executor


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


def build_parser(method: str = DEFAULT_METHOD) -> argparse.ArgumentParser:
    """The parser; ``prune`` offers ``method``'s own flags (:func:`parse_arguments` picks the
    method named on the command line)."""
    from infoprune.data import DATASETS
    from infoprune.models import MODELS

    parser = argparse.ArgumentParser(prog="infoprune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prune = commands.add_parser("prune", help="train, prune, re-train and save a model")
    prune.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    prune.add_argument("--data", default="mnist", choices=sorted(DATASETS))
    prune.add_argument("--data-dir", help="directory of data sets read from disk (e.g. CIFAR)")
    prune.add_argument("--method", default=DEFAULT_METHOD, choices=available_methods())
    prune.add_argument("--out", required=True, type=Path, help="output folder")
    for option in get_method(method).cli_options:
        if option.kind is bool:
            prune.add_argument(option.flag, dest=option.parameter, action="store_true", help=f"{method}: {option.help}")
        else:
            prune.add_argument(option.flag, dest=option.parameter, type=option.kind, help=f"{method}: {option.help}")
    prune.add_argument("--ratio", type=float, help="budget: the fraction of prunable units removed")
    prune.add_argument("--flops", type=float, help="budget: the FLOPs kept, a fraction ≤ 1 of the full model's or an absolute count")
    prune.add_argument("--params", type=float, help="budget: the parameters kept, a fraction ≤ 1 or an absolute count")
    prune.add_argument("--set", dest="settings", action="append", default=[], type=parse_assignment,
                       metavar="KEY=VALUE", help="any other method parameter (repeatable)")
    prune.add_argument("--train-epochs", type=count_argument(0), default=DEFAULTS.train_epochs, help="epochs before pruning (0: prune at init)")
    prune.add_argument("--retrain-epochs", type=count_argument(0), default=DEFAULTS.retrain_epochs)
    prune.add_argument("--calibration-samples", type=count_argument(1), default=DEFAULTS.calibration_samples)
    prune.add_argument("--seed", type=count_argument(0), default=0)
    prune.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    prune.add_argument("--cache-dir", type=Path, help="cache trained base models here (default: OUT/cache)")
    prune.add_argument("--weights", type=Path,
                       help="prune this checkpoint (.pth state dict or .safetensors) instead of training")
    prune.add_argument("--allow-collapse", action="store_true",
                       help="return the pruned model even when the budget disconnects the network (default: refuse)")
    prune.add_argument("--characterise", action="store_true",
                       help="also record ECE and adversarial accuracy, original and pruned (MINT §IV-E)")
    prune.add_argument("--compensate", action="store_true",
                       help="re-fit the layers that read pruned units by least squares (prune(..., compensate=True))")

    sweep = commands.add_parser("sweep", help="run a grid of prune runs from a TOML config (resumable)")
    sweep.add_argument("config", type=Path, help="sweep config, e.g. configs/lenet5-mnist.toml")
    sweep.add_argument("--out", type=Path, help="output folder (default: runs/CONFIG-NAME)")
    sweep.add_argument("--max-runs", type=count_argument(0), help="stop after this many runs (run the rest later)")
    sweep.add_argument("--threads", type=count_argument(1), help="torch CPU threads (of each run with --workers; default: torch's choice)")
    sweep.add_argument("--workers", type=count_argument(1), help="runs at once, as Ray tasks (needs infoprune[ray]; default: 1, "
                       "or as many as the --ray-address cluster fits)")
    sweep.add_argument("--ray-address", help="run on this Ray cluster, e.g. ray://head:10001 or auto (needs infoprune[ray])")

    characterise = commands.add_parser(
        "characterise", help="calibration, adversarial accuracy and Grad-CAM of prune runs (MINT §IV-E)"
    )
    characterise.add_argument("runs", nargs="+", type=Path, help="run folders of `infoprune prune` (one base model)")
    characterise.add_argument("--out", type=Path, help="output folder (default: FIRST_RUN/characterisation)")
    characterise.add_argument("--samples", type=count_argument(1), default=500, help="test images characterised per model")
    characterise.add_argument("--device", default="cpu", help="cpu or cuda")

    report = commands.add_parser("report", help="plots and tables of a sweep's results")
    report.add_argument("dir", type=Path, help="the sweep's output folder")
    report.add_argument("--out", type=Path, help="where to write report.md and the PNGs (default: DIR/report)")

    export = commands.add_parser("export", help="write a pruned model (a `prune` output folder) as ONNX")
    export.add_argument("dir", type=Path, help="the folder `infoprune prune --out` wrote")
    export.add_argument("--onnx", required=True, type=Path, help="the ONNX file to write, e.g. model.onnx")

    commands.add_parser("list", help="list models, data sets and methods")
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with the flags of the method it names (``prune --method``; the default otherwise)."""
    argv = sys.argv[1:] if argv is None else argv
    method = DEFAULT_METHOD
    if argv[:1] == ["prune"]:
        finder = argparse.ArgumentParser(add_help=False)
        finder.add_argument("--method", default=DEFAULT_METHOD)
        named = finder.parse_known_args(argv[1:])[0].method
        method = named if named in available_methods() else DEFAULT_METHOD  # an unknown name: the full parser refuses it
    return build_parser(method).parse_args(argv)


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """The method's parameters from the command line: its own flags, the budgets, then ``--set``."""
    params: dict[str, Any] = {}
    for option in get_method(args.method).cli_options:
        value = getattr(args, option.parameter, None)
        if value is not None and value is not False:  # a switch left off keeps the method's default
            params[option.parameter] = value
    params.update({flag: getattr(args, flag) for flag in BUDGET_ARGUMENTS if getattr(args, flag) is not None})
    params.update(dict(args.settings))
    return params


def prepare_out(folder: Path, what: str = "--out") -> None:
    """Create the output folder, or a clear error when it cannot be one or is not writable
    (checked before any work)."""
    from infoprune.io import check_writable

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{what} {folder} is (or lies inside) an existing file, not a folder; pass a folder.") from None
    except PermissionError:
        raise ValueError(f"{what} {folder} cannot be created here (permission denied); pass a writable folder.") from None
    check_writable(folder, what)


def state_file(args: argparse.Namespace, params: dict[str, Any]) -> Path | None:
    """A state file under --out for methods that can resume (:attr:`PruningMethod.resumable`)."""
    resumable = get_method(args.method).resumable
    if resumable is None:
        return None
    params.setdefault(resumable.parameter, str(args.out / f"{args.method}-state.pt"))
    return Path(params[resumable.parameter])


def command_prune(args: argparse.Namespace) -> int:
    from infoprune.io import exclusive_folder

    prepare_out(args.out)  # before the run: an unusable --out must not cost the work
    with exclusive_folder(args.out, PRUNE_LOCK, "infoprune prune"):  # one run per folder at a time
        return _prune_into(args)


PRUNE_LOCK = ".prune.lock"
"""Held in ``--out`` while ``infoprune prune`` runs there (see :func:`infoprune.io.exclusive_folder`)."""


def _prune_into(args: argparse.Namespace) -> int:
    """The body of ``infoprune prune``, run while holding the ``--out`` folder's lock."""
    import torch

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
        weights=None if args.weights is None else str(args.weights),
        characterise=args.characterise,
        compensate=args.compensate,
    )
    if args.cache_dir is not None:
        prepare_out(args.cache_dir, "--cache-dir")
    try:
        result, record = run(config, allow_collapse=args.allow_collapse)
    except KeyboardInterrupt:
        kept = f"finished training epochs are kept in {config.cache_dir}" + (
            f" and {get_method(args.method).resumable.holds} in {state}" if state is not None else "")
        print(f"interrupted: no result written to {args.out}; {kept}, run the same command to go on")
        return 130
    example = torch.zeros(1, *record.input_shape)
    save_pruned(args.out / "pruned_model.pt", result.model, result.masks, result.input_mask, example)
    atomic_write_json(args.out / "summary.json", record.to_json())
    plot_layer_ratios(result.layers, args.out / "layer_ratios.png", f"{args.method} on {args.model} / {args.data}")
    if state is not None:
        state.unlink(missing_ok=True)  # done: an interrupted run would have continued from it
    acc = {k: getattr(record, k).test for k in ("accuracy_original", "accuracy_pruned", "accuracy_retrained")}
    if result.collapsed:
        print(f"WARNING: the pruned network collapsed: no input-output path survives (the model outputs a constant); "
              f"layers that lost every unit: {result.collapsed_layers}")
    elif result.collapsed_layers:
        print(f"WARNING: layers {result.collapsed_layers} lost every unit (a path from the input to the output survives)")
    print(
        f"{args.method}: removed {100 * result.units_removed_fraction:.1f}% of units "
        f"({', '.join(f'{n} {s.kept}/{s.total}' for n, s in result.layers.items())}); "
        f"params {result.params_before} -> {result.params_after}; FLOPs {result.flops_before} -> {result.flops_after}\n"
        f"test accuracy: original {acc['accuracy_original']:.4f}, pruned {acc['accuracy_pruned']:.4f}, "
        f"re-trained {acc['accuracy_retrained']:.4f}; pruning took {record.prune_seconds:.1f}s\n"
        f"wrote {args.out}/pruned_model.pt, summary.json, layer_ratios.png"
    )
    return 0


def sweep_executor(args: argparse.Namespace) -> Executor:
    """One run at a time in this process, or Ray tasks with ``--workers`` > 1 / ``--ray-address``."""
    from infoprune.experiments.sweep import run_sequentially

    if args.workers in (None, 1) and args.ray_address is None:
        return run_sequentially
    from infoprune.experiments.parallel import RayExecutor

    return RayExecutor(workers=args.workers, address=args.ray_address, threads=args.threads)


def command_sweep(args: argparse.Namespace) -> int:
    from infoprune.experiments.sweep import run_sequentially, run_sweep
    from infoprune.experiments.sweep_config import load_config

    config = load_config(args.config)
    try:
        executor = sweep_executor(args)
    except ImportError as error:  # Ray is not installed
        print(f"infoprune: error: {error}", file=sys.stderr)
        return 2
    if args.threads and executor is run_sequentially:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / args.config.stem
    prepare_out(out)
    try:
        outcome = run_sweep(config, out, config_text=args.config.read_text(), max_runs=args.max_runs, executor=executor)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are stored in {out}/results.sqlite; run the same command to go on")
        return 130
    print(
        f"{outcome.total} runs planned: {outcome.skipped} already done, {outcome.finished} finished now, "
        f"{outcome.failed} failed{' (stopped early: run the same command to go on)' if outcome.stopped_early else ''}\n"
        f"results in {out}/results.sqlite; next: infoprune report {out}"
    )
    return 1 if outcome.failed else 0


def command_characterise(args: argparse.Namespace) -> int:
    from infoprune.experiments.characterise import characterise_runs

    print(f"wrote {characterise_runs(args.runs, args.out, samples=args.samples, device=args.device)}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from infoprune.experiments.report import build_report

    print(f"wrote {build_report(args.dir, args.out)}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    import torch

    from infoprune.experiments.pipeline import architecture, read_summary
    from infoprune.io import export_onnx, load_pruned

    summary, weights = args.dir / "summary.json", args.dir / "pruned_model.pt"
    if not (summary.is_file() and weights.is_file()):
        raise FileNotFoundError(f"{args.dir} has no summary.json and pruned_model.pt: pass a folder `infoprune prune --out` wrote.")
    record = read_summary(summary)
    shape = record.input_shape
    unpruned = architecture(record.config["model"], record.num_classes, shape[0])
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    exported = export_onnx(load_pruned(weights, unpruned, example), example, args.onnx)
    print(
        f"wrote {exported.path} (ONNX opset {exported.opset}); ONNX Runtime matches torch on the example input "
        f"to {exported.max_abs_error:.2g}"
    )
    return 0


def command_list() -> int:
    from infoprune.data import DATASETS
    from infoprune.models import MODELS

    print("models:   " + ", ".join(sorted(MODELS)))
    print("data:     " + ", ".join(sorted(DATASETS)))
    print("methods:  " + ", ".join(available_methods()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("INFOPRUNE_PROGRESS", "1")
    try:
        if args.command == "prune":
            return command_prune(args)
        if args.command == "sweep":
            return command_sweep(args)
        if args.command == "report":
            return command_report(args)
        if args.command == "characterise":
            return command_characterise(args)
        if args.command == "export":
            return command_export(args)
        return command_list()
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:  # our own errors
        print(f"infoprune: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
