"""Compact transformers in plain torch (random init), so head pruning is tested without ``transformers``.

Each builder returns ``(model, inputs)`` with a small calibration batch: a BERT-like encoder and
a GPT-like decoder (causal mask) on token ids, a ViT-like classifier on images, and a Llama-like
decoder with rotary embeddings, RMSNorm, a SwiGLU FFN and grouped-query attention (4 query heads
sharing 2 key-value heads). Their attention reads its own head counts in ``forward`` (as most
attention code does), so a pruned model runs only if surgery put those attributes right. The
attention class is registered the way a user registers their own (:func:`register_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infoprune.network import ProjectionAttention, register_attention

HIDDEN, HEADS, LAYERS, TOKENS, VOCAB, CLASSES = 32, 4, 2, 8, 50, 5


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoPE) over the last axis of ``(B, heads, T, head_dim)``."""
    half = x.shape[-1] // 2
    frequencies = 1.0 / 10000 ** (torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = torch.arange(x.shape[-2], dtype=x.dtype, device=x.device)[:, None] * frequencies
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head (or grouped-query) self-attention with separate q/k/v/o projections."""

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, causal: bool = False, rope: bool = False,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads or heads, dim // heads
        self.causal, self.rope = causal, rope
        self.q = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(heads * self.head_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = rotate(q), rotate(k)
        repeat = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.o(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


register_attention(Attention, ProjectionAttention("q", "k", "v", "o", heads="num_heads", kv_heads="num_kv_heads",
                                                  head_dim="head_dim"))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, gated: bool = False) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.gate = nn.Linear(dim, hidden) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:  # SwiGLU
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, causal: bool = False, llama: bool = False) -> None:
        super().__init__()
        norm = nn.RMSNorm if llama else nn.LayerNorm
        self.norm1, self.norm2 = norm(dim), norm(dim)
        self.attn = Attention(dim, heads, kv_heads, causal, rope=llama, bias=not llama)
        self.ffn = FeedForward(dim, 2 * dim, gated=llama)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TokenClassifier(nn.Module):
    """Token ids ``(N, T)`` → class logits: embeddings, blocks, a final norm, a pooled linear head."""

    def __init__(self, causal: bool = False, llama: bool = False, kv_heads: int | None = None) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, HIDDEN)
        self.positions = None if llama else nn.Embedding(2 * TOKENS, HIDDEN)
        self.blocks = nn.Sequential(*[Block(HIDDEN, HEADS, kv_heads, causal, llama) for _ in range(LAYERS)])
        self.norm = nn.RMSNorm(HIDDEN) if llama else nn.LayerNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)
        self.causal = causal

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1], device=ids.device))
        x = self.norm(self.blocks(x))
        return self.head(x[:, -1] if self.causal else x.mean(dim=1))


class VisionTransformer(nn.Module):
    """Images ``(N, 3, 16, 16)`` → logits: 4×4 patches, a class token, position embeddings, blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, HIDDEN, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, HIDDEN) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, 17, HIDDEN) * 0.02)
        self.blocks = nn.Sequential(*[Block(HIDDEN, HEADS) for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patches(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.positions
        return self.head(self.norm(self.blocks(x))[:, 0])


def token_ids(samples: int, tokens: int = TOKENS, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (samples, tokens), generator=torch.Generator().manual_seed(seed))


TRANSFORMERS = {
    "bert-like": lambda: TokenClassifier(),
    "gpt-like": lambda: TokenClassifier(causal=True),
    "vit-like": VisionTransformer,
    "llama-like": lambda: TokenClassifier(causal=True, llama=True, kv_heads=2),
}
"""Family name → builder of a randomly initialised model."""


def transformer_data(name: str, samples: int = 128) -> tuple[nn.Module, torch.Tensor]:
    """A seeded model of family ``name`` and ``samples`` calibration inputs for it."""
    torch.manual_seed(0)
    model = TRANSFORMERS[name]()
    if name == "vit-like":
        return model, torch.randn(samples, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, token_ids(samples)
