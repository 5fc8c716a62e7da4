"""Model registry: ``build_model("lenet5")`` and friends, for the CLI and experiments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from infoprune.models.lenet import MLP, LeNet5


@dataclass(frozen=True)
class ModelSpec:
    """How to build a registered model and what input it expects (C, H, W)."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    description: str


MODELS: dict[str, ModelSpec] = {
    "lenet5": ModelSpec(LeNet5, (1, 28, 28), "LeNet-5: conv 6, conv 16, fc 120, fc 84, fc classes"),
    "lenet300": ModelSpec(lambda **kw: MLP((300, 100), **kw), (1, 28, 28), "LeNet-300-100 MLP"),
}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name``; a clear error lists the valid names."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; available: {', '.join(sorted(MODELS))}.")
    return MODELS[name].factory(num_classes=num_classes, **kwargs)


__all__ = ["MLP", "MODELS", "LeNet5", "ModelSpec", "build_model"]
