"""Saving and loading pruned models without pickling code; exporting them as ONNX.

A pruned model is stored as tensors only (``torch.save`` of a dict of tensors, read back
with ``weights_only=True``): its state dict and the masks that produced it. Loading
rebuilds the architecture from an unpruned instance (or a registry name), re-applies the
masks with the same surgery and loads the weights. Writes are atomic (temp file +
``os.replace``), so an interrupted save never leaves a truncated file behind.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infoprune import graph
from infoprune.surgery import apply_masks


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
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    unpruned = unpruned.cpu().eval()
    structure = graph.analyse(unpruned, example_input.cpu())
    pruned = apply_masks(unpruned, structure, payload["masks"], example_input.cpu(), payload["input_mask"])
    pruned.load_state_dict(payload["state_dict"])
    return pruned.eval()


ONNX_OPSET = 17
"""The ONNX opset of :func:`export_onnx` (ONNX Runtime ≥ 1.12 runs it)."""
ONNX_TOLERANCE = 1e-4


def require_onnx():
    """The ``onnxruntime`` module, or an ``ImportError`` that says how to install the extra."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the packages onnx and onnxruntime ({error.name} is missing): "
            "pip install 'infoprune[onnx]'."
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class OnnxExport:
    """Where the model went, in which opset, and the largest |ONNX Runtime − torch| output gap."""

    path: Path
    opset: int
    max_abs_error: float


@torch.no_grad()
def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = ONNX_OPSET
) -> OnnxExport:
    """Write ``model`` as ONNX (opset ``opset``, batch dimension dynamic) and check it.

    Uses ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``: it needs no
    onnxscript and is several times faster on small models), then runs the file with ONNX
    Runtime on ``example_input`` and raises ``ValueError`` unless every output is within
    1e-4 of torch's. The model is exported from a CPU copy in eval mode; it is not modified.
    Needs the ``onnx`` extra (:func:`require_onnx`).
    """
    onnxruntime = require_onnx()
    path = Path(path)
    cpu = copy.deepcopy(model).cpu().eval()
    example = example_input.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(handle)
    try:
        torch.onnx.export(
            cpu, (example,), temp, dynamo=False, opset_version=opset, input_names=["input"],
            output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )  # fmt: skip
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run(None, {"input": example.numpy()})
    error = float((torch.from_numpy(onnx_output) - cpu(example)).abs().max())
    if not error <= ONNX_TOLERANCE:
        raise ValueError(
            f"The ONNX model at {path} differs from torch by up to {error:.3g} (> {ONNX_TOLERANCE:g}) on the "
            "example input: an operator is exported wrongly; try another opset."
        )
    return OnnxExport(path, opset, error)
