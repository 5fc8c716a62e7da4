"""MINT power study: how well the scores separate what matters from what does not.

Two known answers, for both conditionings of :class:`infoprune.methods.mint.MINT` —
``others``, the paper's Î(child; parent group | all other parents), and ``contribution``, our
extension, Î(child; parent group | the other parents' contribution W_z z + b):

1. Synthetic layer pairs. P parent units, correlated (ReLU of a random mix of P/2 factors),
   in four equal kinds: *strong* (weights N(0, 1) into every child), *weak* (the same ×0.25:
   weak but real), *dead* (zero weights) and *copies* (exact copies of the strong units, with
   their own N(0, 1) weights); 8 child units, ReLU(W y + b) with no noise. A parent group's
   score is its highest over the child units. Printed: mean score per kind and the AUC of
   live (strong, weak) against dead groups, as N (samples), P (so the conditioning
   dimension of ``others``, P − group size; ``contribution`` conditions on one value) and
   the parent group size (P / G) vary. A copy carries nothing given the other parents (the
   paper's question) but is read by the child (ours): the two answers differ there.
2. The dead-unit net of issue 18: a 20-40-20-4 MLP whose second layer reads only the first
   20 of the 40 first-layer units, 4 balanced classes, m samples per class, MINT's defaults
   otherwise (G = 16; δ: 2/√n1 for ``contribution``, the pooled median for ``others``).
   Printed: dead and live first-layer units kept, per seed.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/mint_power.py
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from torch import nn

import infoprune
from infoprune.data import LabelledTensors
from infoprune.estimators.geometric_mi import grouped_conditional_gmi
from infoprune.methods.mint import contiguous_groups, other_parents_contribution
from infoprune.models.lenet import MLP

KINDS = ("strong", "weak", "dead", "copy")


def synthetic_pair(samples: int, parents: int, seed: int) -> tuple[torch.Tensor, nn.Linear, list[str]]:
    """Parent activations ``(samples, parents)``, the child layer, and each parent unit's kind."""
    generator = torch.Generator().manual_seed(seed)
    quarter = parents // 4
    factors = torch.randn(samples, parents // 2, generator=generator)
    activations = torch.relu(factors @ torch.randn(parents // 2, parents, generator=generator) / (parents // 2) ** 0.5)
    activations[:, 3 * quarter :] = activations[:, :quarter]  # copies of the strong units
    child = nn.Linear(parents, 8)
    with torch.no_grad():
        child.weight.copy_(torch.randn(8, parents, generator=generator))
        child.weight[:, quarter : 2 * quarter] *= 0.25
        child.weight[:, 2 * quarter : 3 * quarter] = 0
        child.bias.zero_()
    return activations, child, [kind for kind in KINDS for _ in range(quarter)]


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    difference = positive[:, None] - negative[None, :]
    return float((difference > 0).double().mean() + 0.5 * (difference == 0).double().mean())


def synthetic_row(samples: int, parents: int, group_size: int, conditioning: str, seed: int) -> dict:
    activations, child_layer, kinds = synthetic_pair(samples, parents, seed)
    with torch.no_grad():
        child = torch.relu(child_layer(activations))
    parent_groups = contiguous_groups(parents, parents // group_size)
    positions = torch.arange(activations.shape[1])[:, None]  # parent unit c is the child's input c
    given = other_parents_contribution(child_layer, activations, positions, parent_groups) if conditioning == "contribution" else None
    scores = grouped_conditional_gmi(activations, child, parent_groups, contiguous_groups(8, 8), given=given, seed=seed)
    best = scores.max(dim=0).values
    group_kinds = [kinds[group.start] for group in parent_groups]
    by_kind = {kind: best[[k == kind for k in group_kinds]] for kind in KINDS}
    live = torch.cat([by_kind["strong"], by_kind["weak"]])
    return {**{kind: float(values.mean()) for kind, values in by_kind.items()}, "auc": auc(live, by_kind["dead"])}


def dead_unit_row(samples_per_class: int, conditioning: str, seed: int) -> tuple[int, int]:
    torch.manual_seed(seed)
    model = MLP((40, 20), num_classes=4, in_features=20).eval()
    with torch.no_grad():
        model.net[3].weight[:, 20:] = 0
    generator = torch.Generator().manual_seed(seed)
    n = 4 * samples_per_class
    data = LabelledTensors(torch.randn(n, 20, generator=generator), torch.arange(n) % 4)
    kept = infoprune.prune(model, data, method="mint", conditioning=conditioning, seed=seed, device="cpu").masks["net.1"]
    return int(kept[20:].sum()), int(kept[:20].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[300, 900])
    parser.add_argument("--parents", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print("1. Synthetic layer pairs: mean of each parent group's best score over 8 children, AUC live vs dead")
    print(f"{'conditioning':>13} {'N':>5} {'P':>4} {'group':>5} {'Z dim':>5} | " + " ".join(f"{k:>7}" for k in KINDS) + " |    AUC")
    for conditioning, samples, parents, group_size in itertools.product(("others", "contribution"), args.samples, args.parents, args.group_sizes):
        rows = [synthetic_row(samples, parents, group_size, conditioning, seed) for seed in range(args.seeds)]
        mean = {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}
        z_dim = parents - group_size if conditioning == "others" else 1
        print(f"{conditioning:>13} {samples:5d} {parents:4d} {group_size:5d} {z_dim:5d} | " + " ".join(f"{mean[k]:7.3f}" for k in KINDS) + f" | {mean['auc']:6.3f}")
    print(f"\n2. Dead-unit net 20-40-20-4 (20 dead first-layer units), MINT defaults; seeds 0..{args.seeds}")
    for conditioning, samples_per_class in itertools.product(("others", "contribution"), (50, 100)):
        results = [dead_unit_row(samples_per_class, conditioning, seed) for seed in range(args.seeds + 1)]
        listed = ", ".join(f"{dead}/{live}" for dead, live in results)
        print(f"  {conditioning:>13}, {samples_per_class:3d} per class: dead kept / live kept (of 20 each) per seed: {listed}")
    print(f"\n({time.perf_counter() - start:.0f} s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
