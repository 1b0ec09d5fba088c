"""Key/value caches for incremental attention.

Keys are cached *after* RoPE, so cached entries never need re-rotation. Each cache returns the
keys/values a chunk of queries may attend to plus the boolean mask that makes it causal (and
windowed); `None` means "attend to everything given".
"""
from __future__ import annotations

import torch

from lmzoo.layers.state import LayerState


def causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[Lq, Lk] bool, True where query at q_pos may see key at k_pos (k_pos < 0 marks empty slots)."""
    q = q_pos[:, None]
    k = k_pos[None, :]
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        allowed &= k > q - window
    return allowed


class KVCache(LayerState):
    """Growing contiguous cache for full (unwindowed) attention: capacity doubles when full, so
    memory follows the tokens actually fed, never a requested maximum."""

    batch_dims = {"k": 0, "v": 0}  # [B, Hkv, capacity, Dh]

    def __init__(self):
        super().__init__()
        self.length = 0

    def _reserve(self, like: torch.Tensor, needed: int) -> None:
        if self.k is not None and needed <= self.k.shape[2]:
            return
        cap = max(needed, 0 if self.k is None else 2 * self.k.shape[2])
        b, h, _, d = like.shape
        k = like.new_empty(b, h, cap, d)
        v = like.new_empty(b, h, cap, d)
        if self.k is not None:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        """Append a chunk; return (keys, values, mask) for the chunk's queries."""
        n = k.shape[2]
        if self.k is not None and k.dtype != self.k.dtype:
            self.k, self.v = self.k.to(k.dtype), self.v.to(k.dtype)
        self._reserve(k, self.length + n)
        self.k[:, :, self.length: self.length + n] = k
        self.v[:, :, self.length: self.length + n] = v
        self.length += n
        keys, values = self.k[:, :, : self.length], self.v[:, :, : self.length]
        if n == 1:
            return keys, values, None  # one query sees every cached key
        q_pos = torch.arange(start, start + n, device=k.device)
        k_pos = torch.arange(self.length, device=k.device)
        return keys, values, causal_mask(q_pos, k_pos, None)


class RingKVCache(LayerState):
    """Fixed-size ring of the last `window` keys for sliding-window attention: O(window) memory."""

    # k, v [B, Hkv, window, Dh]; pos [window]: the absolute position held by each slot, -1 if empty
    batch_dims = {"k": 0, "v": 0, "pos": None}

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def _allocate(self, like: torch.Tensor) -> None:
        b, h, _, d = like.shape
        self.k = like.new_zeros(b, h, self.window, d)
        self.v = like.new_zeros(b, h, self.window, d)
        self.pos = torch.full((self.window,), -1, dtype=torch.long, device=like.device)

    def _write(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> None:
        keep = min(k.shape[2], self.window)  # older entries of a long chunk fall out anyway
        slots = positions[-keep:] % self.window
        self.k[:, :, slots] = k[:, :, -keep:]
        self.v[:, :, slots] = v[:, :, -keep:]
        self.pos[slots] = positions[-keep:]

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        if self.k is None:
            self._allocate(k)
        elif k.dtype != self.k.dtype:
            self.k, self.v = self.k.to(k.dtype), self.v.to(k.dtype)
        n = k.shape[2]
        positions = torch.arange(start, start + n, device=k.device)
        if n == 1:
            # The slot overwritten holds position start-window, which is just outside the window.
            self._write(k, v, positions)
            return self.k, self.v, causal_mask(positions, self.pos, self.window)
        keys = torch.cat((self.k, k), dim=2)
        values = torch.cat((self.v, v), dim=2)
        k_pos = torch.cat((self.pos, positions))
        self._write(k, v, positions)
        return keys, values, causal_mask(positions, k_pos, self.window)
