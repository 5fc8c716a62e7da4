"""Padded token batches: padding marked in the ids, the attention mask passed on every call.

Calibration sequences of different lengths are one integer tensor whose padded positions hold
:data:`PAD` (``-1``, which no vocabulary uses; :func:`mark_padding`). While :func:`infoprune.prune`
runs such data, :func:`passing_attention_mask` turns every call ``model(ids)`` into
``model(ids', attention_mask=ids != PAD)``, ``ids'`` holding the model's ``config.pad_token_id``
(or 0) where ``ids`` holds PAD, as a Hugging Face tokenizer's batch would. So every real token
attends to real tokens only, and a classifier reading the last real token (GPT-2) finds it.

Statistics read real tokens only: :func:`real_tokens` gives the current batch's mask at a
Linear layer's ``(batch, tokens, features)`` input, and every hook that reads activations
(recording, ThiNet, MINT's contributions, compensation) zeroes or drops padded positions with it.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

PAD = -1
"""The token id marking a padded position in calibration inputs."""

_BATCH_MASK: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("batch_mask", default=None)


def mark_padding(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``ids`` with :data:`PAD` where ``attention_mask`` is 0."""
    return ids.masked_fill(~torch.as_tensor(attention_mask, device=ids.device).bool(), PAD)


TOKEN_DTYPES = (torch.int32, torch.int64)
"""The dtypes of token ids (an unsigned tensor cannot hold PAD)."""


def is_padded(inputs: torch.Tensor) -> bool:
    """Token ids holding :data:`PAD` somewhere."""
    return inputs.dtype in TOKEN_DTYPES and bool((inputs == PAD).any())


def pad_to(ids: torch.Tensor, length: int) -> torch.Tensor:
    """``(N, T)`` token ids right-padded with :data:`PAD` to ``length`` tokens."""
    return torch.nn.functional.pad(ids, (0, length - ids.shape[1]), value=PAD)


@contextmanager
def passing_attention_mask(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model(ids)`` with PAD in ``ids`` runs as ``model(ids', attention_mask=…)``
    (module docstring); copies of ``model`` made within it do too. ValueError when the model's
    forward takes no ``attention_mask``."""
    if "attention_mask" not in inspect.signature(model.forward).parameters:
        raise ValueError(
            f"The calibration sequences are padded, but {type(model).__name__}.forward takes no attention_mask, so "
            "padding would be read as tokens. Pass sequences of one length without padding, or a model whose "
            "forward takes attention_mask= (as Hugging Face models do)."
        )
    fill = getattr(getattr(model, "config", None), "pad_token_id", None)
    fill = 0 if fill is None else int(fill)

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids = args[0]
        mask = ids != PAD
        _BATCH_MASK.set(mask)
        return (ids.masked_fill(~mask, fill), *args[1:]), {**kwargs, "attention_mask": mask.long()}

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        _BATCH_MASK.set(None)


def real_tokens(x: torch.Tensor, module: nn.Module) -> torch.Tensor | None:
    """``(batch, tokens)`` bool: which positions of ``module``'s input ``x`` are real tokens,
    when the current batch is padded and ``x`` is a Linear's ``(batch, tokens, features)``
    input; None otherwise."""
    mask = _BATCH_MASK.get()
    if mask is None or not isinstance(module, nn.Linear) or x.dim() != 3 or x.shape[:2] != mask.shape:
        return None
    return mask.to(x.device)


def without_padding(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``module``'s input ``x`` with padded positions set to zero (:func:`real_tokens`)."""
    mask = real_tokens(x, module)
    return x if mask is None else x * mask[..., None].to(x.dtype)


def real_token_positions(tokens: int) -> torch.Tensor | None:
    """``(batch, tokens)`` bool: the real tokens of the current batch when it is padded and
    has ``tokens`` positions; None otherwise."""
    mask = _BATCH_MASK.get()
    return None if mask is None or mask.shape[1] != tokens else mask
