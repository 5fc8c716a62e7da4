"""Size and cost of a model: parameters, CSR memory, FLOPs, latency.

FLOPs convention: PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` counts a multiply
and an add as 2 FLOPs for matrix products and convolutions (a Linear of n inputs and m
outputs costs 2·n·m per sample); elementwise ops (ReLU, BatchNorm, pooling) are not
counted. Figures are per single input sample, measured on the physically pruned model.
"""

from __future__ import annotations

import time

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


@torch.no_grad()
def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds of one forward pass on ``example_input``."""
    times = []
    with evaluating(model):
        for i in range(warmup + repeats):
            if example_input.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(example_input)
            if example_input.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
