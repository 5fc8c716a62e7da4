"""Wall time of MIPP on CIFAR-shaped CNNs, split into activation recording, ordering and TERC.

MIPP reports its phases in ``result.details["seconds"]`` ({"recording", "ordering", "terc"}).
Networks are randomly initialised and the calibration inputs are Gaussian noise of shape
(N, 3, 32, 32): the cost depends on the widths, the sample count and the iteration counts,
not on what the network learnt (though how many units TERC tests does not change with the
weights, how many it removes does, and with it the size of later fits).

Paper settings (MIPP App. D.3.2): 1500 fit iterations, 35 ordering iterations, 20 re-fit
iterations for VGG and 150 for the others; they are the defaults here, with 1024 calibration
samples (MIPP asks for twice the widest layer, 512 units in both networks). Those take minutes
on a GPU and far longer on a CPU; scale them down with the options and say so when you report
the numbers. Each layer's time is printed as MIPP finishes it, so a cut-short run still
gives the rate.

    python bench/mipp_cnn_timing.py --models vgg11 resnet18 --device cuda
    python bench/mipp_cnn_timing.py --fit-iterations 300 --refit-iterations 5 \
        --ordering-iterations 10 --device cpu --threads 8

Measured (H100 80GB, torch 2.11, random init; seconds, total = recording + ordering + TERC):

    model     samples  fit/refit/order  device       total  recording  ordering   TERC  units kept
    vgg11        512   1500/20/35       cuda         170.3     0.17       5.1    164.8  1001/3264
    resnet18     512   1500/150/35      cuda         401.6     0.18       3.6    397.5   996/1920
    vgg11        512   300/5/10         cuda          60.5     0.11       2.5     57.8   695/3264
    resnet18     512   300/5/10         cuda          35.2     0.05       2.4     32.7   138/1920
    vgg11        512   300/5/10         cpu (8 thr)  118.8     0.45      11.7    106.6   758/3264
    resnet18     512   300/5/10         cpu (8 thr)   85.0     1.53      11.3     72.2   151/1920
    vgg11       1024   300/5/10         cuda          72.3     0.04       3.0     69.2  1084/3264
    resnet18    1024   300/5/10         cuda          39.1     0.23       2.8     35.8   281/1920

TERC (the per-unit paired re-fits) is 93-99% of the time; recording is negligible. The 512-
sample rows predate MIPP's 2×-widest-layer sample rule; 1024 samples cost about 17% more.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import infoprune
from infoprune.models import MODELS, build_model
from infoprune.validation import resolve_device

PAPER_REFIT_ITERATIONS = {"vgg": 20, "other": 150}


class LayerClock:
    """A progress "bar" that prints the wall time and unit count of each layer as MIPP leaves it
    (MIPP names the layer in the bar's description), so a run cut short still tells its rate."""

    def __init__(self, total: int | None = None, desc: str = "") -> None:
        self.layer, self.units, self.since = desc, 0, time.perf_counter()

    def set_description(self, desc: str) -> None:
        if desc != self.layer:
            self._report()
            self.layer, self.units, self.since = desc, 0, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.units += n

    def set_postfix_str(self, _text: str) -> None:
        pass

    def close(self) -> None:
        self._report()

    def _report(self) -> None:
        if self.units:
            print(f"#   {self.layer}: {self.units} units in {time.perf_counter() - self.since:.1f} s", flush=True)


def time_model(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = build_model(name).eval()
    inputs = torch.randn(args.samples, *MODELS[name].input_shape, generator=torch.Generator().manual_seed(args.seed))
    refit = args.refit_iterations
    if refit is None:
        refit = PAPER_REFIT_ITERATIONS["vgg" if name.startswith("vgg") else "other"]
    settings = {
        "fit_iterations": args.fit_iterations,
        "refit_iterations": refit,
        "ordering_iterations": args.ordering_iterations,
        "confidence": args.confidence,
    }
    if args.repeats is not None:
        settings["repeats"] = args.repeats
    start = time.perf_counter()
    print(f"# {name} {settings}", flush=True)
    result = infoprune.prune(
        model, inputs, method="mipp", device=args.device, seed=args.seed, progress=LayerClock, **settings
    )
    total = time.perf_counter() - start
    phases = result.details.get("seconds", {})
    return {
        "model": name,
        "device": str(args.device),
        "samples": args.samples,
        **settings,
        "prune_call_s": round(total, 2),
        "decide_s": round(result.seconds, 2),
        **{f"{phase}_s": round(float(seconds), 2) for phase, seconds in phases.items()},
        "units_before": sum(layer.total for layer in result.layers.values()),
        "units_after": sum(layer.kept for layer in result.layers.values()),
        "params_before": result.params_before,
        "params_after": result.params_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18"], choices=sorted(MODELS))
    parser.add_argument("--samples", type=int, default=1024, help="calibration samples")
    parser.add_argument("--fit-iterations", type=int, default=1500)
    parser.add_argument("--refit-iterations", type=int, default=None, help="default: 20 for VGG, 150 otherwise")
    parser.add_argument("--ordering-iterations", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=None, help="default: MIPP's own")
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--device", default=str(resolve_device(None)))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (keep 1 on shared machines)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {cpu}, threads {args.threads}, GPU {gpu}")
    rows = []
    for name in args.models:
        row = time_model(name, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
