"""Attention heads and FFN units of transformers, for every method (plain-torch families of
infoprune.models.transformer_families, so no ``transformers`` is needed here).

Checked through ``infoprune.prune``: the physical model equals the masked one, the attention
modules' own head counts match their projections (a forward at another sequence length runs),
``flops=`` budgets land within 2 points, the FLOPs form equals the counted FLOPs of the pruned
model (attention's head products included), saving and loading round-trips, and attention no
adapter describes is left whole with the reason, never a traceback.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import infoprune
from families import assert_physical_model_is_the_masked_one
from infoprune.data.base import calibration_tensors
from infoprune.io import load_pruned, save_pruned
from infoprune.metrics import count_flops
from infoprune.network import Network, ProjectionAttention, register_attention
from infoprune.models.families import QUICK_SETTINGS
from infoprune.models.transformer_families import HIDDEN, TOKENS, Attention, TokenClassifier, token_ids, transformer_data

FAMILIES = ("bert-like", "gpt-like", "vit-like", "llama-like")
NO_BATCHNORM = "BNScaleImportance finds nothing to score in any prunable group"


def labelled(name: str) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model, inputs = transformer_data(name)
    return model, (inputs, torch.arange(inputs.shape[0]) % 5)


def assert_heads_consistent(model: nn.Module) -> None:
    """Every attention's head counts match its projections (what its forward reads)."""
    for module in model.modules():
        if isinstance(module, Attention):
            assert module.q.out_features == module.num_heads * module.head_dim == module.o.in_features
            assert module.k.out_features == module.v.out_features == module.num_kv_heads * module.head_dim
            assert module.num_heads % module.num_kv_heads == 0


