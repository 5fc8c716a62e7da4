"""ResNets for 32×32 inputs (He et al. 2016), built from one residual block class.

Two families:

* ResNet18/34 (basic blocks) and ResNet50 (bottleneck blocks), as pruned by MIPP on
  CIFAR-10/100 (§5): stage widths 64-128-256-512, with the CIFAR stem (one 3×3 conv,
  stride 1, no max-pool) instead of the ImageNet 7×7/stride-2 conv and pool.
* ResNet20/56, the CIFAR family of He et al. §4.2 (as reported by MINT and ITPruner):
  a 3×3 conv of 16 filters, then three stages of n basic blocks with 16, 32, 64 filters
  (n = 3 and 9).

Shortcuts: identity where shapes match; where a block changes width or resolution, a 1×1
strided conv + BatchNorm projection ("option B" of He et al. §3.3). The CIFAR experiments of
§4.2 used zero-padded identity shortcuts ("option A") instead; we use option B everywhere
because it is a plain module that torch-pruning's dependency graph traces like any user's
residual net, at the cost of a few extra parameters (ResNet56: +0.4%).

A block computes ``relu(branch(x) + shortcut(x))``. The outputs of all but the last conv of a
branch are prunable; the last conv, the projection and the stem are tied to the skip path
and are found as one coupled group (the residual stream) by :class:`infoprune.network.Network`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``; the branch is conv-BN(-ReLU) layers.

    ``widths``/``kernels`` give each branch conv's filters and kernel size: (w, w) / (3, 3)
    is a basic block, (w, w, 4w) / (1, 3, 1) a bottleneck. The stride sits on the first 3×3
    conv (for bottlenecks the middle one, as in torchvision's "ResNet v1.5").
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernels: tuple[int, ...], stride: int = 1) -> None:
        super().__init__()
        strided = kernels.index(3)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, (width, kernel) in enumerate(zip(widths, kernels), start=1):
            conv_stride = stride if i - 1 == strided else 1
            layers[f"conv{i}"] = nn.Conv2d(channels, width, kernel, conv_stride, padding=kernel // 2, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(width)
            if i < len(widths):
                layers[f"relu{i}"] = nn.ReLU()
            channels = width
        self.branch = nn.Sequential(layers)
        if stride != 1 or in_channels != channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


BLOCK_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # block kind -> (width multipliers of the branch convs, their kernel sizes)
    "basic": ((1, 1), (3, 3)),
    "bottleneck": ((1, 1, 4), (1, 3, 1)),
}


class ResNet(nn.Module):
    """3×3 stem conv-BN-ReLU, stages of residual blocks, global average pool, linear output.

    Stage ``i`` has ``stage_blocks[i]`` blocks of width ``stage_widths[i]``; every stage after
    the first halves the resolution in its first block.
    """

    def __init__(
        self,
        block: str,
        stage_blocks: tuple[int, ...],
        stage_widths: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if block not in BLOCK_SHAPES:
            raise ValueError(f"Unknown block kind {block!r}; choose one of {sorted(BLOCK_SHAPES)}.")
        multipliers, kernels = BLOCK_SHAPES[block]
        self.conv1 = nn.Conv2d(in_channels, stage_widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        self.relu = nn.ReLU()
        channels = stage_widths[0]
        for stage, (blocks, width) in enumerate(zip(stage_blocks, stage_widths), start=1):
            layers = []
            for i in range(blocks):
                stride = 2 if stage > 1 and i == 0 else 1
                layers.append(ResidualBlock(channels, tuple(m * width for m in multipliers), kernels, stride))
                channels = layers[-1].out_channels
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.num_stages = len(stage_blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


def resnet18(**kwargs) -> ResNet:
    return ResNet("basic", (2, 2, 2, 2), IMAGENET_WIDTHS, **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet("basic", (3, 4, 6, 3), IMAGENET_WIDTHS, **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet("bottleneck", (3, 4, 6, 3), IMAGENET_WIDTHS, **kwargs)


def cifar_resnet(depth: int, **kwargs) -> ResNet:
    """ResNet-``depth`` of He et al. §4.2: depth = 6n + 2, three stages of n basic blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"A CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110, ...), got {depth}.")
    n = (depth - 2) // 6
    return ResNet("basic", (n, n, n), CIFAR_WIDTHS, **kwargs)
