"""Grouped-query self-attention with RoPE, optional QK-norm and sliding window."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.kv_cache import KVCache, RingKVCache, causal_mask
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.rotary import RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, *, rope_theta: float = 10000.0,
                 qk_norm: bool = False, window: int | None = None, norm_eps: float = 1e-5):
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"d_model ({d_model}) must divide by n_heads ({n_heads}), "
                             f"and n_heads by n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.window = window
        kv_dim = n_kv_heads * self.head_dim
        self.qkv = nn.Linear(d_model, d_model + 2 * kv_dim, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.out.residual_projection = True
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        self.rope = RotaryEmbedding(self.head_dim, rope_theta)

    def new_state(self) -> KVCache | RingKVCache:
        return RingKVCache(self.window) if self.window else KVCache()

    def forward(self, x: torch.Tensor, start: int = 0, cache=None) -> torch.Tensor:
        b, n, _ = x.shape
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        if type(self.qkv) is nn.Linear:
            # Row slices of the fused weight, not a split of its output (see SwiGLU.forward).
            w = self.qkv.weight
            q, k, v = F.linear(x, w[:q_dim]), F.linear(x, w[q_dim:q_dim + kv_dim]), F.linear(x, w[q_dim + kv_dim:])
        else:  # a wrapped projection (a peft LoRA layer) acts only when called; slicing .weight would skip it
            q, k, v = self.qkv(x).split((q_dim, kv_dim, kv_dim), dim=-1)
        q = q.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rope.pair(q, k, start)
        mask, is_causal = None, False
        if cache is not None:
            k, v, mask = cache.update(k, v, start)
        elif self.window is not None and self.window < n:
            pos = torch.arange(n, device=x.device)
            mask = causal_mask(pos, pos, self.window)
        else:
            is_causal = True
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))
