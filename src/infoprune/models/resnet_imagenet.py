"""ImageNet ResNet18/34/50 (He et al. 2016, Table 1) in the standard (torchvision) parameter layout.

The stem is a 7×7 stride-2 conv, BatchNorm, ReLU and a 3×3 stride-2 max-pool; four stages of
basic blocks (18, 34) or bottlenecks (50) with widths 64-128-256-512 (×4 out of a bottleneck);
global average pool and ``fc``. The stride of a bottleneck sits on its 3×3 conv ("ResNet v1.5",
as torchvision's weights), and a block that changes shape has a 1×1 conv + BatchNorm
``downsample`` projection.

Every module is named so that ``state_dict()`` has exactly torchvision's keys and shapes
(``conv1``, ``bn1``, ``layer1.0.conv1``, …, ``layer2.0.downsample.0/1``, ``fc``), so a standard
ImageNet checkpoint loads as is (:func:`infoprune.models.weights.load_weights`). Unlike
torchvision, each ReLU is its own module (no parameters, so the keys are unchanged): the
activation hooks of pruning then see each use separately.

These are the networks of MIPP §5 (pre-trained ResNet50 on ImageNet, Fig. 6), MINT Table 1
and ITPruner; the CIFAR-style ResNets of :mod:`infoprune.models.resnet` keep their own layout.
"""

from __future__ import annotations

import torch
from torch import nn


class TorchvisionBlock(nn.Module):
    """A basic block (two 3×3 convs) or a bottleneck (1×1, 3×3, 1×1 ×4), torchvision's names."""

    def __init__(self, in_channels: int, width: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        if bottleneck:
            shapes = [(in_channels, width, 1, 1), (width, width, 3, stride), (width, 4 * width, 1, 1)]
        else:
            shapes = [(in_channels, width, 3, stride), (width, width, 3, 1)]
        self.depth = len(shapes)
        for i, (fan_in, fan_out, kernel, conv_stride) in enumerate(shapes, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(fan_in, fan_out, kernel, conv_stride, kernel // 2, bias=False))
            self.add_module(f"bn{i}", nn.BatchNorm2d(fan_out))
            self.add_module(f"relu{i}", nn.ReLU())
        self.out_channels = shapes[-1][1]
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != self.out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, self.out_channels, 1, stride, bias=False), nn.BatchNorm2d(self.out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = getattr(self, f"relu{i}")(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return getattr(self, f"relu{self.depth}")(out + shortcut)


class ImageNetResNet(nn.Module):
    """7×7/2 conv-BN-ReLU, 3×3/2 max-pool, ``stage_blocks`` blocks per stage, pool, ``fc``."""

    def __init__(
        self, stage_blocks: tuple[int, ...], bottleneck: bool, num_classes: int = 1000, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for stage, (blocks, width) in enumerate(zip(stage_blocks, (64, 128, 256, 512)), start=1):
            layers = []
            for i in range(blocks):
                stride = 2 if stage > 1 and i == 0 else 1
                layers.append(TorchvisionBlock(channels, width, stride, bottleneck))
                channels = layers[-1].out_channels
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # He et al.'s initialisation, as torchvision
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_imagenet(**kwargs) -> ImageNetResNet:
    return ImageNetResNet((2, 2, 2, 2), bottleneck=False, **kwargs)


def resnet34_imagenet(**kwargs) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), bottleneck=False, **kwargs)


def resnet50_imagenet(**kwargs) -> ImageNetResNet:
    return ImageNetResNet((3, 4, 6, 3), bottleneck=True, **kwargs)
