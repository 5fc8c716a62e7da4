"""Layer collapse: does any path from the input to the output survive the masks?

The MIPP paper (§5, Fig. 3) counts a pruned network as collapsed when it can no longer be
trained because the signal cannot get through. Two checks:

* structural — a group left with no unit (:func:`emptied_groups`); in a plain chain of
  layers this alone cuts every path;
* connectivity (``Network.is_disconnected``) — replace every weight by ``|θ|``, every bias
  and BatchNorm mean by 0, feed an all-ones input through the masked network (in float64):
  each output is then a sum over the surviving input→output paths of products of ``|θ|``,
  so the output sum is zero iff no path survives. Integer inputs (token ids into an
  embedding) are fed as they are: the rows they pick are non-negative like every weight. In a residual network an emptied branch
  beside a live skip connection still lets the signal through: not a collapse.

The check assumes layers that map non-negative inputs to non-negative outputs once weights
are non-negative and biases zero (Linear, Conv, BatchNorm in eval mode, ReLU-like
activations, pooling, residual adds, concatenation, flatten) — the networks this library prunes.
"""

from __future__ import annotations

import torch
from torch import nn


def linearised_state(
    model: nn.Module, zero_biases: bool, dtype: torch.dtype = torch.float64
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``|θ|`` parameters and buffers of ``model`` in ``dtype`` (float64), for ``functional_call``.

    With ``zero_biases`` the parameters named ``bias`` and the BatchNorm ``running_mean``
    buffers become 0 (no signal source other than the input); otherwise they become
    their absolute value too (SynFlow's linearisation, Tanaka et al. 2020). Integer buffers
    (e.g. ``num_batches_tracked``) are kept as they are.
    """

    def linearise(name: str, value: torch.Tensor) -> torch.Tensor:
        if not value.is_floating_point():
            return value
        value = value.detach().to(dtype)
        if zero_biases and name.rsplit(".", 1)[-1] in ("bias", "running_mean"):
            return torch.zeros_like(value)
        return value.abs()

    params = {name: linearise(name, p) for name, p in model.named_parameters()}
    buffers = {name: linearise(name, b) for name, b in model.named_buffers()}
    return params, buffers


def path_input(example: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """The one-sample input of the path checks: all ones in float64, or, for integer inputs
    (token ids, which an ``nn.Embedding`` reads), the first example's ids as they are: the
    embedding's ``|rows|`` then carry the signal."""
    device = device if device is not None else example.device
    if not example.is_floating_point():
        return example[:1].to(device)
    return torch.ones((1, *example.shape[1:]), dtype=torch.float64, device=device)


def emptied_groups(masks: dict[str, torch.Tensor]) -> list[str]:
    """Names of the groups whose mask keeps no unit."""
    return [name for name, mask in masks.items() if not bool(mask.any())]
