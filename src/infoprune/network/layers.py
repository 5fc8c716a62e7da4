"""Layers that compute a Linear under another class: replaced by the ``nn.Linear`` they are.

Hugging Face ``transformers``' ``Conv1D`` (GPT-2, GPT, …) is a Linear layer whose weight is
stored transposed, ``(in, out)``. :func:`replace_conv1d` swaps each for an ``nn.Linear`` with
the same computation (weight transposed, bias and ``requires_grad`` kept), so recording,
costs, scores and surgery see an ordinary Linear. The pruned model then holds ``nn.Linear``
where the original held ``Conv1D``; its forward (``layer(x)``) is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

CONV1D = "transformers.pytorch_utils.Conv1D"


def is_conv1d(module: nn.Module) -> bool:
    """``module`` is transformers' ``Conv1D`` (checked by class path: transformers is never imported here)."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}" == CONV1D


@torch.no_grad()
def as_linear(conv1d: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what ``conv1d`` computes (weight ``(in, out)`` transposed)."""
    weight = conv1d.weight
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=conv1d.bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.copy_(weight.T)
    linear.weight.requires_grad_(weight.requires_grad)
    if conv1d.bias is not None:
        linear.bias.copy_(conv1d.bias)
        linear.bias.requires_grad_(conv1d.bias.requires_grad)
    linear.train(conv1d.training)
    return linear


def replace_conv1d(model: nn.Module) -> list[str]:
    """Replace every transformers ``Conv1D`` inside ``model`` by its ``nn.Linear``, in place;
    returns the names replaced."""
    names = [name for name, module in model.named_modules() if name and is_conv1d(module)]
    for name in names:
        owner, _, attribute = name.rpartition(".")
        parent = model.get_submodule(owner) if owner else model
        setattr(parent, attribute, as_linear(getattr(parent, attribute)))
    return names
