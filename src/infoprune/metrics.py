"""Size and cost of a model: parameters, CSR memory, FLOPs, measured latency.

FLOPs convention: PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` counts a multiply
and an add as 2 FLOPs for matrix products and convolutions (a Linear of n inputs and m
outputs costs 2·n·m per sample); elementwise ops (ReLU, BatchNorm, pooling) are not
counted. Figures are per single input sample, measured on the physically pruned model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from scipy import sparse
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from infoprune.running import evaluating


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def csr_bytes(model: nn.Module) -> int:
    """Bytes to store every parameter as a SciPy CSR matrix (MINT §IV-B "Memory Footprint").

    Each parameter is viewed as ``(shape[0], -1)`` (a bias as one row) and counted as the
    ``data`` (its dtype), ``indices`` and ``indptr`` arrays of its CSR form, so zeroed weights
    cost nothing; file headers (the paper's npz files) are not counted.
    """
    total = 0
    for parameter in model.parameters():
        values = parameter.detach().cpu()
        matrix = sparse.csr_matrix(values.reshape(values.shape[0] if values.dim() > 1 else 1, -1).numpy())
        total += matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
    return total


@torch.no_grad()
def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass on a single sample shaped like ``example_input[:1]``."""
    counter = FlopCounterMode(display=False)
    with evaluating(model), counter:
        model(example_input[:1])
    return int(counter.get_total_flops())


def interleaved_timings(calls: dict[str, Callable[[], Any]], repeats: int = 20, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Wall time in seconds of each call, ``median`` and ``min`` over ``repeats``, the calls
    taking turns within every repeat so that load from other processes hits them alike.

    On a machine shared with other work the median includes time the process waited for a
    core; the minimum is then the better estimate of the time the computation itself takes.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: {"median": sorted(t)[len(t) // 2], "min": min(t)} for name, t in times.items()}


def _forward(model: nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    def call() -> None:
        model(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()

    return call


@torch.no_grad()
def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds of one forward pass on ``example_input``."""
    with evaluating(model):
        return interleaved_timings({"model": _forward(model, example_input)}, repeats, warmup)["model"]["median"]


LATENCY_BATCHES = (1, 64)


def _batch_of(example_input: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` copies of the first sample (a contiguous batch)."""
    return example_input[:1].expand(size, *example_input.shape[1:]).contiguous()


def _onnxruntime_run(path: str | Path, batch: torch.Tensor) -> Callable[[], Any]:
    """One ONNX Runtime CPU run of the model at ``path`` on ``batch``, with as many intra-op
    threads as torch uses (so the two are compared like for like)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch.cpu().numpy()}
    return lambda: session.run(None, feed)


@torch.no_grad()
def latency_profiles(
    models: dict[str, nn.Module],
    example_input: torch.Tensor,
    batch_sizes: tuple[int, ...] = LATENCY_BATCHES,
    repeats: int = 50,
    onnx_paths: dict[str, str | Path] | None = None,
) -> dict[str, dict[str, Any]]:
    """Measured forward latency of each model per backend and batch size: ``{"median": s,
    "min": s}`` over ``repeats``, the models timed in turn (:func:`interleaved_timings`).

    ``cpu``: on the CPU with ``torch.get_num_threads()`` threads (recorded as ``threads``);
    ``cuda``: on the GPU when one is present; ``onnxruntime``: the ONNX file of the model in
    ``onnx_paths`` (see :func:`infoprune.io.export_onnx`), when given. Batches repeat the
    first sample of ``example_input``; the models are timed on eval-mode copies.
    """
    copies = {name: copy.deepcopy(model).cpu().eval() for name, model in models.items()}
    backends: dict[str, Callable[[str, int], Callable[[], Any]]] = {
        "cpu": lambda name, b: _forward(copies[name], _batch_of(example_input.cpu(), b))
    }
    if torch.cuda.is_available():
        gpu = {name: copy.deepcopy(model).cuda() for name, model in copies.items()}
        backends["cuda"] = lambda name, b: _forward(gpu[name], _batch_of(example_input.cuda(), b))
    if onnx_paths is not None:
        backends["onnxruntime"] = lambda name, b: _onnxruntime_run(onnx_paths[name], _batch_of(example_input, b))
    profiles = {
        name: {"threads": torch.get_num_threads(), "repeats": repeats, "batch_sizes": list(batch_sizes)} for name in models
    }
    for backend, make in backends.items():
        for b in batch_sizes:
            timings = interleaved_timings({name: make(name, b) for name in models}, repeats)
            for name, seconds in timings.items():
                profiles[name].setdefault(backend, {})[str(b)] = seconds
    return profiles
