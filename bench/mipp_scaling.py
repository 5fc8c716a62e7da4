"""MIPP's cost against network size, per engine, in CPU seconds and training-epoch equivalents.

    python bench/mipp_scaling.py --out docs/results/mipp-scaling            # the committed grid
    python bench/mipp_scaling.py --nets mlp --widths 64 128 --engines gaussian fast --threads 1
    python bench/mipp_scaling.py --nets resnet50-imagenet --threads 2 --device cuda   # one GPU

Networks: MLPs 784-h-h-10 trained one epoch on real MNIST (``--widths``), pruned as a new user
would, ``prune(model, data, "mipp", confidence=0.9)`` on max(2000, 2h) training images; CIFAR-
shaped ResNet-20/56/18 and ResNet-50 at 224 × 224 (random init, Gaussian stand-in images: the
cost does not depend on what the images show), pruned to ``flops=0.5``, on twice the widest
group's units in images (MIPP's sample rule), at least 1024. Each run is its own process (so
peak memory is its own) at each of ``--threads``. Per run: wall and CPU seconds, the estimator's work (TERC
tests, and MLP optimiser steps for the MLP engines), peak resident memory, kept units per
group, FLOPs kept, and the time of one training epoch of the same network at the same
threads (MLPs: the measured MNIST epoch; CNNs: 20 SGD steps, after pruning so that they do not
count in its peak memory, extrapolated to 50,000 CIFAR images or 1,281,167 ImageNet images),
so that cost reads in epoch equivalents.

Writes ``runs.jsonl`` (appended run by run, so a stopped bench keeps what it finished),
``summary.txt`` (with the fitted cost exponent in width over the MLPs) and ``scaling.png``
(log-log cost against units) to ``--out``, over every run in its ``runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

CNNS = {  # name: (input size, images in one training epoch, SGD batch for the epoch estimate)
    "resnet20": (32, 50_000, 128),
    "resnet56": (32, 50_000, 128),
    "resnet18": (32, 50_000, 128),
    "vgg11": (32, 50_000, 128),
    "resnet50-imagenet": (224, 1_281_167, 32),
}


def run_one(spec: dict) -> dict:
    """One pruning run in this process (the child side); returns its record."""
    import infoprune
    from infoprune.models import build_model
    from infoprune.models.lenet import MLP
    from infoprune.training import train, recipe_for, evaluate

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = spec["device"]
    params = {"engine": spec["engine"], **spec["params"]}
    if spec["net"] == "mlp":
        from infoprune.data import load_dataset

        data = load_dataset("mnist")
        model = MLP((spec["width"], spec["width"]))
        start = time.process_time()
        train(model, data.train, recipe_for("mnist", retrain=False, epochs=1), device, seed=0, desc="epoch")
        epoch = time.process_time() - start
        calibration = data.train.subset(max(2000, 2 * spec["width"]), seed=1)
        accuracy = evaluate(model, data.test)
    else:
        size, epoch_images, batch = CNNS[spec["net"]]
        model = build_model(spec["net"])
        widest = max(module.out_channels for module in model.modules() if isinstance(module, torch.nn.Conv2d))
        calibration = torch.randn(max(2 * widest, 1024), 3, size, size, generator=torch.Generator().manual_seed(1))
        accuracy = None
    wall, cpu = time.perf_counter(), time.process_time()
    result = infoprune.prune(model, calibration, "mipp", device=device, progress=None, **params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before the epoch estimate's training steps
    samples = len(calibration)
    if spec["net"] != "mlp":
        del calibration
        epoch = _epoch_seconds(model, size, epoch_images, batch, device)
    layers = result.details["layers"]
    return {
        **spec,
        "units": sum(summary.total for summary in result.layers.values()),
        "samples": samples,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "epoch_cpu_seconds": epoch,
        "epoch_equivalents": cpu / epoch,
        "tests": sum(len(layer["confidence_worse"]) for layer in layers.values()),
        "mlp_iterations": result.details["iterations"],
        "passes": result.details.get("passes", 1),
        "seconds_parts": result.details["seconds"],
        "peak_memory_gib": peak,
        "kept": {name: summary.kept for name, summary in result.layers.items()},
        "flops_kept": result.flops_after / result.flops_before,
        "accuracy_before": accuracy,
    }


def _epoch_seconds(model: torch.nn.Module, size: int, images: int, batch: int, device: str, steps: int = 20) -> float:
    """CPU seconds of one training epoch of ``images``, from ``steps`` SGD steps (after 2 warm-up steps)."""
    model = model.to(device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(10, (batch,), device=device)

    def step() -> None:
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimiser.step()

    for _ in range(2):
        step()
    start = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - start) / (steps * batch) * images


def plan(args: argparse.Namespace) -> list[dict]:
    specs = []
    for engine in args.engines:
        for threads in args.threads:
            if "mlp" in args.nets:
                for width in args.widths:
                    if engine == "gaussian" or width <= args.mlp_engine_widest:
                        specs.append({"net": "mlp", "width": width, "engine": engine, "threads": threads,
                                      "params": {"confidence": 0.9}, "device": args.device})
            for net in (n for n in args.nets if n in CNNS):
                if engine == "gaussian" or net in args.mlp_engine_nets:  # MLP engines: hours to days on CPU
                    specs.append({"net": net, "engine": engine, "threads": threads, "params": {"flops": 0.5},
                                  "device": args.device})
    return specs


def summarise(records: list[dict]) -> str:
    lines = []
    for record in records:
        name = record["net"] + (f" h={record['width']}" if record["net"] == "mlp" else "")
        lines.append(
            f"{name:20s} {record['engine']:8s} {record['threads']} thr: {record['cpu_seconds']:8.1f} s CPU "
            f"{record['wall_seconds']:8.1f} s wall, {record['epoch_equivalents']:7.3f} epochs "
            f"(epoch {record['epoch_cpu_seconds']:.0f} s CPU), {record['units']} units, {record['samples']} samples, "
            f"{record['tests']} tests, {record['mlp_iterations']:,} MLP iterations, {record['passes']} passes, "
            f"peak {record['peak_memory_gib']:.2f} GiB, FLOPs kept {100 * record['flops_kept']:.1f} %"
        )
    for engine in sorted({r["engine"] for r in records}):
        for threads in sorted({r["threads"] for r in records}):
            mlps = [r for r in records if r["net"] == "mlp" and r["engine"] == engine and r["threads"] == threads]
            if len(mlps) >= 2:
                widest = sorted(mlps, key=lambda r: r["width"])[-2:]
                lines.append(f"cost exponent in width, MLPs, {engine}, {threads} thread(s): {exponent(mlps):.2f} "
                             f"(least squares of log CPU s on log h, h = {[r['width'] for r in mlps]}); "
                             f"between the two widest: {exponent(widest):.2f}")
    return "\n".join(lines)


def exponent(records: list[dict]) -> float:
    xs = [math.log(r["width"]) for r in records]
    ys = [math.log(r["cpu_seconds"]) for r in records]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for engine in sorted({r["engine"] for r in records}):
        for threads in sorted({r["threads"] for r in records}):
            chosen = sorted((r for r in records if r["engine"] == engine and r["threads"] == threads), key=lambda r: r["units"])
            if chosen:
                axis.plot([r["units"] for r in chosen], [r["cpu_seconds"] for r in chosen], "o-", label=f"{engine}, {threads} thr")
                for r in chosen:
                    if r["net"] != "mlp":
                        axis.annotate(r["net"], (r["units"], r["cpu_seconds"]), fontsize=7)
    axis.set(xscale="log", yscale="log", xlabel="prunable units", ylabel="CPU seconds (MIPP)", title="MIPP cost against network size")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["mlp", *CNNS], choices=["mlp", *CNNS])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--engines", nargs="+", default=["gaussian"], choices=["gaussian", "fast", "reference"])
    parser.add_argument("--mlp-engine-widest", type=int, default=128, help="MLP engines run on MLPs up to this width")
    parser.add_argument("--mlp-engine-nets", nargs="*", default=[], choices=list(CNNS), help="CNNs the MLP engines run on too")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take before it is stopped and reported")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/mipp-scaling")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this JSON spec and print its record
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for spec in plan(args):
        try:
            child = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                                   timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{spec}: did not finish in {args.timeout:.0f} s (stopped)", flush=True)
            continue
        if child.returncode != 0:
            print(f"{spec}: failed\n{child.stderr[-2000:]}", flush=True)
            continue
        record = json.loads(child.stdout.strip().splitlines()[-1])
        records.append(record)
        with open(out / "runs.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(summarise([record]).splitlines()[0], flush=True)
    everything = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()] if records else []
    if everything:  # every run in the folder, also those of earlier invocations
        (out / "summary.txt").write_text(summarise(everything) + "\n")
        plot(everything, out / "scaling.png")
        print(summarise(everything))


if __name__ == "__main__":
    main()
