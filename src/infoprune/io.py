"""Saving and loading pruned models without pickling code.

A pruned model is stored as tensors only (``torch.save`` of a dict of tensors, read back
with ``weights_only=True``): its state dict and the masks that produced it. Loading
rebuilds the architecture from an unpruned instance (or a registry name), re-applies the
masks with the same surgery and loads the weights. Writes are atomic (temp file +
``os.replace``), so an interrupted save never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn



def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def save_pruned(
    path: str | Path,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    input_mask: torch.Tensor | None = None,
) -> None:
    """Write the pruned ``model`` (its weights) and the masks that shaped it to ``path``."""
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "masks": {k: v.cpu() for k, v in masks.items()},
        "input_mask": None if input_mask is None else input_mask.cpu(),
    }
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_pruned(path: str | Path, unpruned: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` from an ``unpruned`` instance of its architecture."""
    from infoprune.network import Network  # here, so that training (which writes through this module) needs no graph

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    unpruned = unpruned.cpu().eval()
    network = Network(unpruned, example_input.cpu())
    pruned = network.apply_masks(payload["masks"], payload["input_mask"])
    pruned.load_state_dict(payload["state_dict"])
    return pruned.eval()
