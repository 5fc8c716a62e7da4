"""``prune(..., compensate=True)``: the removed units' least-squares prediction folded into the
consumers (infoprune.network.compensation)."""

import logging
import re
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import infoprune
from infoprune.estimators.reconstruction import linear_substitution
from infoprune.methods.base import MaskDecision, PruningMethod
from infoprune.models import build_model
from infoprune.models.families import FAMILIES
from infoprune.network import Network
from infoprune.network import compensation
from infoprune.network.compensation import RIDGE, feature_rows, input_moments


class Fixed(PruningMethod):
    """Test method with a known answer: the masks it is given."""

    name = "test-fixed"

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def decide(self, context) -> MaskDecision:
        return MaskDecision(dict(self.masks))


def drop_first(network: Network, fraction: float = 0.5) -> dict[str, torch.Tensor]:
    masks = {}
    for group in network.groups:
        keep = torch.ones(group.units, dtype=torch.bool)
        keep[: int(fraction * group.units)] = False
        masks[group.name] = keep
    return masks


def test_a_removed_unit_that_its_neighbours_predict_is_put_back_exactly(monkeypatch):
    """Hidden unit 2 is unit 0 + unit 1 (all positive, so the ReLU is linear): removing it with
    compensation leaves the network's output as it was; without, it changes."""
    torch.manual_seed(0)
    first, second = nn.Linear(4, 3), nn.Linear(3, 2)
    with torch.no_grad():
        first.weight.copy_(torch.rand(3, 4))
        first.bias.copy_(torch.rand(3))
        first.weight[2] = first.weight[0] + first.weight[1]
        first.bias[2] = first.bias[0] + first.bias[1]
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    x = torch.rand(200, 4)
    masks = {"0": torch.tensor([True, True, False])}
    monkeypatch.setattr(compensation, "RIDGE", 0.0)  # the relation is exact: no ridge needed
    exact = infoprune.prune(model, x, Fixed(masks), device="cpu", compensate=True, progress=False)
    plain = infoprune.prune(model, x, Fixed(masks), device="cpu", progress=False)
    assert exact.model[2].weight.shape == (2, 2)
    torch.testing.assert_close(exact.model(x), model(x), atol=1e-4, rtol=1e-4)
    assert (plain.model(x) - model(x)).abs().max() > 0.1
    assert exact.compensated == ["2"] and plain.compensated == []


@contextmanager
def substituted(network: Network, masks: dict[str, torch.Tensor], inputs: torch.Tensor):
    """The masked network in which every consumer reads the least-squares prediction of its removed
    features from its kept ones (what compensation should compute, written as input hooks)."""
    removed = network.removed_inputs(masks)
    moments = input_moments(network, list(removed), inputs, torch.device("cpu"))

    def hook(name: str, module: nn.Module):
        gone = removed[name]
        coefficients = linear_substitution(moments[name], gone, RIDGE).float()

        def impute(_module, args):
            x = args[0]
            rows = feature_rows(x, module).clone()
            rows[:, gone] = torch.cat([rows[:, ~gone], torch.ones(len(rows), 1)], dim=1) @ coefficients
            shaped = rows.reshape(x.shape) if isinstance(module, nn.Linear) else rows.reshape(x.shape[0], *x.shape[2:], x.shape[1]).movedim(-1, 1)
            return (shaped, *args[1:])
        return impute

    modules = {name: network.model.get_submodule(name) for name in removed}
    handles = [module.register_forward_pre_hook(hook(name, module)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def test_the_compensated_physical_model_is_the_substituted_masked_one():
    """LeNet-5: conv2 (no padding) and fc1 (behind the flatten) read the removed units; the
    physical model computes what the masked model with the substitution hooks computes."""
    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    x = torch.randn(300, 1, 28, 28)
    network = Network(model, x[:2])
    masks = drop_first(network)
    result = infoprune.prune(model, x, Fixed(masks), device="cpu", compensate=True, progress=False)
    with substituted(network, masks, x):
        expected = model(x[:50])
    torch.testing.assert_close(result.model(x[:50]), expected, atol=1e-4, rtol=1e-4)
    uncompensated = infoprune.prune(model, x, Fixed(masks), device="cpu", progress=False).model(x[:50])
    assert (uncompensated - expected).abs().max() > 1e-2


def test_every_method_takes_compensate_and_unsupported_consumers_are_logged(caplog):
    """A grouped bottleneck: its grouped 3×3 convs are left as surgery makes them, with the reason;
    its bias-free convs before BatchNorm get the weights but not the constant."""
    torch.manual_seed(0)
    model, _shape = FAMILIES["grouped-bottleneck"]()
    model.eval()
    x = torch.randn(64, 3, 16, 16)
    caplog.set_level(logging.INFO, logger="infoprune")
    for method in ("l1", "tp-magnitude"):
        result = infoprune.prune(model, x, method, flops=0.6, device="cpu", compensate=True, progress=False)
        assert torch.isfinite(result.model(x[:4])).all()
    assert re.search(r"compensation: \S+ is left as surgery makes it: a grouped convolution \(\d groups\)", caplog.text)
    assert "has no bias; the removed units' mean is not put back" in caplog.text


def test_compensate_must_be_a_bool():
    with pytest.raises(ValueError, match=re.escape("compensate must be True or False, got 'yes'.")):
        infoprune.prune(build_model("lenet5"), torch.randn(8, 1, 28, 28), "l1", ratio=0.5, compensate="yes")


def test_a_run_and_a_sweep_take_compensate_and_older_run_ids_stay():
    """``RunConfig(compensate=True)`` prunes with compensation; in a sweep's ``[training]`` it
    enters a run's id only when set, so the ids of sweeps that never set it do not change."""
    from infoprune.data import DatasetSplits, LabelledTensors
    from infoprune.experiments.pipeline import RunConfig, run
    from infoprune.experiments.sweep import plan
    from infoprune.experiments.sweep_config import parse_config

    torch.manual_seed(0)
    tensors = LabelledTensors(torch.randn(64, 1, 28, 28), torch.arange(64) % 10)
    data = DatasetSplits("mnist", tensors, tensors, tensors, 10)
    config = RunConfig(method="l1", method_params={"ratio": 0.5, "scope": "layer"}, pretrained=False, retrain_epochs=0,
                       calibration_samples=64, device="cpu", compensate=True)  # fmt: skip
    result, record = run(config, data)
    assert result.compensated == ["conv2", "fc1", "fc2", "fc3"] and record.pruning["compensated"] == result.compensated

    def ids(training: dict) -> list[str]:
        raw = {"grid": {"models": ["lenet5"], "datasets": ["mnist"]}, "training": training,
               "methods": [{"name": "l1", "params": {"ratio": 0.5}}]}  # fmt: skip
        return [planned.run_id for planned in plan(parse_config(raw))]

    assert ids({}) == ids({"compensate": False}) != ids({"compensate": True})
