"""LeNet-5 and the LeNet-300-100 MLP, the MNIST networks of the MIPP paper (§5)."""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """conv(6, 5×5, pad 2) → pool → conv(16, 5×5) → pool → fc 120 → fc 84 → fc classes.

    ReLU activations and 2×2 max-pooling; expects ``(N, in_channels, 28, 28)`` inputs.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """Fully connected net on flattened images: ``hidden`` widths, ReLU, optional dropout.

    ``MLP((300, 100))`` is LeNet-300-100; ``MLP((500, 300), dropout=0.2)`` is MINT's MNIST MLP.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (300, 100),
        num_classes: int = 10,
        in_features: int = 784,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = (in_features, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
