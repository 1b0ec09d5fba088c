"""Causal linear attention within fixed windows (EFFICIA-1's Local Context Processor).

    out_i = phi(q_i) . sum_j phi(k_j) v_j^T / (phi(q_i) . sum_j phi(k_j)),    phi = elu + 1

over the j <= i of i's window: windows are fixed blocks of `window` tokens on the absolute
position grid (the sums restart at every window start); with `overlap=True` they never restart
(each window carries the previous one's sums, i.e. causal linear attention over the whole
stream). Three forms give the same numbers (tested against each other):

- `chunked_linear_attention`: training and prefill. Positions are cut into chunks; within a
  chunk a masked [C, C] product, across chunks the running sums (prefix sums of per-chunk
  k^T v). Work and memory are linear in the length.
- `recurrent_linear_attention`: one token at a time from the running sums (decoding).
- `lmzoo.layers.reference.reference_linear_attention`: the quadratic masked form, for tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.precision import upcast
from lmzoo.layers.short_conv import ShortConv
from lmzoo.layers.state import LayerState

EPS = 1e-6
MAX_CHUNK = 64


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def chunk_size(window: int) -> int:
    """Chunks tile the windows exactly: the window itself up to 64 tokens, else a divisor of it."""
    return window if window <= MAX_CHUNK else math.gcd(window, MAX_CHUNK)


class LinearAttentionState(LayerState):
    """Running sums of the current window: S = sum phi(k) v^T [B, H, dh, dh], z = sum phi(k) [B, H, dh];
    `tail`: the short convolution's last inputs [B, conv_size - 1, D]."""

    batch_dims = {"S": 0, "z": 0, "tail": 0}


def recurrent_linear_attention(q, k, v, start: int, window: int, overlap: bool,
                               state: LinearAttentionState) -> torch.Tensor:
    """Token by token from `state` (updated in place); `start` is the absolute position of q[..., 0, :]
    (rows at their own positions decode through `linear_attention_step`)."""
    B, H, n, dh = q.shape
    if state.S is None:
        state.S, state.z = q.new_zeros(B, H, dh, dh), q.new_zeros(B, H, dh)
    outs = []
    for t in range(n):
        if not overlap and (start + t) % window == 0:  # a new window: the sums restart
            state.S, state.z = torch.zeros_like(state.S), torch.zeros_like(state.z)
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
        state.S = state.S + kt[..., :, None] * vt[..., None, :]
        state.z = state.z + kt
        num = (qt[..., None, :] @ state.S).squeeze(-2)
        outs.append(num / ((qt * state.z).sum(-1, keepdim=True) + EPS))
    return torch.stack(outs, dim=2)


def linear_attention_step(q, k, v, restart: bool | torch.Tensor, state: LinearAttentionState) -> torch.Tensor:
    """One token of every row (q, k, v [B, H, 1, dh], feature-mapped), from sums `state` already
    holds: `recurrent_linear_attention`'s arithmetic in fewer, fused ops (decoding). `restart`:
    whether the token starts a window, for all rows or per row ([B] bool, rows at their own
    positions). Out of place, so autograd stays safe."""
    B, H, _, dh = q.shape
    kt, qt = k.view(B, H, dh), q.view(B, H, 1, dh)
    if isinstance(restart, torch.Tensor):  # per row: the restarting rows' sums times 0 (a product, not a
        keep = (~restart).to(kt.dtype)[:, None, None]  # select with a broadcast mask, which is 10x slower)
        S, z = torch.addcmul(state.S * keep[..., None], kt[..., :, None], v), torch.addcmul(kt, state.z, keep)
    elif restart:  # a new window: the sums restart (0 + x = x, as in the general form)
        S, z = kt[..., :, None] * v, kt
    else:
        S, z = torch.addcmul(state.S, kt[..., :, None], v), state.z + kt
    state.S, state.z = S, z
    num = qt @ S                                                      # [B, H, 1, dh]
    den = (qt * z[:, :, None]).sum(-1, keepdim=True)                  # elementwise: fp32 under autocast
    return num / (den + EPS)


def exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of the entries before each one along `dim` (the first is 0). Unlike cumsum - x, the
    rounding of an entry's sum never involves the entries after it."""
    shifted = x.narrow(dim, 0, x.shape[dim] - 1).cumsum(dim)
    return torch.cat((torch.zeros_like(x.narrow(dim, 0, 1)), shifted), dim)


