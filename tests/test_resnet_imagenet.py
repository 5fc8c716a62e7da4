"""The ImageNet ResNets have torchvision's exact parameter layout and load standard checkpoints."""

import pytest
import torch

from infoprune.models import build_model
from infoprune.models.weights import load_weights


def torchvision_layout(blocks: tuple[int, ...], bottleneck: bool, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of torchvision's resnet18/34/50, written out from its rules."""
    layout: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (channels,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    layout["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    channels = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for i in range(count):
            p = f"layer{stage}.{i}"
            convs = [(width, channels, 1), (width, width, 3), (4 * width, width, 1)] if bottleneck else [
                (width, channels, 3), (width, width, 3)]  # fmt: skip
            for j, (out, fan_in, k) in enumerate(convs, start=1):
                layout[f"{p}.conv{j}.weight"] = (out, fan_in, k, k)
                bn(f"{p}.bn{j}", out)
            out = convs[-1][0]
            if i == 0 and (stage > 1 or channels != out):
                layout[f"{p}.downsample.0.weight"] = (out, channels, 1, 1)
                bn(f"{p}.downsample.1", out)
            channels = out
    layout["fc.weight"] = (classes, channels)
    layout["fc.bias"] = (classes,)
    return layout


LAYOUTS = {
    "resnet18-imagenet": ((2, 2, 2, 2), False, 11_689_512),
    "resnet34-imagenet": ((3, 4, 6, 3), False, 21_797_672),
    "resnet50-imagenet": ((3, 4, 6, 3), True, 25_557_032),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_state_dict_has_torchvisions_keys_shapes_and_parameter_count(name):
    blocks, bottleneck, params = LAYOUTS[name]
    model = build_model(name, num_classes=1000)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == torchvision_layout(blocks, bottleneck)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def standard_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    layout = torchvision_layout((3, 4, 6, 3), True)
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=generator)
        for k, shape in layout.items()
    }


def test_a_generated_standard_checkpoint_loads_from_pth_and_safetensors(tmp_path):
    state = standard_state_dict()
    state = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    torch.save(state, tmp_path / "resnet50.pth")
    model = load_weights(build_model("resnet50-imagenet", num_classes=1000), tmp_path / "resnet50.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(state, str(tmp_path / "resnet50.safetensors"))
    again = load_weights(build_model("resnet50-imagenet", num_classes=1000), tmp_path / "resnet50.safetensors")
    assert torch.equal(again.fc.weight, state["fc.weight"])


def test_an_old_checkpoint_without_batchnorm_counters_loads(tmp_path):
    state = {k: v for k, v in standard_state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "old.pth")
    model = load_weights(build_model("resnet50-imagenet", num_classes=1000), tmp_path / "old.pth")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_a_checkpoint_with_a_wrong_key_is_refused_with_the_list(tmp_path):
    state = standard_state_dict()
    state["fc.kernel"] = state.pop("fc.weight")
    state["layer1.0.conv1.weight"] = torch.randn(64, 64, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as error:
        load_weights(build_model("resnet50-imagenet", num_classes=1000), tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing keys: 1 (fc.weight)" in message
    assert "unexpected keys: 1 (fc.kernel)" in message
    assert "layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in message


def test_a_cifar_checkpoint_is_refused_by_the_imagenet_model(tmp_path):
    torch.save(build_model("resnet50").state_dict(), tmp_path / "cifar.pth")
    with pytest.raises(ValueError, match=r"missing keys: \d+ \(.*, …\); unexpected keys"):
        load_weights(build_model("resnet50-imagenet", num_classes=10), tmp_path / "cifar.pth")


def test_a_pickled_module_is_refused_and_a_missing_file_named(tmp_path):
    torch.save(build_model("resnet18-imagenet"), tmp_path / "module.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights(build_model("resnet18-imagenet"), tmp_path / "module.pth")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_weights(build_model("resnet18-imagenet"), tmp_path / "nothing.pth")
