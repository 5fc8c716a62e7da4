"""Layers that hide Linear layers: replaced by modules made of the ``nn.Linear`` they compute.

Hugging Face ``transformers``' ``Conv1D`` (GPT-2, GPT, …) is a Linear layer whose weight is
stored transposed, ``(in, out)``; ``nn.MultiheadAttention`` packs its query/key/value
projections into one parameter and runs a fused kernel that never calls its ``out_proj``.
:func:`replace_layers` swaps each for the same computation in plain ``nn.Linear`` layers
(weights copied, ``requires_grad`` kept), so recording, costs, scores and surgery see ordinary
Linear layers and the attention's heads become prunable
(:class:`SplitMultiheadAttention`, registered in :mod:`infoprune.network.attention`).
torchvision's Swin attention passes its Linear layers' weights to ``F.linear``; it becomes a
:class:`WindowAttention` that calls them. The
pruned model then holds these modules where the original held ``Conv1D`` /
``nn.MultiheadAttention``; they are called the same way.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
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
    linear = _linear(weight.T, conv1d.bias)
    linear.train(conv1d.training)
    return linear


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` computed with separate ``q_proj``/``k_proj``/``v_proj``/``out_proj``
    Linear layers, so that its heads can be pruned (its packed ``in_proj_weight`` and fused kernel
    hide them). Same call and results: ``(output, weights or None)``, ``batch_first`` or not,
    ``attn_mask`` (bool: True = not allowed, or additive; 2-D, or 3-D per batch × head),
    ``key_padding_mask``, ``is_causal``, ``need_weights`` averaged over heads or not, dropout on
    the weights in training. ``num_heads`` is the module's (pruned) head count.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.embed_dim = mha.num_heads, mha.head_dim, mha.embed_dim
        self.batch_first, self.dropout = mha.batch_first, mha.dropout
        weight = mha.in_proj_weight
        weights = weight.chunk(3) if weight is not None else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, b) for w, b in zip(weights, biases))
        self.out_proj = _linear(mha.out_proj.weight, mha.out_proj.bias)
        self.train(mha.training)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True, attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        (n, length), source = query.shape[:2], key.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(n, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            attn_mask = attn_mask.reshape(n, self.num_heads, length, source) if attn_mask.dim() == 3 else attn_mask
            scores = _apply_mask(scores, attn_mask)
        if key_padding_mask is not None:
            scores = _apply_mask(scores, key_padding_mask[:, None, None, :])
        weights = torch.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(n, length, self.num_heads * self.head_dim)
        out = self.out_proj(out)
        if unbatched:
            out, weights = out.squeeze(0), weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=-3) if average_attn_weights else weights


SWIN_ATTENTION = "torchvision.models.swin_transformer.ShiftedWindowAttention"


class WindowAttention(nn.Module):
    """torchvision's Swin ``ShiftedWindowAttention`` (v1) computed by calling its ``qkv`` and
    ``proj`` Linear layers (torchvision passes their weights to ``F.linear``, which hides them
    from hooks and from torch-pruning's tracer), so that its heads can be pruned. The relative
    position bias table is held as ``relative_position_bias_table``, an ``nn.Embedding`` of
    ``positions × num_heads`` (torchvision's table), so that a head's column goes with its
    projections' rows, as T5's bias does. Same call (``x``: ``(B, H, W, C)``) and results;
    ``head_dim`` stays fixed when heads or the channels ``C`` are pruned.
    """

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.window_size, self.shift_size = list(attention.window_size), list(attention.shift_size)
        self.num_heads, self.head_dim = attention.num_heads, attention.qkv.in_features // attention.num_heads
        self.attention_dropout, self.dropout = attention.attention_dropout, attention.dropout
        self.qkv, self.proj = attention.qkv, attention.proj
        table = attention.relative_position_bias_table  # (positions, heads)
        self.relative_position_bias_table = nn.Embedding(*table.shape, device=table.device, dtype=table.dtype)
        with torch.no_grad():
            self.relative_position_bias_table.weight.copy_(table)
        self.relative_position_bias_table.weight.requires_grad_(table.requires_grad)
        self.register_buffer("relative_position_index", attention.relative_position_index.clone())
        self.train(attention.training)

    def position_bias(self, tokens: int) -> torch.Tensor:
        """``(1, num_heads, tokens, tokens)``: each head's bias between the window's tokens."""
        bias = self.relative_position_bias_table(self.relative_position_index.flatten())  # (tokens², heads)
        return bias.T.reshape(1, self.num_heads, tokens, tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (b, h, w, _), (wh, ww) = x.shape, self.window_size
        x = nn.functional.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        padded = x.shape[1:3]
        shift = [s if size > window else 0 for s, size, window in zip(self.shift_size, padded, self.window_size)]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        rows, columns = padded[0] // wh, padded[1] // ww
        windows = x.reshape(b, rows, wh, columns, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(b * rows * columns, wh * ww, -1)
        n, tokens = windows.shape[:2]  # the projections see (B, windows · tokens, C): samples first, for recording
        qkv = self.qkv(windows.reshape(b, -1, windows.shape[-1]))
        qkv = qkv.reshape(n, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] * self.head_dim**-0.5) @ qkv[1].transpose(-2, -1) + self.position_bias(tokens)
        if sum(shift) > 0:
            mask = _shift_mask(padded, self.window_size, shift, x)
            attn = (attn.reshape(b, rows * columns, self.num_heads, tokens, tokens) + mask[None, :, None]).reshape_as(attn)
        attn = nn.functional.dropout(attn.softmax(dim=-1), self.attention_dropout, self.training)
        out = (attn @ qkv[2]).transpose(1, 2).reshape(b, n // b * tokens, self.num_heads * self.head_dim)
        out = nn.functional.dropout(self.proj(out), self.dropout, self.training)
        out = out.reshape(b, rows, columns, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, *padded, -1)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :h, :w, :].contiguous()


def _shift_mask(padded: torch.Size, window: list[int], shift: list[int], like: torch.Tensor) -> torch.Tensor:
    """``(windows, tokens, tokens)``: −100 between tokens of a shifted window that came from
    different regions of the map, 0 elsewhere (torchvision's ``shifted_window_attention``)."""
    regions = like.new_zeros(tuple(padded))
    count = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[hs[0] : hs[1], ws[0] : ws[1]] = count
            count += 1
    regions = regions.reshape(padded[0] // window[0], window[0], padded[1] // window[1], window[1])
    regions = regions.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    different = regions.unsqueeze(1) - regions.unsqueeze(2) != 0
    return different.to(like.dtype) * -100.0


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.weight.requires_grad_(weight.requires_grad)
        if bias is not None:
            linear.bias.copy_(bias)
            linear.bias.requires_grad_(bias.requires_grad)
    return linear


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with a bool mask's True entries set to −inf, or a float mask added."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def splittable(mha: nn.MultiheadAttention) -> bool:
    """Whether :class:`SplitMultiheadAttention` computes what ``mha`` does (no ``bias_k``/``bias_v``,
    no ``add_zero_attn``)."""
    return mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn


def replace_layers(model: nn.Module) -> list[str]:
    """Replace, in place, every transformers ``Conv1D`` by its ``nn.Linear``, every
    ``nn.MultiheadAttention`` (without ``bias_k``/``add_zero_attn``) by its
    :class:`SplitMultiheadAttention` and every torchvision Swin ``ShiftedWindowAttention`` by its
    :class:`WindowAttention`; returns the names replaced."""
    replaced = []
    for name, module in list(model.named_modules()):
        if not name:
            continue
        if is_conv1d(module):
            new = as_linear(module)
        elif type(module) is nn.MultiheadAttention and splittable(module):
            new = SplitMultiheadAttention(module)
        elif f"{type(module).__module__}.{type(module).__qualname__}" == SWIN_ATTENTION:
            new = WindowAttention(module)
        else:
            continue
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attribute, new)
        replaced.append(name)
    return replaced


def is_rms_norm(module: nn.Module) -> bool:
    """An RMS norm over the last axis with a 1-D ``weight``: ``nn.RMSNorm`` or a transformers
    ``…RMSNorm`` (Llama, Mistral, Qwen2), recognised by class name."""
    weight = getattr(module, "weight", None)
    return type(module).__name__.endswith("RMSNorm") and isinstance(weight, torch.Tensor) and weight.dim() == 1


class RMSNormPruner(tp.pruner.BasePruningFunc):
    """torch-pruning's pruning functions for an RMS norm (it ships none): the kept features'
    weights, and ``normalized_shape`` where the module has one."""

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.numel())) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, torch.tensor(keep), 0)
        if hasattr(layer, "normalized_shape"):
            layer.normalized_shape = (len(keep),)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.numel()

    get_in_channels = get_out_channels


def rms_norm_pruners(model: nn.Module) -> dict[type, RMSNormPruner]:
    """``customized_pruners`` for torch-pruning: one for each RMS-norm class in ``model``."""
    return {type(m): RMSNormPruner() for m in model.modules() if is_rms_norm(m)}
