"""MINT on the MNIST MLP (784-500-300-10, dropout 0.2): the first row of MINT Table I.

Paper: 96.01 % of layer-2 weights pruned at 98.47 % test accuracy (baseline 98.59 %),
memory 0.539 → 0.025 "Mb"; G = (250, 100) between FC1 and FC2, (300, 10) between FC2 and FC3,
650 samples per class (App. B); δ = 0.645 on the authors' estimator scale (ours is normalised
so that independence reads 0, so δ is set here as a quantile of the pooled scores).

Steps: train (App. B Table B-1: SGD, batch 256, lr 0.1 ×0.1 at 1/3 and 2/3 of the epochs,
weight decay 1e-4; momentum 0.9, which the paper does not state), score with MINT, zero the
dropped fc2/fc3 connection blocks, re-train once with the masks held (Table B-2, same recipe),
and print the fraction of fc2 (the paper's "layer 2") and of fc2+fc3 weights pruned, test
accuracy, CSR memory (:func:`infoprune.metrics.csr_bytes`) and the wall time of MINT scoring.
The trained baseline is cached under ``runs/`` and reused.

    PYTHONPATH=src python bench/mint_mlp_mnist.py --samples-per-class 100 --quantile 0.96
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune

import infoprune
from infoprune.data import load_dataset
from infoprune.methods.mint import connection_masks
from infoprune.metrics import csr_bytes
from infoprune.models import build_model
from infoprune.training import Recipe, evaluate, train

PAPER_GROUPS = {"net.1": (250, 100), "net.4": (300, 10)}  # FC1→FC2 and FC2→FC3 (App. B)
FC2, FC3 = "net.4", "net.7"


def recipe(epochs: int) -> Recipe:
    """MINT Tables B-1/B-2, MLP: 30 epochs, batch 256, lr 0.1, ×0.1 at epochs 10 and 20, wd 1e-4."""
    return Recipe(lr=0.1, epochs=epochs, batch_size=256, momentum=0.9, weight_decay=1e-4, milestones=(1 / 3, 2 / 3))


def trained_baseline(splits, epochs: int, seed: int) -> torch.nn.Module:
    path = Path("runs") / f"mint_mlp500_e{epochs}_s{seed}.pt"
    torch.manual_seed(seed)
    model = build_model("mlp500")
    if path.is_file():
        model.load_state_dict(torch.load(path))
        return model.eval()
    train(model, splits.train, recipe(epochs), device="cpu", seed=seed, desc="train")
    path.parent.mkdir(exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="training and re-training epochs (paper: 30)")
    parser.add_argument("--samples-per-class", type=int, default=100, help="m (paper: 650; cost grows as m²)")
    parser.add_argument("--quantile", type=float, default=0.96, help="δ as this quantile of the pooled scores")
    parser.add_argument("--delta", type=float, default=None, help="δ directly (instead of --quantile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_dataset("mnist")
    model = trained_baseline(splits, args.epochs, args.seed)
    baseline_accuracy = evaluate(model, splits.test)
    threshold = {"delta": args.delta} if args.delta is not None else {"quantile": args.quantile}

    result = infoprune.prune(
        model,
        splits.train,
        method="mint",
        device="cpu",
        seed=args.seed,
        samples_per_class=args.samples_per_class,
        groups=PAPER_GROUPS,
        **threshold,
    )
    details = result.details
    masks = connection_masks(model, details)
    pruned = build_model("mlp500")
    pruned.load_state_dict(model.state_dict())
    modules = dict(pruned.named_modules())
    for name, mask in masks.items():
        torch_prune.custom_from_mask(modules[name], "weight", mask)
    accuracy_before_retraining = evaluate(pruned, splits.test)
    start = time.perf_counter()
    train(pruned, splits.train, recipe(args.epochs), device="cpu", seed=args.seed + 1, desc="re-train")
    retrain_seconds = time.perf_counter() - start
    for name in masks:
        torch_prune.remove(modules[name], "weight")
    accuracy = evaluate(pruned, splits.test)

    def pruned_fraction(names: tuple[str, ...]) -> float:
        total = sum(modules[n].weight.numel() for n in names)
        return sum(int((modules[n].weight == 0).sum()) for n in names) / total

    print(f"MINT on MLP 784-500-300-10 / MNIST, seed {args.seed}, {args.epochs} epochs (train and re-train)")
    print(f"  groups {PAPER_GROUPS}, {args.samples_per_class} samples per class ({details['samples']} in all)")
    print(f"  threshold {threshold} -> delta = {details['delta']:.4f}")
    print(f"  MINT scoring wall time: {result.seconds:.1f} s ({torch.get_num_threads()} thread(s))")
    print(f"  baseline test accuracy:        {100 * baseline_accuracy:.2f} %   (paper 98.59 %)")
    print(f"  pruned, before re-training:    {100 * accuracy_before_retraining:.2f} %")
    print(f"  pruned + re-trained:           {100 * accuracy:.2f} %   (paper 98.47 %, re-train {retrain_seconds:.0f} s)")
    print(f"  fc2 weights pruned:            {100 * pruned_fraction((FC2,)):.2f} %   (paper 96.01 % of layer 2)")
    print(f"  fc2+fc3 weights pruned:        {100 * pruned_fraction((FC2, FC3)):.2f} %")
    print(f"  fc2+fc3 weights pruned per MINT details: {100 * details['connection_pruned_fraction']:.2f} %")
    print(
        f"  CSR memory, all weights: {csr_bytes(model) / 1e6:.3f} MB -> {csr_bytes(pruned) / 1e6:.3f} MB "
        "(paper 0.539 -> 0.025 'Mb', unit unstated)"
    )
    print(
        "  structured result (units none of whose connections survive removed): "
        + ", ".join(f"{n} {s.kept}/{s.total}" for n, s in result.layers.items())
        + f", params {result.params_before} -> {result.params_after}"
    )


if __name__ == "__main__":
    main()
