"""Layer collapse: emptied layers, and whether any input→output path survives the masks."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn

import infoprune
from infoprune.data import LabelledTensors
from infoprune.network import Network, emptied_groups
from infoprune.training import get_recipe, train


def chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)).eval()


def structure_of(model: nn.Module, x: torch.Tensor) -> Network:
    return Network(model, x[:2])


def retrain_briefly(model: nn.Module, x: torch.Tensor) -> None:
    data = LabelledTensors(x, torch.arange(len(x)) % 2)
    train(model, data, get_recipe("mnist-retrain", epochs=3, batch_size=4), device="cpu", seed=0)


def test_global_l1_empties_the_layer_of_tiny_weights_and_reports_the_collapse(caplog):
    model, x = chain(), torch.randn(8, 20)
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
        model[2].bias.fill_(0.5)  # the unit surgery keeps stays active, so its outgoing weights get gradients
    refused = (
        "Method 'l1' at ratio=0.5 collapses the network: layer(s) ['2'] lost every unit; no path from the input to "
        "the output survives, so the pruned model outputs a constant. Ask for a smaller budget, pass min_units=1 "
        "where the method takes it, or pass allow_collapse=True (CLI: --allow-collapse) to get the collapsed "
        "result anyway."
    )
    with pytest.raises(ValueError, match=re.escape(refused)):  # a budgeted call never returns a dead model silently
        infoprune.prune(model, x, method="l1", ratio=0.5, device="cpu")
    with caplog.at_level(logging.WARNING, logger="infoprune"):
        result = infoprune.prune(model, x, method="l1", ratio=0.5, device="cpu", allow_collapse=True)
    assert "COLLAPSE: method 'l1' at ratio=0.5: layer(s) ['2'] lost every unit; no path" in caplog.text
    assert result.collapsed_layers == ["2"] and result.layers["2"].kept == 0
    assert result.disconnected and result.collapsed and result.summary()["collapsed"]
    with torch.no_grad():  # the physical model agrees: its output no longer depends on the input
        outputs = result.model(x)
    assert torch.allclose(outputs, outputs[:1].expand_as(outputs))
    retrain_briefly(result.model, x)
    with torch.no_grad():  # re-training cannot revive the emptied layer
        assert torch.count_nonzero(result.model[4].weight) == 0
        retrained = result.model(x)
    assert torch.allclose(retrained, retrained[:1].expand_as(retrained))
    safe = infoprune.prune(model, x, method="l1", ratio=0.5, min_units=1, device="cpu")
    assert not safe.collapsed and safe.collapsed_layers == [] and safe.layers["2"].kept == 1


def test_connectivity_finds_a_cut_that_leaves_no_layer_empty_and_ignores_biases():
    """Hidden layer 2 reads only unit 0 of hidden layer 1; keeping unit 1 alone cuts every path."""
    model, x = chain(), torch.randn(4, 20)
    with torch.no_grad():
        model[2].weight[:, 1:] = 0
        model[2].bias.fill_(5.0)  # a bias is a constant, not a path from the input
    structure = structure_of(model, x)
    masks = {"0": torch.arange(10) == 1, "2": torch.ones(10, dtype=torch.bool)}
    assert emptied_groups(masks) == []
    assert structure.is_disconnected(masks)
    masks["0"] = torch.arange(10) == 0
    assert not structure.is_disconnected(masks)


def test_an_all_false_input_mask_disconnects():
    model, x = chain(), torch.randn(4, 20)
    structure = structure_of(model, x)
    full = {layer.name: torch.ones(layer.units, dtype=torch.bool) for layer in structure.groups}
    assert not structure.is_disconnected(full, input_mask=torch.ones(20, dtype=torch.bool))
    assert structure.is_disconnected(full, input_mask=torch.zeros(20, dtype=torch.bool))


class ResidualNet(nn.Module):
    """stem → [branch: conv_a → ReLU → conv_b] + skip → pool → fc: conv_a's units, and the
    residual stream (written by stem and conv_b) as one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_a = nn.Conv2d(4, 6, 3, padding=1)
        self.conv_b = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.conv_b(torch.relu(self.conv_a(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_a_dead_branch_beside_a_live_skip_is_not_a_collapse(caplog):
    torch.manual_seed(0)
    model, x = ResidualNet().eval(), torch.randn(4, 1, 8, 8)
    structure = structure_of(model, x)
    assert structure.names == ["stem", "conv_a"]
    assert [p.name for p in structure.group("stem").producers] == ["stem", "conv_b"]
    dead_branch = {"conv_a": torch.zeros(6, dtype=torch.bool)}
    with caplog.at_level(logging.WARNING, logger="infoprune"):
        result = infoprune.prune(model, x, method="reinit", masks=dead_branch, device="cpu")
    assert result.collapsed_layers == ["conv_a"]
    assert ("EMPTIED LAYERS: method 'reinit': layer(s) ['conv_a'] lost every unit (a path from the input to the "
            "output survives, e.g. through a skip connection).") in caplog.text  # fmt: skip
    assert not result.disconnected and not result.collapsed
