"""Compact versions of the architecture families of a widely used model zoo (random init).

Each builder returns ``(model, sample_shape)``; the models are small enough for every method to
run on them in seconds on one CPU thread, but keep each family's coupling pattern: residual
streams with projection shortcuts, concatenation, depthwise convs with SE gates, grouped convs,
channel shuffles, channels-last LayerNorm blocks and attention, and torchvision's ShuffleNetV2, ConvNeXt
and Swin layouts (a stride-2 shuffle unit, LayerNorm2d, shifted windows). :func:`family_data` gives a
family with calibration data, and :data:`QUICK_SETTINGS` the method settings that prune it in
about a second (smoke tests and benches, not real pruning). The transformer families are in
:mod:`infoprune.models.transformer_families` and :mod:`infoprune.models.hf_families`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from infoprune.data import LabelledTensors
from infoprune.network.layers import WindowAttention


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


class Head(nn.Module):
    def __init__(self, channels: int, classes: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def plain_chain():
    model = nn.Sequential(conv_bn(3, 8), nn.MaxPool2d(2), conv_bn(8, 12), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(12 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5))
    return model, (3, 16, 16)


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, stride=stride), conv_bn(cout, cout, act=False)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, mid, 1)
        self.conv2 = conv_bn(mid, mid, 3, stride, groups=groups)
        self.conv3 = conv_bn(mid, cout, 1, act=False)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def residual_basic():
    return nn.Sequential(conv_bn(3, 8), Basic(8, 8, 1), Basic(8, 12, 2), Head(12)), (3, 16, 16)


def residual_bottleneck():
    return nn.Sequential(conv_bn(3, 8), Bottleneck(8, 4, 16, 1), Bottleneck(16, 4, 16, 1), Bottleneck(16, 8, 24, 2),
                         Head(24)), (3, 16, 16)


def grouped_bottleneck():
    """ResNeXt-style: 1x1, 3x3 with groups=2 (and 4), 1x1, projection shortcut."""
    return nn.Sequential(conv_bn(3, 8), Bottleneck(8, 8, 16, 1, groups=2), Bottleneck(16, 8, 16, 2, groups=4),
                         Head(16)), (3, 16, 16)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(), nn.Conv2d(cin + i * growth, growth, 3, padding=1))
            for i in range(layers)
        )

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def dense_block():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DenseBlock(8, 4, 3), nn.BatchNorm2d(20), nn.ReLU(),
                         nn.Conv2d(20, 10, 1), nn.AvgPool2d(2), DenseBlock(10, 4, 2), nn.ReLU(), Head(18)), (3, 16, 16)


class Inception(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = conv_bn(cin, 6, 1)
        self.b3 = nn.Sequential(conv_bn(cin, 4, 1), conv_bn(4, 6, 3))
        self.b5 = nn.Sequential(conv_bn(cin, 3, 1), conv_bn(3, 4, 3), conv_bn(4, 4, 3))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, 4, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)


def inception_module():
    return nn.Sequential(conv_bn(3, 8), Inception(8), Inception(20), Head(20)), (3, 16, 16)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], dim=1)


def fire_module():
    """SqueezeNet: fire modules, a conv classifier and global pooling."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Fire(8, 4, 6), nn.MaxPool2d(2), Fire(12, 4, 8),
                          nn.Conv2d(16, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return model, (3, 16, 16)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expand: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = conv_bn(cin, expand, 1)
        self.depthwise = conv_bn(expand, expand, 3, stride, groups=expand)
        self.se = SqueezeExcite(expand, 4)
        self.project = conv_bn(expand, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


def inverted_residual_se():
    """MobileNetV3 / EfficientNet: expand, depthwise, squeeze-and-excite, project, skip."""
    return nn.Sequential(conv_bn(3, 8), InvertedResidual(8, 16, 8, 1), InvertedResidual(8, 24, 12, 2),
                         InvertedResidual(12, 24, 12, 1), Head(12)), (3, 16, 16)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): split, 1x1 → depthwise 3x3 → 1x1 on one half, concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, act=False),
                                    conv_bn(half, half, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)


def channel_shuffle_unit():
    return nn.Sequential(conv_bn(3, 8), conv_bn(8, 16), ShuffleUnit(16), ShuffleUnit(16), conv_bn(16, 12, 1),
                         Head(12)), (3, 16, 16)


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pwconv1, self.pwconv2 = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(nn.functional.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


def convnext_block():
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), ConvNeXtBlock(8), ConvNeXtBlock(8), Head(8)), (3, 16, 16)


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.position = nn.Parameter(torch.zeros(1, 16, dim))
        self.block = ViTBlock(dim, 2, 24)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.block(tokens)).mean(dim=1))


def tiny_vit():
    return TinyViT(), (3, 16, 16)


