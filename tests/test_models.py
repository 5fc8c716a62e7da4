"""The CIFAR networks: shapes, which channels are prunable, surgery and MIPP on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infoprune
from infoprune.models.families import randomise_batchnorm
from infoprune.metrics import count_params
from infoprune.models import MODELS, VGG, ResidualBlock, build_model
from infoprune.network import Network

CIFAR_MODELS = ["vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet20", "resnet56"]
RESNETS = [name for name in CIFAR_MODELS if name.startswith("resnet")]


def random_masks(structure, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keep about half of every prunable layer's units, at least one."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for layer in structure.groups:
        mask = torch.rand(layer.units, generator=generator) < 0.5
        mask[torch.randint(layer.units, (1,), generator=generator)] = True
        masks[layer.name] = mask
    return masks


def out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def assert_equals_masked_model(model, structure, masks, pruned, inputs, atol: float = 1e-5) -> None:
    """``pruned`` is smaller, every producer of a group has the group's kept channels (one unit
    of an emptied group), groups left whole keep their width, and ``pruned`` computes what
    ``model`` computes with the masked units zeroed."""
    assert count_params(pruned) < count_params(model)
    pruned_modules = dict(pruned.named_modules())
    for name, mask in masks.items():
        for producer in structure.group(name).producers:
            kept = producer.positions[mask if mask.any() else [0]].numel()
            assert out_channels(pruned_modules[producer.name]) == kept, producer.name
    for name in structure.whole:
        assert out_channels(pruned_modules[name]) == out_channels(structure.modules[name]), name
    with torch.no_grad(), structure.masked(masks):
        expected = model(inputs)
    with torch.no_grad():
        actual = pruned.eval()(inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=atol)


def check_surgery_matches_masked_model(model: nn.Module, inputs: torch.Tensor, atol: float = 1e-5) -> None:
    """Prune ``model`` with random masks; the smaller copy must compute what the masked one does."""
    structure = Network(model, inputs[:2])
    masks = random_masks(structure)
    pruned = structure.apply_masks(masks)
    assert_equals_masked_model(model, structure, masks, pruned, inputs, atol)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_model_runs_on_its_input_shape_with_configurable_classes_and_channels(name):
    assert MODELS[name].input_shape == (3, 32, 32)
    assert build_model(name).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grey = build_model(name, num_classes=7, in_channels=1).eval()
    assert grey(torch.randn(2, 1, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_173_962), ("resnet50", 23_520_842)])
def test_resnet_parameter_counts_match_the_usual_cifar_variants(name, params):
    assert count_params(build_model(name)) == params


@pytest.mark.parametrize(("name", "depth"), [("resnet20", 20), ("resnet56", 56)])
def test_cifar_resnets_have_the_depth_of_he_et_al_section_4_2(name, depth):
    model = build_model(name)
    main_path = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in n]
    assert len(main_path) == depth
    assert {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)} == {16, 32, 64}


@pytest.mark.parametrize("name", RESNETS)
def test_branch_convs_are_groups_of_their_own_and_each_residual_stream_is_one_group(name):
    model = build_model(name).eval()
    structure = Network(model, torch.randn(2, 3, 32, 32))
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, ResidualBlock)]
    # the stem writes the first stream unless the first block projects its input
    stream_writers = {"conv1"} if isinstance(blocks[0][1].shortcut, nn.Identity) else set()
    for block_name, block in blocks:
        convs = [f"{block_name}.branch.{n}" for n, m in block.branch.named_children() if isinstance(m, nn.Conv2d)]
        for inner, following in zip(convs[:-1], convs[1:]):
            assert [p.name for p in structure.group(inner).producers] == [inner]
            assert [c.name for c in structure.group(inner).consumers] == [following]
        stream = structure.group_of_producer(convs[-1])
        assert stream is not None and stream.coupled
        stream_writers.add(convs[-1])
        if isinstance(block.shortcut, nn.Sequential):
            assert structure.group_of_producer(f"{block_name}.shortcut.conv") is stream
            stream_writers.add(f"{block_name}.shortcut.conv")
    streams = [g for g in structure.groups if g.coupled]
    assert {p.name for g in streams for p in g.producers} == stream_writers
    # every conv is prunable, as part of some group: only the output layer stays whole
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {p.name for g in structure.groups for p in g.producers} == convs
    assert list(structure.whole) == ["fc"] and structure.output_name == "fc"


@pytest.mark.parametrize("name", ["vgg11", "vgg19"])
def test_every_vgg_conv_and_hidden_linear_is_prunable(name):
    model = build_model(name).eval()
    structure = Network(model, torch.randn(2, 3, 32, 32))
    hidden = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    assert structure.names == hidden
    assert list(structure.whole) == [structure.output_name] and not any(g.coupled for g in structure.groups)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_surgery_gives_a_smaller_model_equal_to_the_masked_one(name):
    model = randomise_batchnorm(build_model(name))
    check_surgery_matches_masked_model(model, torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


class UserResidualNet(nn.Module):
    """A residual net written the way a user might: functional adds, a 3-conv branch, a
    strided conv between blocks, and a linear head reading flattened conv maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a1, self.a2 = nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(12, 8, 3, padding=1)
        self.b1, self.b2, self.b3 = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 10, 3, padding=1), nn.Conv2d(10, 8, 1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(12), nn.BatchNorm2d(10)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.a2(torch.relu(self.bn_a(self.a1(x)))))
        x = torch.relu(x + self.b3(torch.relu(self.bn_b(self.b2(torch.relu(self.b1(x)))))))
        return self.head(torch.relu(self.down(x)))


