"""Every method on compact versions of the architecture families of a widely used model zoo.

For each family (:mod:`infoprune.models.families`) and each registered method, through ``infoprune.prune``:
the physical model equals the masked one (after randomising BatchNorm statistics), it is
smaller, its FLOPs drop, and ITPruner meets ``flops=0.5``. Small settings keep every run to
about a second on one CPU thread; ``progress=None`` is used throughout.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import infoprune
from families import assert_physical_model_is_the_masked_one
from infoprune.data import LabelledTensors
from infoprune.models.families import FAMILIES, FAMILY_SETTINGS, QUICK_SETTINGS, family_data
from infoprune.network import Network

@pytest.mark.parametrize("method", sorted(QUICK_SETTINGS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_prunes_every_family_to_the_masked_model(family, method):
    model, data = family_data(family)
    options = dict(QUICK_SETTINGS[method], allow_collapse=True, **FAMILY_SETTINGS.get((family, method), {}))  # a chain at ratio 0.5 may collapse: compared all the same
    if method == "tp-bn-scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        with pytest.raises(ValueError, match=r"BNScaleImportance finds nothing to score in any prunable group"):
            infoprune.prune(model, data, method=method, device="cpu", progress=None, **options)
        return
    result = infoprune.prune(model, data, method=method, device="cpu", progress=None, **options)
    assert result.params_after < result.params_before
    assert result.flops_after < result.flops_before
    assert_physical_model_is_the_masked_one(model, data.inputs[:8], result)
    if method == "itpruner":
        assert result.flops_after <= options["flops"] * result.flops_before


def test_every_registered_method_is_covered():
    assert sorted(QUICK_SETTINGS) == infoprune.available_methods()


@pytest.mark.parametrize(
    ("family", "reason"),
    [("channel-shuffle", "maps its channels unevenly (a channel shuffle or reshape)")],
)
def test_groups_whose_removal_would_differ_from_masking_are_left_whole_with_a_reason(family, reason):
    model, data = family_data(family)
    network = Network(model, data.inputs[:2])
    assert any(reason in why for why in network.whole.values()), network.whole


def test_residual_streams_concatenations_and_gates_are_groups():
    model, data = family_data("bottleneck-residual")
    stream = Network(model, data.inputs[:2]).group_of_producer("1.conv3.0")
    assert [p.name for p in stream.producers] == ["1.conv3.0", "1.shortcut.0", "2.conv3.0"]
    model, data = family_data("inverted-residual-se")
    gated = Network(model, data.inputs[:2]).group_of_producer("1.se.fc2")
    assert {p.name for p in gated.producers} == {"1.expand.0", "1.depthwise.0", "1.se.fc2"}
    assert {c.name for c in gated.consumers} == {"1.se.fc1", "1.project.0"}
    model, data = family_data("dense")
    dense = Network(model, data.inputs[:2]).group("0")  # the stem's channels are read by every later layer of the block
    assert [c.name for c in dense.consumers] == ["1.layers.0.2", "1.layers.1.2", "1.layers.2.2", "4"]
    assert dense.consumers[1].positions[:, 0].tolist() == list(range(8))  # the first slice of cat(x, y)


def test_torchvision_layouts_shuffles_layernorm2d_and_shifted_windows_are_analysed():
    """ShuffleNetV2's channel-shuffle views no longer break (or explode) the trace, its branches
    prune and the shuffled channels stay whole; torchvision's ConvNeXt residual streams (read
    by LayerNorm2d) and Swin's window-attention heads (with their relative position bias rows) prune."""
    model, data = family_data("shufflenet-v2")
    network = Network(model, data.inputs[:2])
    assert {"1.branch2.0.0", "2.branch.0.0"} <= set(network.names) and "1.branch1.1.0" in network.whole
    model, data = family_data("convnext-torchvision")
    network = Network(model, data.inputs[:2])
    assert {"0", "4", "2.mlp.0", "5.mlp.0"} <= set(network.names), network.whole
    model, data = family_data("swin")
    network = Network(model, data.inputs[:2])
    heads = network.group("blocks.1.attn.qkv")
    assert heads.kind == "heads" and [p.name for p in heads.producers] == ["blocks.1.attn.qkv"]
    assert "blocks.1.attn.relative_position_bias_table" in {m.name for m in heads.members}
    pruned = network.apply_masks({"blocks.1.attn.qkv": torch.tensor([False, True])})
    table = pruned.blocks[1].attn.relative_position_bias_table
    assert pruned.blocks[1].attn.num_heads == 1 and (table.num_embeddings, table.embedding_dim) == (9, 1)
    assert "blocks.3.mlp.0" in network.names and "blocks.2.reduction" in network.names


