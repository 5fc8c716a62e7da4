"""Model registry: ``build_model("lenet5")`` and friends, for the CLI and experiments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from infoprune.models.lenet import MLP, LeNet5
from infoprune.models.resnet import ResNet, ResidualBlock, cifar_resnet, resnet18, resnet34, resnet50
from infoprune.models.resnet_imagenet import ImageNetResNet, resnet18_imagenet, resnet34_imagenet, resnet50_imagenet
from infoprune.models.vgg import VGG, vgg


@dataclass(frozen=True)
class ModelSpec:
    """How to build a registered model and what input it expects (C, H, W)."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    description: str


MODELS: dict[str, ModelSpec] = {
    "lenet5": ModelSpec(LeNet5, (1, 28, 28), "LeNet-5: conv 6, conv 16, fc 120, fc 84, fc classes"),
    "lenet300": ModelSpec(lambda **kw: MLP((300, 100), **kw), (1, 28, 28), "LeNet-300-100 MLP"),
    "vgg11": ModelSpec(lambda **kw: vgg(11, **kw), (3, 32, 32), "VGG11-BN, CIFAR head (pool, fc 512, fc classes)"),
    "vgg16": ModelSpec(lambda **kw: vgg(16, **kw), (3, 32, 32), "VGG16-BN, CIFAR head (pool, fc 512, fc classes)"),
    "vgg19": ModelSpec(lambda **kw: vgg(19, **kw), (3, 32, 32), "VGG19-BN, CIFAR head (pool, fc 512, fc classes)"),
    "resnet18": ModelSpec(resnet18, (3, 32, 32), "ResNet18, basic blocks, CIFAR 3x3 stem"),
    "resnet34": ModelSpec(resnet34, (3, 32, 32), "ResNet34, basic blocks, CIFAR 3x3 stem"),
    "resnet50": ModelSpec(resnet50, (3, 32, 32), "ResNet50, bottleneck blocks, CIFAR 3x3 stem"),
    "resnet20": ModelSpec(lambda **kw: cifar_resnet(20, **kw), (3, 32, 32), "CIFAR ResNet20 (16/32/64, He et al. 4.2)"),
    "resnet56": ModelSpec(lambda **kw: cifar_resnet(56, **kw), (3, 32, 32), "CIFAR ResNet56 (16/32/64, He et al. 4.2)"),
    "resnet18-imagenet": ModelSpec(resnet18_imagenet, (3, 224, 224), "ResNet18, ImageNet 7x7 stem + max-pool, torchvision keys"),
    "resnet34-imagenet": ModelSpec(resnet34_imagenet, (3, 224, 224), "ResNet34, ImageNet 7x7 stem + max-pool, torchvision keys"),
    "resnet50-imagenet": ModelSpec(resnet50_imagenet, (3, 224, 224), "ResNet50, ImageNet 7x7 stem + max-pool, torchvision keys"),
    "mlp500": ModelSpec(
        lambda **kw: MLP((500, 300), dropout=0.2, **kw), (1, 28, 28), "MINT's MNIST MLP: 784-500-300-10, dropout 0.2"
    ),
}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name``; a clear error lists the valid names."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available: {', '.join(sorted(MODELS))}.")
    return MODELS[name].factory(num_classes=num_classes, **kwargs)


__all__ = [
    "MLP",
    "MODELS",
    "VGG",
    "LeNet5",
    "ImageNetResNet",
    "ModelSpec",
    "ResNet",
    "ResidualBlock",
    "build_model",
    "cifar_resnet",
    "resnet18",
    "resnet34",
    "resnet18_imagenet",
    "resnet34_imagenet",
    "resnet50",
    "resnet50_imagenet",
    "vgg",
]