def test_a_user_defined_residual_net_is_analysed_and_pruned_without_model_specific_code():
    model = randomise_batchnorm(UserResidualNet())
    inputs = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    structure = Network(model, inputs[:2])
    assert structure.names == ["stem.0", "a1", "b1", "b2", "down", "head.2"]
    assert [p.name for p in structure.group("stem.0").producers] == ["stem.0", "a2", "b3"]
    assert [c.name for c in structure.group("down").consumers] == ["head.2"]
    check_surgery_matches_masked_model(model, inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_surgery_on_cuda_matches_the_masked_model():
    model = randomise_batchnorm(build_model("resnet20")).cuda()
    # cuDNN convolutions run in TF32 by default: compare at that precision.
    check_surgery_matches_masked_model(model, torch.randn(6, 3, 32, 32, device="cuda"), atol=1e-2)


# MIPP with tiny iteration counts: this checks the plumbing on every network, not the quality.
TINY_MIPP = {
    "fit_iterations": 20,
    "refit_iterations": 2,
    "ordering_iterations": 2,
    "repeats": 3,
    "hidden_size": 32,
    "confidence": 0.99,
}
FAST_FOR_MIPP = {"resnet20"}  # the others test thousands of units: minutes on a CPU


def prune_with_tiny_mipp(model: nn.Module, sample_shape: tuple[int, ...]) -> None:
    """MIPP on as few random samples as it accepts (twice the widest layer), then the checks."""
    model = randomise_batchnorm(model)
    widest = max(layer.units for layer in Network(model, torch.randn(2, *sample_shape)).groups)
    inputs = torch.randn(max(40, 2 * widest), *sample_shape, generator=torch.Generator().manual_seed(0))
    result = infoprune.prune(model, inputs, method="mipp", device="cpu", seed=0, **TINY_MIPP)
    structure = Network(model, inputs[:2])
    assert set(result.masks) == set(structure.names)
    assert result.params_before == count_params(model) and result.params_after == count_params(result.model)
    assert_equals_masked_model(model, structure, result.masks, result.model.cpu(), inputs[:64])


@pytest.mark.parametrize(
    "name", [n if n in FAST_FOR_MIPP else pytest.param(n, marks=pytest.mark.slow) for n in CIFAR_MODELS]
)
def test_mipp_prunes_each_network_to_a_smaller_one_that_computes_the_masked_model(name):
    prune_with_tiny_mipp(build_model(name), MODELS[name].input_shape)


def test_mipp_prunes_a_narrow_vgg():
    prune_with_tiny_mipp(VGG((16, "M", 24, "M", 32, "M"), classifier_hidden=(24,)), (3, 32, 32))


def test_mipp_prunes_a_user_defined_residual_net():
    prune_with_tiny_mipp(UserResidualNet(), (3, 16, 16))
