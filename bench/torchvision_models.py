"""torchvision's ConvNeXt-Tiny, ShuffleNetV2, Swin-T and ViT-B/16 pruned by every method (issue 24).

For each model (``num_classes=10``, random initialisation, 64 × 64 inputs, ViT-B/16 at 224 × 224;
a calibration set of ``--samples`` random inputs with random labels): the analysis time, the
groups found (by kind) and those left whole with their reasons, then for every method (its
``QUICK_SETTINGS``: ``ratio=0.5`` for the ranked methods, ``flops=0.5`` for ITPruner) the
FLOPs kept, the largest |physical − masked| output difference over the calibration inputs
(surgery alone, as the tests compare: ThiNet's and reinit's weight steps after it change the
weights on purpose) and the CPU and wall seconds. A method that fails or runs past ``--limit`` seconds is reported so.

torchvision cannot be installed beside infoprune's own torch, so run it from an environment
that has torchvision (infoprune on ``PYTHONPATH``)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/torchvision_models.py --threads 1 > docs/results/torchvision-models.txt
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import torch
import torchvision

import infoprune
from infoprune.models.families import QUICK_SETTINGS
from infoprune.network import Network, primary_output

MODELS: dict[str, int] = {"convnext_tiny": 64, "shufflenet_v2_x1_0": 64, "swin_t": 64, "vit_b_16": 224}
"""torchvision model → input side."""


def build(name: str, samples: int, random_head: bool = False) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The randomly initialised model, ``samples`` random inputs and random labels (seeded);
    ``random_head``: ViT's classifier drawn at random instead of torchvision's zeros."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    if name == "vit_b_16" and random_head:  # torchvision zero-initialises it: every gradient below it is then 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    side = MODELS[name]
    return model, torch.randn(samples, 3, side, side), torch.randint(0, 10, (samples,))


class TooSlow(BaseException):
    """Raised by the alarm: a BaseException, so that no ``except Exception`` in the library takes it."""


def timed(call: Callable[[], object], limit: int) -> tuple[object, float, float]:
    """``call()``'s result (or the exception it raised, or TooSlow past ``limit`` s), CPU and wall seconds."""
    def expire(*_args: object) -> None:
        raise TooSlow(f"over {limit} s")

    signal.signal(signal.SIGALRM, expire)
    cpu, wall = time.process_time(), time.perf_counter()
    signal.alarm(limit)
    try:
        result = call()
    except (Exception, TooSlow) as error:  # reported in the table, the next method runs
        result = error
    finally:
        signal.alarm(0)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def analyse(name: str, samples: int, limit: int, random_head: bool) -> None:
    model, inputs, _ = build(name, samples, random_head)
    with torch.no_grad():
        before = model(inputs[:2])
    network, cpu, wall = timed(lambda: Network(model, inputs[:2]), limit)
    if isinstance(network, BaseException):
        print(f"## {name}: analysis failed after {wall:.1f} s: {type(network).__name__}: {network}")
        return
    kinds = Counter(g.kind for g in network.groups)
    reasons = Counter(reason.split(" (")[0] if "cannot follow" in reason else reason for reason in network.whole.values())
    print(f"## {name} ({MODELS[name]}×{MODELS[name]}): analysed in {cpu:.1f} CPU s ({wall:.1f} s wall); "
          f"{len(network.groups)} groups ({dict(kinds)}), {len(network.whole)} left whole")
    with torch.no_grad():
        change = float((model(inputs[:2]) - before).abs().max())
    replaced = Counter(type(m).__name__ for m in model.modules() if type(m).__module__ == "infoprune.network.layers")
    print(f"  modules replaced for analysis: {dict(replaced) or 'none'}; max output change {change:.0e}")
    for reason, count in reasons.most_common():
        print(f"  whole ×{count}: {reason[:160]}")


def prune_all(name: str, samples: int, limit: int, methods: list[str], random_head: bool) -> None:
    print(f"\n| {name} method | FLOPs kept | max abs(physical - masked) | CPU s | wall s |")
    print("|---|---|---|---|---|")
    for method in methods:
        model, inputs, labels = build(name, samples, random_head)
        options = dict(QUICK_SETTINGS[method], **({"samples": samples} if method == "itpruner" else {}))
        result, cpu, wall = timed(lambda: infoprune.prune(model, (inputs, labels), method=method, device="cpu",
                                                          progress=None, allow_collapse=True, **options), limit)
        if isinstance(result, BaseException):
            print(f"| {method} | {type(result).__name__}: {str(result)[:120]} | | {cpu:.0f} | {wall:.0f} |")
            continue
        network = Network(model, inputs[:2])
        with torch.no_grad():
            with network.masked(result.masks, result.input_mask):
                masked = primary_output(model(inputs))
            physical = primary_output(network.apply_masks(result.masks, result.input_mask)(inputs))
        diff = float((physical - masked).abs().max())
        print(f"| {method} | {result.flops_after / result.flops_before:.2f} | {diff:.0e} | {cpu:.0f} | {wall:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=sorted(QUICK_SETTINGS), choices=sorted(QUICK_SETTINGS))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--limit", type=int, default=300, help="seconds a method may run before it is reported as too slow")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--random-head", action="store_true",
                        help="ViT-B/16's classifier at random: torchvision's zeros make every gradient score 0 (NaN once normalised)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} thread(s), "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.samples} samples")
    for name in args.models:
        analyse(name, args.samples, args.limit, args.random_head)
        prune_all(name, args.samples, args.limit, args.methods, args.random_head)
        print()


if __name__ == "__main__":
    main()
