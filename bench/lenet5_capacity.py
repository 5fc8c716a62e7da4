"""How accurate can a LeNet-5 of a given width be? Narrow LeNet-5s trained from scratch.

    python bench/lenet5_capacity.py --threads 1 --epochs 2 5 10 --widths 1/7/22/21
    python bench/lenet5_capacity.py --threads 1 --epochs 30 --widths 3/7/6/6 --pixels 196

A width is conv1/conv2/fc1/fc2 units (LeNet-5's shape otherwise). Each net is trained from
scratch with the MNIST recipe (SGD, lr 1e-2 decayed at 1/3 and 2/3 of the epochs, MIPP Table 2)
on all 50 000 training images, seed 0, and its test accuracy printed. ``--pixels k`` multiplies
the input by a fixed mask that keeps the k most variable training pixels, chosen as 2 × 2 patches
(k / 4 of them), as MIPP's ``input_patch=2`` does. It is the yardstick for the pruning targets at
high sparsity (issue 14): what a net of the pruned shape reaches without any pruning decision.
"""

from __future__ import annotations

import argparse

import torch

from infoprune.data import load_dataset
from infoprune.models.lenet import LeNet5
from infoprune.network.surgery import InputMasked
from infoprune.training import evaluate, recipe_for, train


def most_variable_patches(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """A 28 × 28 mask keeping the ``pixels`` / 4 most variable 2 × 2 patches of ``images``."""
    variance = images.float().var(0).reshape(14, 2, 14, 2).sum((1, 3)).flatten()
    keep = torch.zeros(196, dtype=torch.bool)
    keep[variance.argsort(descending=True)[: pixels // 4]] = True
    return keep.reshape(14, 14).repeat_interleave(2, 0).repeat_interleave(2, 1).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", nargs="+", required=True, help="conv1/conv2/fc1/fc2, e.g. 3/7/6/6")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10])
    parser.add_argument("--pixels", type=int, default=None, help="keep only this many pixels (a multiple of 4)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("mnist")
    mask = None if args.pixels is None else most_variable_patches(data.train.inputs, args.pixels)
    for spec in args.widths:
        widths = tuple(int(w) for w in spec.split("/"))
        for epochs in args.epochs:
            torch.manual_seed(0)
            model = LeNet5(widths=widths) if mask is None else InputMasked(LeNet5(widths=widths), mask)
            train(model, data.train, recipe_for("mnist", retrain=False, epochs=epochs), "cpu", seed=0,
                  transform=data.train_transform, desc=f"{spec}, {epochs} epochs")
            pixels = 784 if mask is None else int(mask.sum())
            print(f"widths {spec}, {pixels} pixels, {epochs} epochs: test accuracy {evaluate(model, data.test):.4f}", flush=True)


if __name__ == "__main__":
    main()
