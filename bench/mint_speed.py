"""MINT scoring speed: the compiled spanning trees against the tensor-loop estimator they replace.

Scores a slice of the MNIST MLP's FC1→FC2 layer pair at the paper's grouping (500 parent units
in 250 groups, 300 child units in 100 groups, App. B) on synthetic ReLU activations, once with
this checkout's :func:`grouped_conditional_gmi` and once with the estimator as of ``--old``
(read from git), on the same data and seed; prints the time per pair, the projected time of
the whole MLP (25 000 + 3 000 pairs) and the largest score difference (0 means the same
spanning trees).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/mint_speed.py --samples-per-class 250 --parent-groups 6
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from infoprune.estimators.geometric_mi import grouped_conditional_gmi
from infoprune.methods.mint import contiguous_groups

ESTIMATOR = "src/infoprune/estimators/geometric_mi.py"
MLP_PAIRS = 250 * 100 + 300 * 10


def old_estimator(revision: str):
    """The estimator module as it was at ``revision``."""
    source = subprocess.run(["git", "show", f"{revision}:{ESTIMATOR}"], check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_geometric_mi.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_geometric_mi", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_mlp_activations(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    parent = torch.relu(torch.randn(samples, 500, generator=generator))
    child = torch.relu(parent @ torch.randn(500, 300, generator=generator) / 500**0.5 + 0.1 * torch.randn(samples, 300, generator=generator))
    return parent, child


def timed(score, *args, **kwargs) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    scores = score(*args, **kwargs)
    return scores, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-class", type=int, default=250, help="m; N = 10 m samples")
    parser.add_argument("--parent-groups", type=int, default=6, help="how many of FC1's 250 groups to score")
    parser.add_argument("--old", default="5fb6f3c", help="git revision of the estimator to compare with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parent, child = synthetic_mlp_activations(10 * args.samples_per_class, seed=0)
    parent_groups = contiguous_groups(500, 250)[: args.parent_groups]
    child_groups = contiguous_groups(300, 100)
    pairs = len(parent_groups) * len(child_groups)
    grouped_conditional_gmi(parent[:30], child[:30], parent_groups[:2], child_groups[:2])  # compile once
    new, new_seconds = timed(grouped_conditional_gmi, parent, child, parent_groups, child_groups, seed=0)
    old, old_seconds = timed(old_estimator(args.old).grouped_conditional_gmi, parent, child, parent_groups, child_groups, seed=0)
    print(f"MINT scoring, FC1→FC2 slice: {pairs} pairs, N = {parent.shape[0]} ({args.samples_per_class} per class), {args.threads} thread(s)")
    for name, seconds in ((f"estimator at {args.old}", old_seconds), ("this checkout", new_seconds)):
        print(f"  {name:24s} {seconds:8.1f} s  {1000 * seconds / pairs:7.1f} ms/pair  ~{seconds / pairs * MLP_PAIRS:7.0f} s for the MLP's {MLP_PAIRS} pairs")
    print(f"  speed-up {old_seconds / new_seconds:.1f}x; largest score difference {float((new - old).abs().max()):.3g}")
    print(f"  score range {float(new.min()):.4f} .. {float(new.max()):.4f}")


if __name__ == "__main__":
    main()
