"""VGG with BatchNorm for 32×32 inputs (Simonyan & Zisserman 2015, CIFAR variant).

The MIPP paper prunes VGG11 on CIFAR-10 and VGG19 on CIFAR-100 (§5, App. D). The feature
extractor is the original one (3×3 convs, BatchNorm, ReLU, five 2×2 max-pools); the
ImageNet classifier (two 4096-wide layers on 7×7 maps) is replaced by the usual CIFAR head:
global average pooling to 512 features, then ``classifier_hidden`` fully connected layers
(one of 512 by default, so the net has prunable linear units as well as filters) and the
output layer. At 32×32 the five pools leave 1×1 maps, so the pooling only makes other input
sizes work too.
"""

from __future__ import annotations

import torch
from torch import nn

# Conv widths per layer; "M" is a 2×2 max-pool (configurations A, D and E of the VGG paper).
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max-pools, global average pool, then a small classifier."""

    def __init__(
        self,
        config: tuple[int | str, ...],
        num_classes: int = 10,
        in_channels: int = 3,
        classifier_hidden: tuple[int, ...] = (512,),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = [nn.Flatten()]
        for width in classifier_hidden:
            head += [nn.Linear(channels, width), nn.ReLU()]
            channels = width
        head.append(nn.Linear(channels, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def vgg(depth: int, **kwargs) -> VGG:
    """``vgg(11)``, ``vgg(16)`` or ``vgg(19)``; keyword arguments go to :class:`VGG`."""
    key = f"vgg{depth}"
    if key not in VGG_CONFIGS:
        raise ValueError(f"No VGG of depth {depth}; choose one of 11, 16, 19.")
    return VGG(VGG_CONFIGS[key], **kwargs)
