"""MIPP through the public API: known answers, the physical model, no collapse."""

import re

import pytest
import torch
from torch import nn

import infoprune
from infoprune.network import Network
from infoprune.models import build_model

TINY = dict(hidden_size=32, fit_iterations=30, refit_iterations=3, ordering_iterations=3)


def redundant_net(copies=3, dead=3, seed=0):
    """Linear(6→H) ReLU Linear(H→4) whose hidden layer is a teacher's 3 units: unit 0 single,
    units 1 and 2 copied ``copies`` times (outgoing weights split), plus ``dead`` units with
    no outgoing weight. The net computes the teacher exactly."""
    g = torch.Generator().manual_seed(seed)
    w_in, readout = torch.randn(3, 6, generator=g), torch.randn(4, 3, generator=g)
    readout[:, 0] *= 3
    rows, cols = [w_in[0]], [readout[:, 0]]
    for j in (1, 2):
        rows += [w_in[j]] * copies
        cols += [readout[:, j] / copies] * copies
    dead_rows = torch.randn(dead, 6, generator=g)
    hidden = 1 + 2 * copies + dead
    net = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 4))
    with torch.no_grad():
        net[0].weight.copy_(torch.cat([torch.stack(rows), dead_rows]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.cat([torch.stack(cols, 1), torch.zeros(4, dead)], 1))
        net[2].bias.zero_()
    return net


@pytest.mark.parametrize("engine", ["gaussian", "fast", "reference"])
def test_removes_copies_and_dead_units_keeps_unique_ones(engine):
    net = redundant_net()
    x = torch.randn(600, 6, generator=torch.Generator().manual_seed(1))
    result = infoprune.prune(
        net, x, "mipp", confidence=0.9, engine=engine, hidden_size=64, fit_iterations=400, refit_iterations=40,
        ordering_iterations=10,
    )
    keep = result.masks["0"]
    assert keep[0] and keep[1:4].sum() == 1 and keep[4:7].sum() == 1 and not keep[7:].any()
    assert result.layers["0"].kept == 3 and not result.collapsed
    assert result.model[0].out_features == 3


@pytest.fixture(scope="module")
def lenet_result():
    torch.manual_seed(0)
    model = build_model("lenet5")
    x = torch.randn(240, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = infoprune.prune(model, x, "mipp", confidence=0.99, device="cpu", **TINY)
    return model, x, before, result


def test_lenet_physical_model_matches_masked_model(lenet_result):
    model, x, _, result = lenet_result
    structure = Network(model, x[:2])
    with structure.masked(result.masks), torch.no_grad():
        expected = model(x)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), expected, atol=1e-5, rtol=1e-5)


def test_lenet_result_shape_and_no_collapse(lenet_result):
    model, _, before, result = lenet_result
    assert set(result.masks) == {"conv1", "conv2", "fc1", "fc2"}
    assert all(m.dtype == torch.bool for m in result.masks.values())
    assert not result.collapsed and all(s.kept >= 1 for s in result.layers.values())
    assert result.params_after < result.params_before and result.flops_after < result.flops_before
    pruned = result.model
    assert pruned.conv1.out_channels == result.layers["conv1"].kept
    assert pruned.fc2.out_features == result.layers["fc2"].kept
    assert pruned.fc3.out_features == 10
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key]), key
    assert result.input_mask is None
    assert set(result.details["seconds"]) == {"recording", "ordering", "terc"}


def small_mlp(pixels=8, hidden=12):
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels * pixels, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_input_selection_masks_pixels_and_matches():
    model = small_mlp()
    x = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[:, :, :2] = 0.0  # a band of pixels that never varies carries no information
    result = infoprune.prune(model, x, "mipp", select_inputs=True, device="cpu", **TINY)
    mask = result.input_mask
    assert mask is not None and mask.shape == (64,) and mask.dtype == torch.bool
    assert not mask.reshape(8, 8)[:2].any() and 1 <= mask.sum() < 64
    structure = Network(model, x[:2])
    with structure.masked(result.masks, mask), torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(result.model(x), expected, atol=1e-5, rtol=1e-5)


def test_dataloader_calibration_data_is_accepted():
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    result = infoprune.prune(small_mlp(), loader, "mipp", device="cpu", **TINY)
    assert set(result.masks) == {"1"}


def test_too_few_samples_for_the_widest_layer():
    with pytest.raises(ValueError, match=r"at least 240 calibration samples.*'fc1' with 120 units"):
        infoprune.prune(build_model("lenet5"), torch.randn(100, 1, 28, 28), "mipp", device="cpu", **TINY)


def test_prune_takes_a_configured_method_object():
    from infoprune.methods.mipp import MIPP

    net = redundant_net()
    x = torch.randn(600, 6, generator=torch.Generator().manual_seed(1))
    by_object = infoprune.prune(net, x, MIPP(confidence=0.9, engine="gaussian"), progress=None)
    by_name = infoprune.prune(net, x, "mipp", confidence=0.9, engine="gaussian", progress=None)
    assert by_object.method == "mipp" and by_object.config == by_name.config
    assert all(torch.equal(by_object.masks[k], by_name.masks[k]) for k in by_name.masks)
    message = (
        "prune() got a configured MIPP and method settings ['confidence']; set them on the object "
        "(MIPP(confidence=...)) or pass the method by name."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        infoprune.prune(net, x, MIPP(), confidence=0.5)