@pytest.mark.parametrize("method", sorted(QUICK_SETTINGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_prunes_heads_and_ffn_units_to_the_masked_model(family, method):
    model, data = labelled(family)
    options = dict(QUICK_SETTINGS[method], **({"samples": 128} if method == "itpruner" else {}))
    if method == "tp-bn-scale":
        with pytest.raises(ValueError, match=NO_BATCHNORM):
            infoprune.prune(model, data, method=method, device="cpu", progress=None, **options)
        return
    result = infoprune.prune(model, data, method=method, device="cpu", progress=None, **options)
    assert result.flops_after < result.flops_before
    assert_physical_model_is_the_masked_one(model.eval(), data[0][:8], result)
    assert_heads_consistent(result.model)
    if family != "vit-like":  # another sequence length: nothing in the pruned model assumes 8 tokens
        longer = token_ids(3, tokens=TOKENS + 4)
        assert result.model(longer).shape == (3, 5)


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_are_groups_of_their_projections_and_ffn_units_are_groups(family):
    model, inputs = transformer_data(family)
    network = Network(model.eval(), inputs[:2])
    kinds = {group.name: group.kind for group in network.groups}
    assert {name for name, kind in kinds.items() if kind == "heads"} == {"blocks.0.attn.q", "blocks.1.attn.q"}
    up = "blocks.0.ffn.gate" if family == "llama-like" else "blocks.0.ffn.up"
    assert kinds[up] == "linear" and network.group(up).units == 2 * HIDDEN
    heads = network.group("blocks.0.attn.q")
    assert [p.name for p in heads.producers] == ["blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v"]
    assert [c.name for c in heads.consumers] == ["blocks.0.attn.o"]
    assert not any(name.endswith((".k", ".v")) for name in network.names)


def test_grouped_query_heads_are_pruned_with_their_key_value_head():
    """4 query heads share 2 key-value heads: a unit is one kv head and its 2 query heads."""
    model, inputs = transformer_data("llama-like")
    network = Network(model.eval(), inputs[:2])
    heads = network.group("blocks.0.attn.q")
    assert heads.units == 2 and heads.heads.layout.heads_per_unit == 2 and heads.heads.width == 16
    rows = {p.name.rsplit(".", 1)[1]: p.positions for p in heads.producers}
    assert rows["q"].tolist() == [list(range(16)), list(range(16, 32))]
    assert rows["k"].tolist() == rows["v"].tolist() == [list(range(8)), list(range(8, 16))]
    pruned = network.apply_masks({"blocks.0.attn.q": torch.tensor([False, True])})
    attention = pruned.blocks[0].attn
    assert (attention.num_heads, attention.num_kv_heads, attention.q.out_features, attention.k.out_features) == (2, 1, 16, 8)
    with network.masked({"blocks.0.attn.q": torch.tensor([False, True])}):
        masked = model(inputs[:4])
    torch.testing.assert_close(pruned(inputs[:4]), masked, rtol=1e-4, atol=1e-5)


def test_a_head_is_recorded_as_head_dim_columns():
    model, inputs = transformer_data("bert-like")
    network = Network(model.eval(), inputs[:2])
    recorded = network.record(inputs[:16])
    assert recorded["blocks.0.attn.q"].shape == (16, 4 * 8)  # 4 heads of head_dim 8
    assert recorded["blocks.0.ffn.up"].shape == (16, 2 * HIDDEN)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_flops_form_counts_the_pruned_models_flops_attention_products_included(family):
    model, inputs = transformer_data(family)
    network = Network(model.eval(), inputs[:2])
    generator = torch.Generator().manual_seed(3)
    masks = {g.name: torch.rand(g.units, generator=generator) < 0.6 for g in network.groups}
    for mask in masks.values():
        mask[0] = True
    pruned = network.apply_masks(masks)
    predicted = network.flops_cost().at_widths({name: int(mask.sum()) for name, mask in masks.items()})
    assert predicted == pytest.approx(count_flops(pruned, inputs[:2]), rel=1e-9)


@pytest.mark.parametrize("method,options", [
    ("itpruner", {"samples": 128}), ("mipp", {k: v for k, v in QUICK_SETTINGS["mipp"].items() if k != "confidence"}),
])
@pytest.mark.parametrize("family", ["bert-like", "llama-like"])
def test_a_flops_budget_lands_within_two_points(family, method, options):
    model, data = labelled(family)
    result = infoprune.prune(model, data, method=method, device="cpu", progress=None, flops=0.5, **options)
    assert 0.48 <= result.flops_after / result.flops_before <= 0.5


@pytest.mark.parametrize("method", ["l1", "tp-taylor"])
def test_a_ranking_meets_a_flops_budget_within_one_head(method):
    """A ranking removes its lowest units until the budget is met, so it lands below it by at
    most one unit's cost: here a head, 7 % of this tiny model's FLOPs (0.2 % of BERT-base's)."""
    model, data = labelled("bert-like")
    network = Network(model.eval(), data[0][:2])
    cost = network.flops_cost()
    one_head = (cost.full - cost.at_widths({"blocks.0.attn.q": 3})) / cost.full
    result = infoprune.prune(model, data, method=method, device="cpu", progress=None, flops=0.5)
    assert 0.5 - one_head <= result.flops_after / result.flops_before <= 0.5


def test_a_pruned_transformer_saves_and_loads_into_a_fresh_skeleton(tmp_path):
    model, data = labelled("gpt-like")
    result = infoprune.prune(model, data, method="random", ratio=0.5, device="cpu", progress=None)
    assert any(result.masks[f"blocks.{i}.attn.q"].sum() < 4 for i in range(2))
    ids = data[0][:8]
    save_pruned(tmp_path / "gpt.pt", result.model, result.masks, example_input=ids)
    fresh = TokenClassifier(causal=True)
    loaded = load_pruned(tmp_path / "gpt.pt", fresh, ids[:2])
    torch.testing.assert_close(loaded(ids), result.model.eval()(ids))
    assert_heads_consistent(loaded)
    skeleton = Network(TokenClassifier(causal=True).eval(), ids[:2]).apply_masks(result.masks)
    skeleton.load_state_dict(result.model.state_dict())  # a plain state dict fits the re-pruned skeleton
    torch.testing.assert_close(skeleton.eval()(ids), result.model(ids))


class OpaqueAttention(nn.Module):
    """The families' attention under a class no adapter is registered for."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, heads, dim // heads
        self.causal, self.rope = False, False
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    forward = Attention.forward


def opaque_model() -> nn.Module:
    torch.manual_seed(0)
    model = TokenClassifier()
    for block in model.blocks:
        block.attn = OpaqueAttention(HIDDEN, 4)
    return model


def test_attention_without_an_adapter_stays_whole_with_the_fix_and_its_ffn_units_still_prune():
    model, ids = opaque_model(), token_ids(128)
    network = Network(model.eval(), ids[:2])
    assert "blocks.0.attn.q" not in network.names and "blocks.0.ffn.up" in network.names
    assert network.whole["blocks.0.attn.q"] == (
        "blocks.0.attn.v maps its channels unevenly (a channel shuffle or reshape); for attention heads, register "
        "an adapter with infoprune.network.register_attention")
    result = infoprune.prune(model, (ids, torch.arange(128) % 5), method="l1", ratio=0.5, device="cpu", progress=None)
    assert result.layers["blocks.0.ffn.up"].kept < 2 * HIDDEN
    assert_physical_model_is_the_masked_one(model, ids[:8], result)


def test_a_registered_adapter_prunes_the_heads_of_a_users_attention_class():
    register_attention(OpaqueAttention, ProjectionAttention("q", "k", "v", "o", heads="num_heads", kv_heads="num_kv_heads",
                                                            head_dim="head_dim"))
    try:
        model, ids = opaque_model(), token_ids(128)
        network = Network(model.eval(), ids[:2])
        assert network.group("blocks.0.attn.q").kind == "heads"
        result = infoprune.prune(model, (ids, torch.arange(128) % 5), method="random", ratio=0.5, device="cpu", progress=None)
        assert result.model.blocks[0].attn.num_heads == int(result.masks["blocks.0.attn.q"].sum())
        assert_physical_model_is_the_masked_one(model, ids[:8], result)
    finally:
        from infoprune.network.attention import ADAPTERS
        ADAPTERS.pop(OpaqueAttention)


def test_register_attention_names_what_it_needs():
    with pytest.raises(TypeError, match=r"^register_attention needs an AttentionAdapter \(e\.g\. ProjectionAttention\(\.\.\.\)\), got dict\.$"):
        register_attention(OpaqueAttention, {"query": "q"})


def test_an_adapter_whose_widths_do_not_match_leaves_the_heads_whole_and_says_why():
    register_attention(OpaqueAttention, ProjectionAttention("q", "k", "v", "o", heads="heads_said", kv_heads="heads_said"))
    try:
        model = opaque_model()
        model.blocks[0].attn.heads_said, model.blocks[1].attn.heads_said = 3, 4  # 3 heads cannot make 32 channels
        network = Network(model.eval(), token_ids(4)[:2])
        assert network.whole["blocks.0.attn"] == (
            "its attention heads stay whole: its projection widths (32, 32, 32 → 32) do not match 3 query heads "
            "and 3 key-value heads of width 10"
        )
        assert "blocks.0.ffn.up" in network.names
    finally:
        from infoprune.network.attention import ADAPTERS
        ADAPTERS.pop(OpaqueAttention)


def test_token_ids_stay_integers_through_calibration():
    ids = token_ids(16)
    inputs, labels = calibration_tensors((ids, torch.arange(16) % 5))
    assert inputs.dtype == torch.int64 and torch.equal(inputs, ids)


@pytest.mark.parametrize("family", ["bert-like", "gpt-like"])
def test_the_hidden_dimension_is_one_group_through_embeddings_norms_and_every_block(family):
    model, inputs = transformer_data(family)
    network = Network(model.eval(), inputs[:2])
    hidden = network.group("blocks.0.attn.o")  # named after its first Linear producer
    assert hidden.units == HIDDEN
    assert [p.name for p in hidden.producers] == ["blocks.0.attn.o", "blocks.0.ffn.down", "blocks.1.attn.o", "blocks.1.ffn.down"]
    members = {m.name for m in hidden.members}
    assert {"tokens", "positions", "blocks.0.norm1", "blocks.1.norm2", "norm"} <= members
    assert {c.name for c in hidden.consumers} >= {"blocks.0.attn.q", "blocks.1.ffn.up", "head"}
    pruned = network.apply_masks({"blocks.0.attn.o": torch.arange(HIDDEN) % 4 != 0})
    assert pruned.tokens.embedding_dim == pruned.norm.normalized_shape[0] == HIDDEN * 3 // 4
    assert_heads_consistent(pruned)


def test_the_residual_stream_through_rmsnorm_is_one_group_and_the_pruned_norms_normalise_over_the_kept_features():
    model, inputs = transformer_data("llama-like")
    network = Network(model.eval(), inputs[:2])
    hidden = network.group("blocks.0.attn.o")
    assert {"tokens", "blocks.0.norm1", "blocks.1.norm2", "norm"} <= {m.name for m in hidden.members}
    keep = torch.arange(HIDDEN) % 3 != 0
    pruned = network.apply_masks({"blocks.0.attn.o": keep})
    assert pruned.norm.weight.numel() == pruned.norm.normalized_shape[0] == int(keep.sum())
    with network.masked({"blocks.0.attn.o": keep}):
        masked = model(inputs[:4])
    torch.testing.assert_close(pruned(inputs[:4]), masked, rtol=1e-4, atol=1e-5)


def test_hugging_face_dict_batches_calibrate_a_token_model():
    model, ids = transformer_data("bert-like", samples=64)
    labels = torch.arange(64) % 5
    batches = [{"input_ids": ids[i : i + 16], "attention_mask": torch.ones(16, TOKENS), "labels": labels[i : i + 16]}
               for i in range(0, 64, 16)]
    inputs, read = calibration_tensors(batches)
    assert inputs.dtype == torch.int64 and torch.equal(inputs, ids) and torch.equal(read, labels)
    one = calibration_tensors({"input_ids": ids, "labels": labels})
    assert torch.equal(one[0], ids) and torch.equal(one[1], labels)
    result = infoprune.prune(model, batches, method="l1", ratio=0.5, device="cpu", progress=None)
    assert result.flops_after < result.flops_before


@pytest.mark.parametrize("batch,message", [
    ({"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1], [1, 1]])},
     "Batch 1 of the calibration data has an attention_mask of shape (2, 2) for input_ids of shape (2, 3): give one "
     "mask entry per token."),
    ({"ids": torch.ones(2, 3, dtype=torch.long)},
     "Batch 1 of the calibration data is a dict without input_ids (keys: ['ids']); a dict batch holds input_ids and, "
     "optionally, labels and an attention_mask."),
    ({"input_ids": torch.ones(2, 3, dtype=torch.long), "pixel_values": torch.ones(2, 3)},
     "Batch 1 of the calibration data holds ['pixel_values'] besides ['input_ids', 'attention_mask', 'labels', "
     "'token_type_ids']: infoprune runs the model on input_ids (and the attention_mask) alone. Drop those entries (or "
     "wrap the model so that it takes input_ids only)."),
    ({"input_ids": torch.ones(2, 3, dtype=torch.long), "token_type_ids": torch.tensor([[0, 1, 1], [0, 0, 0]])},
     "Batch 1 of the calibration data has non-zero token_type_ids: infoprune runs the model on input_ids (and the "
     "attention_mask) alone. Pass single-segment sequences (or wrap the model so that it takes input_ids only)."),
])
def test_dict_batches_the_model_would_need_more_than_input_ids_for_are_refused_with_the_fix(batch, message):
    with pytest.raises(ValueError) as error:
        calibration_tensors([batch])
    assert str(error.value) == message


@pytest.mark.parametrize("family", ["bert-like", "gpt-like", "vit-like", "llama-like"])
def test_a_pruned_transformer_exports_to_onnx_and_computes_the_same(family, tmp_path):
    """Llama-like: nn.RMSNorm, which the exporter cannot write, is written out for the export."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from infoprune.io import export_onnx

    model, inputs = transformer_data(family, samples=64)
    result = infoprune.prune(model, (inputs, torch.arange(64) % 5), method="random", ratio=0.5, device="cpu", progress=None)
    exported = export_onnx(result.model, inputs[:4], tmp_path / "pruned.onnx")
    assert exported.max_abs_error < 1e-5
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": inputs[:4].numpy()})
    torch.testing.assert_close(torch.from_numpy(got), result.model(inputs[:4]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("call", [
    {}, {"need_weights": False}, {"average_attn_weights": False}, {"attn_mask": "float"}, {"attn_mask": "bool"},
    {"key_padding_mask": True}, {"kdim": 6},
])
def test_split_multihead_attention_computes_what_nn_multihead_attention_does(batch_first, call):
    from infoprune.network.layers import SplitMultiheadAttention

    call = dict(call)
    torch.manual_seed(0)
    kdim = call.pop("kdim", None)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    split = SplitMultiheadAttention(mha).eval()
    query, key = torch.randn(3, 5, 8), torch.randn(3, 7, kdim or 8)
    if not batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    if call.get("attn_mask") == "float":
        call["attn_mask"] = torch.randn(5, 7)
    elif call.get("attn_mask") == "bool":
        call["attn_mask"] = torch.rand(5, 7) > 0.7
    if call.pop("key_padding_mask", False):
        call["key_padding_mask"] = torch.arange(7).expand(3, 7) >= torch.tensor([[7], [5], [3]])
    expected, got = mha(query, key, key, **call), split(query, key, key, **call)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert (got[1] is None) == (expected[1] is None)
    if expected[1] is not None:
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


def test_nn_multihead_attention_heads_are_pruned_and_the_pruned_module_states_its_head_count():
    from infoprune.models.families import FAMILIES
    from infoprune.network.layers import SplitMultiheadAttention

    torch.manual_seed(0)
    model, shape = FAMILIES["vit"]()
    inputs = torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    result = infoprune.prune(model, (inputs, torch.arange(64) % 5), method="random", ratio=0.5, device="cpu", progress=None)
    attention = result.model.block.attn
    assert isinstance(attention, SplitMultiheadAttention) and isinstance(model.block.attn, nn.MultiheadAttention)
    kept = int(result.masks["block.attn.q_proj"].sum())
    assert attention.num_heads == kept and attention.q_proj.out_features == kept * attention.head_dim
    assert_physical_model_is_the_masked_one(model.eval(), inputs[:8], result)


def test_nn_multihead_attention_with_bias_k_stays_whole_with_the_reason():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Linear(3, 8), nn.Linear(8, 5)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.embed(x))
            return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))

    with pytest.raises(ValueError, match=r"^The model has no prunable group of channels \(embed: attn \(MultiheadAttention\) "
                       r"mixes channels, so removing one changes the others; head: it is \(coupled to\) the output layer\): "
                       r"nothing can be removed without changing what it computes\. "):
        Network(Block().eval(), torch.randn(2, 4, 3))


def test_an_adapter_naming_a_missing_attribute_leaves_the_heads_whole_and_names_the_fix():
    register_attention(OpaqueAttention, ProjectionAttention("q", "k", "v", "out", heads="num_heads"))
    try:
        network = Network(opaque_model().eval(), token_ids(4)[:2])
        assert network.whole["blocks.0.attn"] == (
            "its attention heads stay whole: its adapter names an attribute the module lacks (OpaqueAttention has no "
            "attribute `out`): fix the paths given to ProjectionAttention")
    finally:
        from infoprune.network.attention import ADAPTERS
        ADAPTERS.pop(OpaqueAttention)


def test_projection_attention_needs_heads_or_head_dim():
    with pytest.raises(ValueError, match=r"^ProjectionAttention needs heads= or head_dim= \(the attribute holding the "
                                         r"number of query heads or their width\), to tell the heads apart\.$"):
        ProjectionAttention("q", "k", "v", "o")


@pytest.mark.parametrize("ignore", [["blocks.0.attn"], [Attention]])
def test_ignore_leaves_an_attentions_heads_whole(ignore):
    model, inputs = transformer_data("bert-like")
    network = Network(model.eval(), inputs[:2], ignore=ignore)
    assert network.whole["blocks.0.attn"].startswith("ignore= names ['blocks.0.attn")
    assert "blocks.0.attn.q" not in network.names and "blocks.0.ffn.up" in network.names
