"""Heads and FFN units of Hugging Face ``transformers`` models (tiny configs, random init).

Every method on BERT; the adapters' other families (DistilBERT, ViT, Llama with grouped-query
attention, GPT-2 with its Conv1D layers) with a ranking, a torch-pruning criterion and the
information-theoretic methods.
Skipped when ``transformers`` is not installed (``pip install -e ".[transformers]"``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infoprune
from families import assert_physical_model_is_the_masked_one
from infoprune.models.hf_families import HEADS, HF_FAMILIES, TOKENS, VOCAB, hf_model
from infoprune.network import Network
from infoprune.models.families import QUICK_SETTINGS

pytest.importorskip("transformers")

SOME = ("random", "tp-taylor", "itpruner", "mipp", "mint")


def options(method: str) -> dict:
    return dict(QUICK_SETTINGS[method], **({"samples": 128} if method == "itpruner" else {}))


def head_counts(model: nn.Module) -> list[tuple[int, int]]:
    """(query heads said by the module's attributes, query heads its projection holds) per attention."""
    counts = []
    for module in model.modules():
        name = type(module).__name__
        if name == "BertSelfAttention":
            counts.append((module.num_attention_heads * module.attention_head_size, module.all_head_size))
            counts.append((module.all_head_size, module.query.out_features))
        elif name == "DistilBertSelfAttention":
            counts.append((module.n_heads * module.attention_head_size, module.q_lin.out_features))
        elif name == "ViTAttention":
            counts.append((module.num_attention_heads * module.head_dim, module.q_proj.out_features))
        elif name == "GPT2Attention":
            counts.append((module.num_heads * module.head_dim, module.c_proj.in_features))
        elif name == "RobertaSelfAttention":
            counts.append((module.num_attention_heads * module.attention_head_size, module.query.out_features))
        elif name == "T5Attention":
            counts.append((module.n_heads * module.key_value_proj_dim, module.q.out_features))
            counts.append((module.inner_dim, module.o.in_features))
        elif name in ("LlamaAttention", "MistralAttention", "Qwen2Attention"):
            counts.append((module.k_proj.out_features * module.num_key_value_groups, module.q_proj.out_features))
    return counts


def check(family: str, method: str) -> infoprune.PruningResult | None:
    model, inputs = hf_model(family)
    labels = torch.arange(inputs.shape[0]) % 5
    if method == "tp-bn-scale":
        with pytest.raises(ValueError, match="BNScaleImportance finds nothing to score"):
            infoprune.prune(model, (inputs, labels), method=method, device="cpu", progress=None, **options(method))
        return None
    result = infoprune.prune(model, (inputs, labels), method=method, device="cpu", progress=None, **options(method))
    assert result.flops_after < result.flops_before
    assert_physical_model_is_the_masked_one(model, inputs[:8], result)
    counts = head_counts(result.model)
    assert counts and all(said == held for said, held in counts)
    if family != "vit":
        longer = torch.randint(1, VOCAB, (3, TOKENS + 5), generator=torch.Generator().manual_seed(2))
        longer[:, -1] = 1  # T5's classifier reads the last <eos>
        assert result.model(longer).logits.shape == (3, 5)
    return result


@pytest.mark.parametrize("method", sorted(QUICK_SETTINGS))
def test_every_method_prunes_bert_heads_and_ffn_units(method):
    check("bert", method)


@pytest.mark.parametrize("method", SOME)
@pytest.mark.parametrize("family", ["distilbert", "vit", "llama", "gpt2"])
def test_the_methods_prune_distilbert_vit_llama_and_gpt2(family, method):
    check(family, method)


def test_tp_hessian_falls_back_to_one_sample_at_a_time_where_vmap_cannot_batch_the_model():
    """GPT2ForSequenceClassification indexes the last non-padding token: vmap cannot batch it."""
    check("gpt2", "tp-hessian")


def test_gpt2s_conv1d_layers_are_pruned_as_the_linear_layers_they_compute():
    from transformers.pytorch_utils import Conv1D

    from infoprune.network.layers import as_linear

    conv = Conv1D(6, 4)
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(as_linear(conv)(x), conv(x))
    model, inputs = hf_model("gpt2")
    result = infoprune.prune(model, (inputs, torch.arange(128) % 5), method="random", ratio=0.5, device="cpu", progress=None)
    attention = result.model.transformer.h[0].attn
    kept = int(result.masks["transformer.h.0.attn.c_attn"].sum())
    assert type(attention.c_attn) is nn.Linear and attention.c_attn.out_features == 3 * kept * attention.head_dim
    assert attention.num_heads == kept and attention.split_size == kept * attention.head_dim
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D)  # the caller's model is untouched