def test_grouped_convolutions_prune_the_same_channels_in_every_conv_group():
    model, data = family_data("grouped-bottleneck")
    network = Network(model, data.inputs[:2])
    group = network.group("1.conv1.0")  # read by a conv with groups=2: unit j is channels j and j + 4
    assert group.units == 4 and group.consumers[0].positions.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    pruned = network.apply_masks({"1.conv1.0": torch.tensor([True, False, True, True])})
    assert pruned[1].conv2[0].weight.shape == (8, 3, 3, 3) and pruned[1].conv2[0].groups == 2


def test_ignore_takes_layer_names_and_module_types_and_the_output_layer_stays_whole():
    model, data = family_data("basic-residual")
    result = infoprune.prune(model, data, method="l1", ratio=0.5, device="cpu", progress=None, ignore=["1.conv1"])
    assert "1.conv1.0" not in result.masks and result.model[1].conv1[0].out_channels == 8
    assert Network(model, data.inputs[:2], ignore=["1.conv1.0"]).whole["1.conv1.0"] == "ignore= names ['1.conv1.0']"
    assert Network(model, data.inputs[:2]).whole == {"3.fc": "it is (coupled to) the output layer"}
    with pytest.raises(ValueError, match=r"no prunable group of channels \(0\.0: ignore= names \['0\.0', '1\.conv2\.0'\]"):
        Network(model, data.inputs[:2], ignore=[nn.Conv2d])
    chain, chain_data = family_data("plain")
    assert Network(chain, chain_data.inputs[:2], ignore=[nn.Linear]).names == ["0.0", "2.0"]
    with pytest.raises(ValueError, match="ignore= names 'nope', which is not a module of the model"):
        infoprune.prune(model, data, method="l1", ratio=0.5, device="cpu", ignore=["nope"])


