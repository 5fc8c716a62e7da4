"""LeNet-5 and the LeNet-300-100 MLP, the MNIST networks of the MIPP paper (§5)."""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """conv(6, 5×5, pad 2) → pool → conv(16, 5×5) → pool → fc 120 → fc 84 → fc classes.

    ReLU activations and 2×2 max-pooling; expects ``(N, in_channels, 28, 28)`` inputs.
    ``widths`` = (conv1, conv2, fc1, fc2) units gives a narrower net of the same shape (what a
    pruned LeNet-5 reaches trained from scratch: ``bench/lenet5_capacity.py``).
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int, int] = (6, 16, 120, 84)
    ) -> None:
        super().__init__()
        conv1, conv2, fc1, fc2 = widths
        self.conv1 = nn.Conv2d(in_channels, conv1, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(conv1, conv2, kernel_size=5)
        self.fc1 = nn.Linear(conv2 * 5 * 5, fc1)
        self.fc2 = nn.Linear(fc1, fc2)
        self.fc3 = nn.Linear(fc2, num_classes)
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
