"""ITPruner numbers for the closing note of issue 6.

1. LeNet-5 / MNIST: train a base model briefly, prune with ITPruner at 50 % and 25 % of its
   FLOPs, re-train briefly, report test accuracy before and after re-training.
2. ResNet20 at CIFAR shape (3×32×32, untrained weights, Gaussian inputs): the solved widths
   at 48 % of FLOPs with β = 246 (the paper's ResNet-20 setting: 20M of 41.6M) and the time
   the SLSQP solve and the whole decision take.

Run from the repository root:  PYTHONPATH=src python bench/itpruner.py [--part lenet|resnet20]
Defaults are short (a few minutes on one CPU thread); raise the epochs for paper-like runs.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import infoprune
from infoprune.data import load_dataset
from infoprune.models import build_model
from infoprune.training import evaluate, get_recipe, train


def lenet(base_epochs: int, retrain_epochs: int, budgets: list[float], beta: float) -> None:
    data = load_dataset("mnist")
    recipe = get_recipe("mnist")
    torch.manual_seed(0)
    model = build_model("lenet5")
    start = time.perf_counter()
    train(model, data.train, recipe.with_epochs(base_epochs), device="cpu", desc="base")
    base_accuracy = evaluate(model, data.test)
    print(f"LeNet-5 base: {base_epochs} epochs ({time.perf_counter() - start:.0f} s), test accuracy {base_accuracy:.4f}")
    reference = copy.deepcopy(model)
    train(reference, data.train, get_recipe("mnist-retrain").with_epochs(retrain_epochs), device="cpu", desc="reference")
    print(f"  unpruned, trained {retrain_epochs} more epochs like the pruned ones: {evaluate(reference, data.test):.4f}")
    calibration = data.val.subset(100, seed=0)
    for budget in budgets:
        result = infoprune.prune(model, calibration, method="itpruner", device="cpu", flops=budget, beta=beta)
        pruned_accuracy = evaluate(result.model, data.test)
        train(result.model, data.train, get_recipe("mnist-retrain").with_epochs(retrain_epochs), device="cpu", desc="retrain")
        print(
            f"  FLOPs ≤ {budget:.0%} (β={beta:g}): widths {result.details['widths']}, "
            f"FLOPs {result.flops_after:,}/{result.flops_before:,} ({result.flops_after / result.flops_before:.1%}), "
            f"params {result.params_after:,}/{result.params_before:,}; test accuracy pruned {pruned_accuracy:.4f}, "
            f"after {retrain_epochs} re-training epochs {evaluate(result.model, data.test):.4f}"
        )


def resnet20(beta: float, budget: float) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    inputs = torch.randn(100, 3, 32, 32)
    result = infoprune.prune(model, inputs, method="itpruner", device="cpu", flops=budget, beta=beta)
    details = result.details
    print(
        f"ResNet20 (CIFAR shape, untrained): FLOPs {result.flops_before:,} -> {result.flops_after:,} "
        f"({result.flops_after / result.flops_before:.1%}, budget {budget:.0%}, β={beta:g})"
    )
    for name, width in details["widths"].items():
        print(
            f"  {name:28s} {width:3d}/{result.layers[name].total:3d}  x*={details['multipliers'][name]:.3f}  "
            f"α={details['importance'][name]:.3g}"
        )
    print(
        f"  SLSQP: {details['solver']['message']} in {details['solver']['iterations']} iterations, "
        f"{details['solver']['seconds'] * 1e3:.1f} ms; whole decision (activations, nHSIC, budget forms, "
        f"solve, rounding) {result.seconds:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "lenet", "resnet20"), default="all")
    parser.add_argument("--base-epochs", type=int, default=4)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--lenet-beta", type=float, default=1.0)
    parser.add_argument("--resnet-beta", type=float, default=246.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part in ("all", "lenet"):
        lenet(args.base_epochs, args.retrain_epochs, [0.5, 0.25], args.lenet_beta)
    if args.part in ("all", "resnet20"):
        resnet20(args.resnet_beta, 0.48)


if __name__ == "__main__":
    main()
