"""ViT-B/16 pruned by Torch-Pruning and by infoprune at equal MACs: heads and FFN units.

transformers' ``ViTForImageClassification`` at its default config (ViT-B/16, 224 × 224, 12 layers
of 12 heads, FFN 3072), random init, 10 classes. Torch-Pruning 1.6.1 as its Hugging Face ViT
example does it: ``MetaPruner`` with the group L2 magnitude, ``num_heads`` naming every q/k/v
projection, ``prune_num_heads=True`` (``head_pruning_ratio``) and ``pruning_ratio`` on the other
channels, the hidden dimension left whole (``ignored_layers``: the layers writing it),
then the attention modules' head counts patched by hand. infoprune: ``prune(model, data,
"tp-magnitude", flops=<Torch-Pruning's MACs kept>)``, the same criterion through one call,
ranked globally with ``round_to=1`` and ``64`` (FFN widths in multiples of 64), and per layer
(``scope="layer"``, as Torch-Pruning here) with ``round_to=64``.

Prints, for each: MACs and parameters kept, heads and FFN units kept per layer, whether it runs
at another batch size, which heads both remove, and the CPU latency of a batch of 8 (1 thread;
median of 9 rounds that time every model in turn, so that load from other jobs falls on all).

    PYTHONPATH=src python bench/vit_b16_vs_torch_pruning.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch_pruning as tp

import infoprune


def vit_b16() -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(num_labels=10, attn_implementation="eager")).eval()


def torch_pruning(
    model: torch.nn.Module, example: torch.Tensor, heads: float, channels: float
) -> tuple[torch.nn.Module, list[set[int]]]:
    """Torch-Pruning's recipe for HF ViT (its examples/transformers/prune_hf_vit.py, adapted to
    transformers 5's ``ViTAttention``): everything a user writes. Also the heads it removed per
    layer, read from its pruning history (not part of the recipe)."""
    model = copy.deepcopy(model)
    num_heads = {}
    ignored = [model.classifier, model.vit.embeddings.patch_embeddings.projection]  # the hidden dimension stays whole
    for layer in model.vit.layers:
        attention = layer.attention
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
            num_heads[projection] = attention.num_attention_heads
        ignored += [attention.o_proj, layer.mlp.fc2]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=False,
        pruning_ratio=channels, ignored_layers=ignored, output_transform=lambda out: out.logits,
        num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=heads,
    )
    pruner.step()
    for layer in model.vit.layers:  # the patch users must write (Torch-Pruning issues #340, #410, #287)
        attention = layer.attention
        attention.num_attention_heads = pruner.num_heads[attention.q_proj]
        attention.head_dim = attention.q_proj.out_features // attention.num_attention_heads
    history = {name: columns for name, is_out, columns in pruner.DG.pruning_history() if not is_out}  # o_proj inputs
    removed = [{c // 64 for c in history.get(f"vit.layers.{i}.attention.o_proj", [])} for i in range(len(model.vit.layers))]
    return model, removed


def kept_units(model: torch.nn.Module) -> tuple[list[int], list[int]]:
    """Heads and FFN units per layer of a (pruned) HF ViT."""
    layers = model.vit.layers
    return [layer.attention.num_attention_heads for layer in layers], [layer.mlp.fc1.out_features for layer in layers]


def latencies(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int = 9) -> dict[str, float]:
    """Median wall seconds of a forward of ``x`` per model, the models timed in turn in each of
    ``rounds`` rounds (after one warm-up each), so that load from other jobs falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(x)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def report(name: str, model: torch.nn.Module, base: tuple[float, float], example: torch.Tensor, x: torch.Tensor,
           seconds: float) -> None:
    macs, params = tp.utils.count_ops_and_params(model, example)
    heads, ffn = kept_units(model)
    with torch.no_grad():
        runs = model(x[:3]).logits.shape == (3, 10)
    print(f"{name}: {seconds:.1f} CPU s to prune; MACs kept {macs / base[0]:.4f}, params kept {params / base[1]:.4f}; "
          f"runs at another batch: {runs}")
    print(f"  heads per layer {heads} ({sum(heads)}/144)")
    print(f"  FFN units per layer {ffn} ({sum(ffn)}/{12 * 3072})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--head-ratio", type=float, default=0.5)
    parser.add_argument("--channel-ratio", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = vit_b16()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.samples, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 10, (args.samples,), generator=generator)
    example, x = images[:1], images[:8]
    base = tp.utils.count_ops_and_params(model, example)
    print(f"unpruned ViT-B/16: {base[0] / 1e9:.2f} GMACs, {base[1] / 1e6:.1f} M params")
    pruned = {"unpruned": model}

    start = time.process_time()
    by_tp, tp_removed = torch_pruning(model, example, args.head_ratio, args.channel_ratio)
    report("Torch-Pruning (group L2, head ratio / channel ratio "
           f"{args.head_ratio} / {args.channel_ratio})", by_tp, base, example, x, time.process_time() - start)
    pruned["Torch-Pruning"] = by_tp
    target = tp.utils.count_ops_and_params(by_tp, example)[0] / base[0]

    for scope, round_to in (("global", 1), ("global", 64), ("layer", 64)):  # 64: widths fast kernels like
        start = time.process_time()
        result = infoprune.prune(model, (images, labels), method="tp-magnitude", flops=target, scope=scope,
                                 round_to=round_to, device="cpu", progress=None,
                                 ignore=["vit.embeddings.patch_embeddings.projection"])  # the hidden dimension whole
        name = f"infoprune, scope={scope}, round_to={round_to}"
        report(f"{name}, flops={target:.4f}", result.model, base, example, x, time.process_time() - start)
        pruned[name] = result.model
        ours = [set(torch.nonzero(~result.masks[f"vit.layers.{i}.attention.q_proj"]).flatten().tolist()) for i in range(12)]
        both = sum(len(a & b) for a, b in zip(tp_removed, ours))
        print(f"  heads removed by both: {both} of {sum(map(len, tp_removed))} (Torch-Pruning) and {sum(map(len, ours))} "
              "(infoprune)")
    timed = latencies(pruned, x)
    print(f"latency, batch of {len(x)}, median of 9 interleaved rounds: "
          + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timed.items()))


if __name__ == "__main__":
    main()