class TupleOutput(nn.Module):
    """Returns (logits, auxiliary logits) or a dict of them, as auxiliary-head models do."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.body, self.head, self.aux = nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Linear(8, 3), nn.Linear(8, 2)
        self.as_dict = as_dict

    def forward(self, x):
        features = self.body(x)
        logits, aux = self.head(features), self.aux(features)
        return {"aux": aux, "logits": logits} if self.as_dict else (logits, aux)


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("method", ["l1", "snip", "itpruner"])
def test_models_returning_a_tuple_or_dict_are_read_through_their_logits(as_dict, method):
    torch.manual_seed(0)
    data = LabelledTensors(torch.randn(40, 6), torch.arange(40) % 3)
    options = {"flops": 0.6, "samples": 40} if method == "itpruner" else {"ratio": 0.5}
    result = infoprune.prune(TupleOutput(as_dict), data, method=method, device="cpu", progress=None, **options)
    assert result.layers["body.0"].kept < 8 and result.flops_after < result.flops_before


@pytest.mark.parametrize("frozen", ["first layer", "whole model"])
def test_frozen_layers_are_pruned_like_any_other(frozen):
    model, data = family_data("plain")
    for parameter in (model[0].parameters() if frozen == "first layer" else model.parameters()):
        parameter.requires_grad_(False)
    result = infoprune.prune(model, data, method="l1", ratio=0.5, device="cpu", progress=None, allow_collapse=True)
    assert result.layers["0.0"].kept < result.layers["0.0"].total
    assert_physical_model_is_the_masked_one(model, data.inputs[:8], result)
    assert not any(p.requires_grad for p in model[0].parameters())  # the caller's model is untouched


def test_prune_inside_no_grad_still_differentiates():
    model, data = family_data("plain")
    with torch.no_grad():
        result = infoprune.prune(model, data, method="snip", ratio=0.5, device="cpu", progress=None)
    assert result.flops_after < result.flops_before


class AcrossFeatures(nn.Module):
    """A hidden layer followed by an operation across its features, then the output layer."""

    def __init__(self, between: str) -> None:
        super().__init__()
        self.between = between
        self.a, self.norm = nn.Linear(5, 8), nn.GroupNorm(2, 8) if between == "groupnorm" else nn.LayerNorm(8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        if self.between == "softmax":
            h = torch.softmax(h, dim=-1)
        elif self.between == "mean-centring":
            h = h - h.mean(dim=-1, keepdim=True)
        elif self.between == "lstm":
            h = self.lstm(h[:, None])[0][:, 0]
        else:
            h = self.norm(h)
        return self.b(h)


@pytest.mark.parametrize(
    ("between", "reason"),
    [("softmax", "a softmax across its channels"), ("groupnorm", "norm (GroupNorm) mixes channels"),
     ("lstm", "lstm (LSTM) mixes channels"),
     ("mean-centring", "pruning its channels would change more than masking them does")],
)
def test_an_operation_across_features_leaves_the_layer_whole_and_says_why(between, reason):
    model = AcrossFeatures(between).eval()
    with pytest.raises(ValueError, match=rf"no prunable group of channels .*a: {re.escape(reason)}"):
        infoprune.prune(model, torch.randn(40, 5), method="l1", ratio=0.5, device="cpu", progress=None)


def test_a_layernorm_over_exactly_the_groups_channels_normalises_over_the_kept_ones():
    """ConvNeXt's channels-last LayerNorm: the masked model normalises over the kept channels,
    which is what the pruned LayerNorm computes, so the residual stream is prunable."""
    model, data = family_data("convnext")
    network = Network(model, data.inputs[:2])
    stream = network.group("0")
    assert {m.name for m in stream.members if isinstance(m.module, nn.LayerNorm)} == {"1.norm", "2.norm"}
    result = infoprune.prune(model, data, method="l1", ratio=0.5, device="cpu", progress=None)
    assert result.model[1].norm.normalized_shape == (int(result.masks["0"].sum()),)
    assert_physical_model_is_the_masked_one(model, data.inputs[:8], result)
    chain, inputs = AcrossFeatures("layernorm").eval(), torch.randn(40, 5)
    pruned = infoprune.prune(chain, inputs, method="l1", ratio=0.5, device="cpu", progress=None)
    assert pruned.layers["a"].kept == 4
    assert_physical_model_is_the_masked_one(chain, inputs, pruned)


def test_conv1d_networks_are_pruned_like_conv2d_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 6, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(6 * 10, 4)).eval()
    inputs = torch.randn(40, 3, 10)
    result = infoprune.prune(model, inputs, method="l1", ratio=0.5, device="cpu", progress=None)
    assert result.flops_after < result.flops_before and set(result.masks) == {"0", "3"}
    assert_physical_model_is_the_masked_one(model, inputs, result)


def test_mint_default_conditioning_names_the_fix_for_grouped_conv_blocks():
    model, data = family_data("grouped-bottleneck")
    with pytest.raises(ValueError, match=r"spans 2 channels per unit .*use conditioning='others'"):
        infoprune.prune(model, data, method="mint", device="cpu", progress=None, samples_per_class=8, groups=2)
