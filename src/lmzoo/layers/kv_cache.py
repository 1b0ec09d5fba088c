"""Key/value caches for incremental attention.

Keys are cached *after* RoPE, so cached entries never need re-rotation. Each cache returns the
keys/values a chunk of queries may attend to plus the boolean mask that makes it causal (and
windowed); `None` means "attend to everything given".

Rows at different positions (a batch whose rows joined at different steps, `start` a LongTensor
[B]) feed one token each: every row writes its own slot, and the mask is per row ([B, 1, 1, keys]).
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


def _one_token(k: torch.Tensor) -> None:
    if k.shape[2] != 1:
        raise ValueError(f"rows at different positions take one token per call, got {k.shape[2]}")


class KVCache(LayerState):
    """Growing contiguous cache for full (unwindowed) attention: capacity doubles when full, so
    memory follows the tokens actually fed, never a requested maximum.

    Slot i of a row holds its position i. `length` is the slots in use (with rows at different
    positions: at least the longest row's; a row's later slots are zeros, masked out)."""

    batch_dims = {"k": 0, "v": 0}  # [B, Hkv, capacity, Dh]

    def __init__(self):
        super().__init__()
        self.length = 0

    def _reserve(self, like: torch.Tensor, needed: int) -> None:
        if self.k is not None and needed <= self.k.shape[2]:
            return
        cap = max(needed, 0 if self.k is None else 2 * self.k.shape[2])
        b, h, _, d = like.shape
        # Zeros, not empty: rows at different positions read (masked) slots past their end, and
        # masked garbage could be NaN, which survives a zero attention weight.
        k = like.new_zeros(b, h, cap, d)
        v = like.new_zeros(b, h, cap, d)
        if self.k is not None:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int | torch.Tensor):
        """Append a chunk; return (keys, values, mask) for the chunk's queries."""
        n = k.shape[2]
        if self.k is not None and k.dtype != self.k.dtype:
            self.k, self.v = self.k.to(k.dtype), self.v.to(k.dtype)
        if isinstance(start, torch.Tensor):
            return self._update_rows(k, v, start)
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

    def _update_rows(self, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor):
        """One token per row, row b at position start[b]: written to slot start[b]."""
        _one_token(k)
        # Every row advances by one, so the longest row's end grows by at most one: `length` + 1
        # stays an upper bound without reading the positions back from the device.
        self._reserve(k, self.length + 1)
        rows = torch.arange(k.shape[0], device=k.device)
        self.k[rows, :, start] = k[:, :, 0]
        self.v[rows, :, start] = v[:, :, 0]
        self.length += 1
        mask = torch.arange(self.length, device=k.device)[None, :] <= start[:, None]
        return self.k[:, :, : self.length], self.v[:, :, : self.length], mask[:, None, None, :]

    def trim(self, longest: int) -> None:
        self.length = longest  # each row's slots past its own end are zeros
        if self.k.shape[2] > 2 * longest:  # give the memory back, keeping room to grow
            self.k, self.v = self.k[:, :, : 2 * longest].clone(), self.v[:, :, : 2 * longest].clone()

    def join(self, other: "KVCache", aligned: bool) -> None:
        length = max(self.length, other.length)
        # Keep the larger capacity: sized to `length` exactly, the next token would reallocate
        # (and copy) the whole joined cache at once.
        capacity = max(self.k.shape[2], other.k.shape[2])
        parts = []
        for mine, theirs in ((self.k, other.k), (self.v, other.v)):
            joined = mine.new_zeros(mine.shape[0] + theirs.shape[0], mine.shape[1], capacity, mine.shape[3])
            joined[: mine.shape[0], :, : self.length] = mine[:, :, : self.length]
            joined[mine.shape[0]:, :, : other.length] = theirs[:, :, : other.length]
            parts.append(joined)
        self.k, self.v = parts
        self.length = length


class RingKVCache(LayerState):
    """Fixed-size ring of the last `window` keys for sliding-window attention: O(window) memory."""

    # k, v [B, Hkv, window, Dh]; pos [window]: the absolute position held by each slot, -1 if
    # empty. Rows at different positions keep them per row instead: row_pos [B, window] (pos None).
    batch_dims = {"k": 0, "v": 0, "pos": None, "row_pos": 0}

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

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int | torch.Tensor):
        if self.k is None:
            self._allocate(k)
        elif k.dtype != self.k.dtype:
            self.k, self.v = self.k.to(k.dtype), self.v.to(k.dtype)
        if isinstance(start, torch.Tensor):
            return self._update_rows(k, v, start)
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

    def _update_rows(self, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor):
        """One token per row, row b at position start[b], written to its slot start[b] mod window."""
        _one_token(k)
        rows, slots = torch.arange(k.shape[0], device=k.device), start % self.window
        self.k[rows, :, slots] = k[:, :, 0]
        self.v[rows, :, slots] = v[:, :, 0]
        self.row_pos[rows, slots] = start
        keys, query = self.row_pos, start[:, None]
        mask = (keys >= 0) & (keys <= query) & (keys > query - self.window)
        return self.k, self.v, mask[:, None, None, :]

    def join(self, other: "RingKVCache", aligned: bool) -> None:
        if not aligned:  # each row keeps the positions of its own slots
            self.row_pos, other.row_pos = self._positions_per_row(), other._positions_per_row()
            self.pos = other.pos = None
        super().join(other, aligned)

    def _positions_per_row(self) -> torch.Tensor:
        return self.row_pos if self.row_pos is not None else self.pos.expand(self.k.shape[0], -1).clone()