def test_a_model_with_a_key_value_cache_is_refused_with_the_fix():
    model, inputs = hf_model("gpt2")
    model.config.use_cache = True
    with pytest.raises(ValueError, match=r"Set model\.config\.use_cache = False: a key/value cache concatenates tensors the tracer cannot follow\.$"):
        Network(model, inputs[:2])


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_heads_are_groups_of_every_family(family):
    model, inputs = hf_model(family)
    network = Network(model, inputs[:2])
    heads = [g for g in network.groups if g.kind == "heads"]
    assert len(heads) == (3 if family == "t5" else 2)  # T5: a group per stack and kind, across its layers
    grouped_query = family in ("llama", "mistral", "qwen2")  # 2 key-value groups of 2 query heads
    assert heads[0].units == (2 if grouped_query else HEADS)


@pytest.mark.parametrize("family", ["roberta", "mistral", "qwen2"])
def test_the_other_registered_families_prune_to_the_masked_model(family):
    check(family, "random")


@pytest.mark.parametrize("method", SOME)
def test_t5s_heads_are_removed_from_every_layer_of_a_stack_with_their_position_bias(method):
    """T5's first layer computes the position bias of every head and the later layers add it:
    a head goes from all layers of its stack (self-attention, cross-attention) at once."""
    model, inputs = hf_model("t5")
    network = Network(model, inputs[:2])
    encoder = network.group("transformer.encoder.block.0.layer.0.SelfAttention.q")
    assert [c.name for c in encoder.consumers] == [f"transformer.encoder.block.{i}.layer.0.SelfAttention.o" for i in (0, 1)]
    assert "transformer.encoder.block.0.layer.0.SelfAttention.relative_attention_bias" in {m.name for m in encoder.members}
    result = check("t5", method)
    for stack in ("encoder", "decoder"):
        attentions = [getattr(result.model.transformer, stack).block[i].layer[0].SelfAttention for i in (0, 1)]
        assert attentions[0].n_heads == attentions[1].n_heads == attentions[0].relative_attention_bias.embedding_dim


def test_llamas_residual_stream_is_pruned_through_its_rmsnorms():
    result = check("llama", "random")
    kept = int(result.masks["model.layers.0.self_attn.o_proj"].sum())
    assert 0 < kept < 32
    assert result.model.model.norm.weight.numel() == result.model.model.embed_tokens.embedding_dim == kept


def test_a_pruned_llama_reloads_into_a_re_pruned_skeleton_and_keeps_its_kv_groups():
    result = check("llama", "random")
    model, inputs = hf_model("llama")
    kept = [int(result.masks[f"model.layers.{i}.self_attn.q_proj"].sum()) for i in range(2)]
    skeleton = Network(model, inputs[:2]).apply_masks(result.masks)
    skeleton.load_state_dict(result.model.state_dict())
    torch.testing.assert_close(skeleton(inputs[:4]).logits, result.model(inputs[:4]).logits)
    for i, units in enumerate(kept):
        units = max(units, 1)  # an emptied group keeps one unit whose output weights are zero
        attention = skeleton.model.layers[i].self_attn
        assert attention.k_proj.out_features == units * attention.head_dim
        assert attention.q_proj.out_features == units * attention.num_key_value_groups * attention.head_dim


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "vit", "t5"])
def test_the_flops_form_counts_the_pruned_models_flops(family):
    from infoprune.metrics import count_flops

    model, inputs = hf_model(family)
    network = Network(model, inputs[:2])
    generator = torch.Generator().manual_seed(3)
    masks = {g.name: torch.rand(g.units, generator=generator) < 0.6 for g in network.groups}
    for mask in masks.values():
        mask[0] = True
    predicted = network.flops_cost().at_widths({name: int(mask.sum()) for name, mask in masks.items()})
    assert predicted == pytest.approx(count_flops(network.apply_masks(masks), inputs[:2]), rel=1e-9)


@pytest.mark.parametrize("family", ["gpt2", "bert", "t5"])
def test_a_pruned_hugging_face_model_saves_and_loads_with_infoprune_io(family, tmp_path):
    from infoprune.io import load_pruned, save_pruned

    result = check(family, "random")
    model, inputs = hf_model(family)
    save_pruned(tmp_path / "pruned.pt", result.model, result.masks, example_input=inputs[:2])
    loaded = load_pruned(tmp_path / "pruned.pt", model, inputs[:2])
    torch.testing.assert_close(loaded(inputs[:4]).logits, result.model(inputs[:4]).logits)
    assert head_counts(loaded) == head_counts(result.model)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_a_pruned_hugging_face_model_exports_to_onnx_and_computes_its_logits(family, tmp_path):
    """Exported from a batch of 4, run by ONNX Runtime on a batch of 3: the logits torch computes."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from infoprune.io import export_onnx

    model, inputs = hf_model(family)
    result = infoprune.prune(model, (inputs, torch.arange(128) % 5), method="random", ratio=0.5, device="cpu",
                             progress=None, allow_collapse=True)
    exported = export_onnx(result.model, inputs[:4], tmp_path / "pruned.onnx")
    assert exported.max_abs_error < 1e-5
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": inputs[4:7].numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), result.model(inputs[4:7]).logits, rtol=1e-4, atol=1e-5)
