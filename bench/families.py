"""Coupled channel groups on the architecture families: what can be pruned, and at what cost.

Three measurements (issue 12), each printed as a table:

* ``table``: for each compact family of :mod:`infoprune.models.families` and each method (its
  ``QUICK_SETTINGS``): units prunable of all Linear/Conv output units, FLOPs kept
  (``ratio=0.5`` for the ranked methods, ``flops=0.5`` for ITPruner, MIPP/MINT as their
  settings land) and the largest |physical − masked| output difference (BatchNorm statistics
  randomised);
* ``transformers``: every method on the transformer families (:mod:`infoprune.models.transformer_families`,
  and transformers' own tiny models when it is installed): head, FFN and hidden groups found,
  FLOPs kept and the largest |physical − masked| difference;
* ``resnet50``: the share of ResNet50's units (CIFAR shape) that can be pruned;
* ``mipp-coupled``: MIPP with ``coupled="keep"`` (App. D.3.2) and ``"prune"`` at the same
  confidence on ResNet20 trained briefly on the generated CIFAR stand-in: units, FLOPs and
  params kept, and test accuracy after a short re-training.

    PYTHONPATH=src python bench/families.py table transformers resnet50 mipp-coupled --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

import infoprune
from infoprune.data import load_dataset, write_cifar_standin
from infoprune.models import build_model
from infoprune.models.families import FAMILIES, FAMILY_SETTINGS, QUICK_SETTINGS, family_data
from infoprune.models.transformer_families import TRANSFORMERS, transformer_data
from infoprune.network import PRUNABLE_TYPES, Network, primary_output
from infoprune.training import evaluate, get_recipe, train


def prunable_units(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(output units of Linear/Conv layers inside prunable groups, all their output units)."""
    network = Network(model, example)
    total = sum(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
                for m in model.modules() if isinstance(m, PRUNABLE_TYPES))
    return sum(p.positions.numel() for g in network.groups for p in g.producers), total


def physical_minus_masked(model: nn.Module, inputs: torch.Tensor, result) -> float:
    network = Network(model, inputs[:2])
    with torch.no_grad():
        with network.masked(result.masks, result.input_mask):
            masked = primary_output(model(inputs))
        return float((primary_output(network.apply_masks(result.masks, result.input_mask)(inputs)) - masked).abs().max())


def table() -> None:
    methods = sorted(QUICK_SETTINGS)
    print("| family | units prunable | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for family in FAMILIES:
        model, data = family_data(family)
        prunable, total = prunable_units(model, data.inputs[:2])
        cells = []
        for method in methods:
            options = dict(QUICK_SETTINGS[method], **FAMILY_SETTINGS.get((family, method), {}))
            result = infoprune.prune(model, data, method=method, device="cpu", progress=None, allow_collapse=True, **options)
            diff = physical_minus_masked(model, data.inputs[:16], result)
            cells.append(f"{result.flops_after / result.flops_before:.2f} ({diff:.0e})")
        print(f"| {family} | {prunable}/{total} ({prunable / total:.0%}) | " + " | ".join(cells) + " |")
    print(f"cells: FLOPs kept (max |physical − masked| over 16 inputs); itpruner at flops=0.5; other settings: {FAMILY_SETTINGS}")


def transformers_table() -> None:
    """Every method on the plain-torch transformer families and, when ``transformers`` is
    installed, on its tiny BERT, RoBERTa, DistilBERT, ViT, GPT-2, Llama, Mistral and Qwen2:
    which groups each has (heads, FFN units, hidden) and the FLOPs each method keeps."""
    builders = {name: lambda name=name: transformer_data(name) for name in TRANSFORMERS}
    try:
        from infoprune.models.hf_families import HF_FAMILIES, hf_model

        builders.update({f"hf-{name}": lambda name=name: hf_model(name) for name in HF_FAMILIES})
    except ImportError:
        print("(transformers is not installed: its models are left out)")
    methods = sorted(QUICK_SETTINGS)
    print("| family | heads / FFN / hidden groups | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for family, build in builders.items():
        model, inputs = build()
        network = Network(model.eval(), inputs[:2])
        kinds = [g.kind for g in network.groups]
        groups = f"{kinds.count('heads')} / {len(kinds) - kinds.count('heads')} (FFN + hidden)"
        cells = []
        for method in methods:
            model, inputs = build()
            options = dict(QUICK_SETTINGS[method], **({"samples": inputs.shape[0]} if method == "itpruner" else {}))
            try:
                result = infoprune.prune(model, (inputs, torch.arange(inputs.shape[0]) % 5), method=method,
                                         device="cpu", progress=None, **options)
            except ValueError as error:
                cells.append(f"refused: {str(error)[:40]}…")
                continue
            diff = physical_minus_masked(model, inputs[:16], result)
            cells.append(f"{result.flops_after / result.flops_before:.2f} ({diff:.0e})")
        print(f"| {family} | {groups} | " + " | ".join(cells) + " |")
    print("cells: FLOPs kept (max |physical − masked| over 16 inputs); itpruner at flops=0.5")


def resnet50() -> None:
    model = build_model("resnet50").eval()
    prunable, total = prunable_units(model, torch.randn(2, 3, 32, 32))
    print(f"ResNet50 (CIFAR shape): {prunable:,} of {total:,} units prunable ({prunable / total:.1%}); "
          "main before groups: 7,616 of 26,570 (28.7 %)")


def mipp_coupled(confidence: float, train_epochs: int, retrain_epochs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        write_cifar_standin(directory, train_size=1000, test_size=200)
        data = load_dataset("cifar10", data_dir=directory)
    torch.manual_seed(0)
    model = build_model("resnet20")
    train(model, data.train, get_recipe("cifar10", epochs=train_epochs, batch_size=64), device="cpu", seed=0)
    print(f"ResNet20 on the CIFAR stand-in: test accuracy {evaluate(model, data.test):.3f} after {train_epochs} epochs")
    tiny = {"fit_iterations": 100, "refit_iterations": 10, "ordering_iterations": 5, "repeats": 3, "hidden_size": 32}
    print("| coupled | units kept | FLOPs kept | params kept | test acc. re-trained | seconds |")
    print("|---|---|---|---|---|---|")
    for coupled in ("keep", "prune"):
        start = time.perf_counter()
        result = infoprune.prune(model, data.train.inputs[:512], method="mipp", device="cpu", progress=None,
                                 confidence=confidence, coupled=coupled, **tiny)
        seconds = time.perf_counter() - start
        kept = sum(s.kept for s in result.layers.values())
        units = sum(s.total for s in result.layers.values())
        pruned = result.model
        train(pruned, data.train, get_recipe("cifar10-retrain", epochs=retrain_epochs, batch_size=64), device="cpu", seed=0)
        print(f"| {coupled} | {kept}/{units} | {result.flops_after / result.flops_before:.3f} | "
              f"{result.params_after / result.params_before:.3f} | {evaluate(pruned, data.test):.3f} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=["table", "transformers", "resnet50", "mipp-coupled"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for part in args.parts:
        if part == "table":
            table()
        elif part == "resnet50":
            resnet50()
        elif part == "transformers":
            transformers_table()
        else:
            mipp_coupled(args.confidence, args.train_epochs, args.retrain_epochs)


if __name__ == "__main__":
    main()