def chunked_linear_attention(q, k, v, start: int, window: int, overlap: bool,
                             state: LinearAttentionState | None = None) -> torch.Tensor:
    """Parallel form on feature-mapped q, k [B, H, n, dh]; continues from and updates `state` if given."""
    B, H, n, dh = q.shape
    chunk = chunk_size(window)
    # Pad on the absolute grid: on the left back to the start of `start`'s window (or chunk, with
    # overlap), on the right to a whole one; padded keys are zero, so they add nothing. A call that
    # ends in its first window is padded to a whole chunk only: a short prompt pays for its own
    # chunks, not for the window's (a 35-token prompt and a 256-token window: 1 chunk, not 4).
    align = chunk if overlap else window
    left = start % align
    pad_to = chunk if left + n <= align else align
    right = (-(left + n)) % pad_to
    q, k, v = (F.pad(t, (0, 0, left, right)) for t in (q, k, v))
    per_group = min(align, left + n + right) // chunk
    groups = q.shape[2] // (per_group * chunk)
    qc, kc, vc = (t.reshape(B, H, groups, per_group, chunk, -1) for t in (q, k, v))

    scores = (qc @ kc.transpose(-1, -2)).tril()                         # within each chunk
    num, den = scores @ vc, scores.sum(-1)
    chunk_S = kc.transpose(-1, -2) @ vc                                 # [B, H, G, K, dh, dh]
    chunk_z = kc.sum(-2)                                                # [B, H, G, K, dh]
    if overlap:  # one running sum over every chunk of the call
        chunk_S, chunk_z = chunk_S.flatten(2, 3)[:, :, None], chunk_z.flatten(2, 3)[:, :, None]
    S, z = exclusive_cumsum(chunk_S, 3), exclusive_cumsum(chunk_z, 3)  # sums before each chunk
    carried = state is not None and state.S is not None and (overlap or start % window != 0)
    if carried:  # the earlier part of the first window (every window, with overlap)
        first = slice(None) if overlap else slice(0, 1)
        S[:, :, first] += state.S[:, :, None, None]
        z[:, :, first] += state.z[:, :, None, None]
    S, z = S.view(B, H, groups, per_group, dh, dh), z.view(B, H, groups, per_group, dh)
    num = num + qc @ S
    den = den + (qc * z[..., None, :]).sum(-1)
    out = (num / (den[..., None] + EPS)).reshape(B, H, -1, dh)[:, :, left:left + n]

    if state is not None:  # the sums of the window the call ends in
        last_S, last_z = chunk_S[:, :, -1].sum(2), chunk_z[:, :, -1].sum(2)
        if carried and (overlap or groups == 1):
            last_S, last_z = last_S + state.S, last_z + state.z
        state.S, state.z = last_S, last_z
    return out


class LocalLinearAttention(nn.Module):
    """Short causal conv (`conv_size` taps; 0 = none), q, k, v projections, heads of `head_dim`,
    windowed causal linear attention, output projection."""

    def __init__(self, d_model: int, head_dim: int, window: int, overlap: bool, conv_size: int = 0):
        super().__init__()
        self.conv = ShortConv(d_model, conv_size) if conv_size else None
        self.heads, self.head_dim = max(1, d_model // head_dim), min(head_dim, d_model)
        inner = self.heads * self.head_dim
        self.window, self.overlap = window, overlap
        self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.out = nn.Linear(inner, d_model, bias=False)
        self.out.residual_projection = True

    def forward(self, x: torch.Tensor, start: int | torch.Tensor = 0,
                state: LinearAttentionState | None = None) -> torch.Tensor:
        B, n, _ = x.shape
        if n == 1 and state is not None and state.S is not None and (self.conv is None or state.tail is not None):
            return self.step(x, start, state)
        h = x
        if self.conv is not None:
            h, tail = self.conv(x, state.tail if state is not None else None)
            if state is not None:
                state.tail = tail
        q, k, v = self.qkv(h).view(B, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # fp32 for the running sums and the normaliser (bf16 loses the denominator's precision)
        q, k, v = feature_map(upcast(q)), feature_map(upcast(k)), upcast(v)
        if state is not None and n == 1:
            y = recurrent_linear_attention(q, k, v, start, self.window, self.overlap, state)
        else:
            y = chunked_linear_attention(q, k, v, start, self.window, self.overlap, state)
        return self.out(y.to(x.dtype).transpose(1, 2).reshape(B, n, -1))

    def step(self, x: torch.Tensor, start: int | torch.Tensor, state: LinearAttentionState) -> torch.Tensor:
        """One token (x [B, 1, D]) per row, at position `start` (an int, or [B] per row), continuing
        `state`: the decoding path of `forward` without its per-chunk machinery (same math, fewer ops)."""
        B = x.shape[0]
        h = x
        if self.conv is not None:  # the short conv on [tail, x]: one product and one sum over taps
            ext = torch.cat((state.tail.to(x.dtype), x), 1)                # [B, kernel, D]
            h = (ext * self.conv.weight.to(x.dtype).t()).sum(1, keepdim=True)
            state.tail = ext[:, 1:]
        qkv = self.qkv(h).view(B, 3, self.heads, 1, self.head_dim)
        qk, v = feature_map(upcast(qkv[:, :2])), upcast(qkv[:, 2])
        restart = not self.overlap and start % self.window == 0
        y = linear_attention_step(qk[:, 0], qk[:, 1], v, restart, state)  # [B, H, 1, dh]
        return self.out(y.to(x.dtype).view(B, 1, -1))
