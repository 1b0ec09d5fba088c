"""Plain reference forms of the layers' fast kernels: the textbook or position-by-position
computation each fast path is tested against (tests/, and benchmarks that time both). Nothing
in the models calls these."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmzoo.layers.kv_cache import causal_mask
from lmzoo.layers.linear_attention import EPS
from lmzoo.layers.local_attention import GatedLocalAttention
from lmzoo.layers.wavelet import wavelet_filters


def reference_attention(q, k, v, mask=None, is_causal=False):
    """Explicit softmax attention (the textbook form), for tests and the SDPA comparison."""
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        lq, lk = q.shape[-2], k.shape[-2]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def reference_local_attention(module: GatedLocalAttention, h: torch.Tensor, selected: torch.Tensor,
                              scale: torch.Tensor) -> torch.Tensor:
    """Dense form: every token attends to its window, then unselected rows are zeroed (for tests)."""
    b, n, d = h.shape
    hq, hk, dh = module.n_heads, module.n_kv_heads, module.head_dim
    q = module.rope(module.q(h).view(b, n, hq, dh).transpose(1, 2))
    k, v = module.kv(h).view(b, n, 2, hk, dh).unbind(2)
    k, v = module.rope(k.transpose(1, 2)), v.transpose(1, 2)
    pos = torch.arange(n, device=h.device)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(pos, pos, module.window),
                                       enable_gqa=hk != hq)
    y = module.out(y.transpose(1, 2).reshape(b, n, d))
    return y * (selected * scale)[..., None].to(y.dtype)


def reference_linear_attention(q, k, v, window: int, overlap: bool = False) -> torch.Tensor:
    """Quadratic form on feature-mapped q, k [B, H, L, dh] from position 0."""
    pos = torch.arange(q.shape[-2], device=q.device)
    visible = pos[None, :] <= pos[:, None]
    if not overlap:
        visible &= (pos[None, :] // window) == (pos[:, None] // window)
    scores = (q @ k.transpose(-1, -2)) * visible
    return (scores @ v) / (scores.sum(-1, keepdim=True) + EPS)


def reference_decomposition(x: torch.Tensor, levels: int, wavelet: str = "db4") -> list[torch.Tensor]:
    """Position-by-position form of the decomposition (slow; for tests)."""
    lo, hi = wavelet_filters(wavelet)
    bands, approx = [], x
    for level in range(levels):
        step = 2 ** level
        new_lo, new_hi = torch.zeros_like(approx), torch.zeros_like(approx)
        for i in range(x.shape[-1]):
            for k in range(len(lo)):
                if i - k * step >= 0:
                    new_lo[..., i] += lo[k] * approx[..., i - k * step]
                    new_hi[..., i] += hi[k] * approx[..., i - k * step]
        bands.append(new_hi)
        approx = new_lo
    return bands + [approx]


def reference_walze_conv(h: torch.Tensor, offsets: tuple[int, ...], weight: torch.Tensor,
                         bias: torch.Tensor) -> torch.Tensor:
    """Position-by-position form of `CausalWalze.convolve` (slow; for tests)."""
    b, n, d = h.shape
    out = torch.zeros_like(h)
    for t in range(n):
        acc = bias.clone().expand(b, d)
        for k, offset in enumerate(offsets):
            if t - offset >= 0:
                acc = acc + weight[k] * h[:, t - offset]
        out[:, t] = acc
    return out


def reference_short_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Position-by-position form of `ShortConv` from position 0 (slow; for tests)."""
    kernel = weight.shape[1]
    out = torch.zeros_like(x)
    for t in range(x.shape[1]):
        for j in range(kernel):
            source = t - kernel + 1 + j
            if source >= 0:
                out[:, t] += weight[:, j] * x[:, source]
    return out


def direct_causal_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same sum computed directly, O(L^2) (the reference, and the decoding form)."""
    n = x.shape[-1]
    lags = torch.arange(n, device=x.device)
    index = lags[:, None] - lags[None, :]                     # [i, j] = i - j
    toeplitz = h[:, index.clamp(min=0)] * (index >= 0)        # [D, i, j] = h[i - j] for j <= i
    return torch.einsum("dij,...dj->...di", toeplitz, x)
