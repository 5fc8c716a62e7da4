"""What each method removes from BERT-base at flops=0.5: heads, FFN units, hidden features.

transformers' BertForSequenceClassification at its default (base) config, random init (no
download), 128 calibration sequences of 16 random token ids with random labels. Prints, per
method: CPU seconds, FLOPs kept, and the kept heads / FFN units / hidden features.

    PYTHONPATH=src python bench/bert_base_units.py --threads 1 [--methods l1 snip ...]
"""

from __future__ import annotations

import argparse
import time

import torch

import infoprune
from infoprune.network import Network


def kept(network: Network, masks: dict[str, torch.Tensor]) -> dict[str, str]:
    """Kept / total units per kind of group: heads, FFN units (intermediate), hidden features."""
    totals: dict[str, list[int]] = {}
    for group in network.groups:
        kind = "heads" if group.heads is not None else "ffn" if "intermediate" in group.name else "hidden"
        if kind == "hidden" and "pooler" in group.name:
            kind = "pooler"
        mask = masks.get(group.name)
        count = group.units if mask is None else int(mask.sum())
        if group.heads is not None:
            count *= group.heads.layout.heads_per_unit
        total = group.units * (group.heads.layout.heads_per_unit if group.heads is not None else 1)
        entry = totals.setdefault(kind, [0, 0])
        entry[0] += count
        entry[1] += total
    return {kind: f"{k}/{t}" for kind, (k, t) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["l1", "snip", "tp-magnitude", "tp-taylor", "itpruner"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    ids = torch.randint(0, 30522, (128, 16))
    labels = torch.randint(0, 2, (128,))
    start = time.process_time()
    network = Network(model, ids[:2])
    print(f"Network(model, ids[:2]): {time.process_time() - start:.1f} CPU s, {len(network.groups)} groups")
    for method in args.methods:
        start = time.process_time()
        result = infoprune.prune(model, (ids, labels), method=method, flops=0.5)
        cost = time.process_time() - start
        counts = ", ".join(f"{kind} {value}" for kind, value in kept(network, result.masks).items())
        print(f"{method:13s} {cost:6.1f} CPU s  FLOPs kept {result.flops_after / result.flops_before:.4f}  {counts}", flush=True)


if __name__ == "__main__":
    main()