class ShuffleDownUnit(nn.Module):
    """torchvision's ShuffleNetV2 stride-2 unit: both branches, concat, and its channel shuffle
    (a view into 5-D, transpose, ``contiguous`` and a view back)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=False), conv_bn(cin, half, 1))
        self.branch2 = nn.Sequential(conv_bn(cin, half, 1), conv_bn(half, half, 3, 2, groups=half, act=False),
                                     conv_bn(half, half, 1))

    def forward(self, x):
        x = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        n, c, h, w = x.shape
        return torch.transpose(x.view(n, 2, c // 2, h, w), 1, 2).contiguous().view(n, c, h, w)


def shufflenet_v2():
    return nn.Sequential(conv_bn(3, 8), ShuffleDownUnit(8, 16), ShuffleUnit(16), conv_bn(16, 12, 1), Head(12)), (3, 16, 16)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt norm of ``(N, C, H, W)`` maps: a LayerNorm over C between permutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7×7, channels-last LayerNorm and MLP, a layer scale of shape (C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.layer_scale = nn.Parameter(torch.full((channels, 1, 1), 0.5))

    def forward(self, x):
        return x + self.layer_scale * self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


def convnext_torchvision():
    """torchvision's ConvNeXt layout: stem with LayerNorm2d, blocks, a LayerNorm2d + 2×2 conv downsampling."""
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8), CNBlock(8), LayerNorm2d(8),
                         nn.Conv2d(8, 10, 2, stride=2), CNBlock(10), Head(10)), (3, 16, 16)


class WindowAttentionParts(nn.Module):
    """The parameters torchvision's Swin ``ShiftedWindowAttention`` holds, from which
    :class:`~infoprune.network.layers.WindowAttention` is built."""

    def __init__(self, dim: int, window: int, shift: int, heads: int) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.num_heads = [window, window], [shift, shift], heads
        self.attention_dropout = self.dropout = 0.0
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("relative_position_index", (relative[..., 0] * (2 * window - 1) + relative[..., 1]).flatten())


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, shift: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(WindowAttentionParts(dim, 2, shift, heads))
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """torchvision's Swin downsampling: the four 2×2 neighbours concatenated, a LayerNorm and a Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        parts = [x[..., i::2, j::2, :] for j in (0, 1) for i in (0, 1)]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class TinySwin(nn.Module):
    """torchvision's Swin-T layout: patch embedding, shifted-window blocks (window 2 on a 4×4
    map, shifted by 1: torch.roll, window partition, relative position bias), patch merging."""

    def __init__(self, dim: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(SwinBlock(dim, 2, 0), SwinBlock(dim, 2, 1), PatchMerging(dim), SwinBlock(2 * dim, 2, 0))
        self.norm, self.head = nn.LayerNorm(2 * dim), nn.Linear(2 * dim, classes)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.patch(x).permute(0, 2, 3, 1))).mean(dim=(1, 2)))


def tiny_swin():
    return TinySwin(), (3, 16, 16)


FAMILIES: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
    "plain": plain_chain,
    "basic-residual": residual_basic,
    "bottleneck-residual": residual_bottleneck,
    "dense": dense_block,
    "inception": inception_module,
    "fire": fire_module,
    "inverted-residual-se": inverted_residual_se,
    "grouped-bottleneck": grouped_bottleneck,
    "channel-shuffle": channel_shuffle_unit,
    "convnext": convnext_block,
    "vit": tiny_vit,
    "shufflenet-v2": shufflenet_v2,
    "convnext-torchvision": convnext_torchvision,
    "swin": tiny_swin,
}


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so masks change outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
    return model.eval()


SAMPLES = 80
"""Calibration samples of :func:`family_data`: ≥ 2 × the widest group of any family (MIPP's minimum)."""

QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "random": {"ratio": 0.5},
    "l1": {"ratio": 0.5},
    "snip": {"ratio": 0.5, "batch_size": 32},
    "grasp": {"ratio": 0.5, "samples_per_class": 2},
    "synflow": {"ratio": 0.5, "rounds": 2},
    "thinet": {"ratio": 0.5, "locations_per_sample": 2},
    "sosp": {"ratio": 0.5},
    "reinit": {"source": "l1", "ratio": 0.5},
    "mipp": {"hidden_size": 8, "fit_iterations": 10, "refit_iterations": 1, "ordering_iterations": 1, "repeats": 2,
             "confidence": 0.6},
    # the paper's estimator: the default conditioning reads no grouped-conv child
    "mint": {"samples_per_class": 8, "groups": 2, "quantile": 0.5, "conditioning": "others"},
    "itpruner": {"flops": 0.5, "samples": SAMPLES},
    "tp-magnitude": {"ratio": 0.5},
    "tp-taylor": {"ratio": 0.5},
    "tp-lamp": {"ratio": 0.5},
    "tp-bn-scale": {"ratio": 0.5},
    "tp-hessian": {"ratio": 0.5},
}
"""Settings of every registered method that prune a family here in about a second on one CPU thread."""

FAMILY_SETTINGS: dict[tuple[str, str], dict[str, Any]] = {("vit", "mint"): {"quantile": 0.7}}
"""(family, method) → settings that replace :data:`QUICK_SETTINGS`' there. The ViT's
nn.MultiheadAttention has two heads and MINT's median threshold keeps a unit used by any pair:
every unit of its few groups is used, so a higher quantile is what prunes there."""


def family_data(name: str) -> tuple[nn.Module, LabelledTensors]:
    """A seeded model of family ``name`` (BatchNorm statistics randomised) and :data:`SAMPLES`
    labelled calibration inputs for it (5 classes)."""
    torch.manual_seed(0)
    model, shape = FAMILIES[name]()
    inputs = torch.randn(SAMPLES, *shape, generator=torch.Generator().manual_seed(1))
    return randomise_batchnorm(model), LabelledTensors(inputs, torch.arange(SAMPLES) % 5)
