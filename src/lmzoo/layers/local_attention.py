"""Sliding-window attention computed only for selected tokens (gather -> attend -> scatter).

Keys and values are projected for every token (they are cheap and later selected tokens look
back at them); queries, the attention itself and the output projection run only for the
selected rows. Each selected query at position t attends to keys t-w+1 .. t (GQA, RoPE).

The key/value history is carried as a [B, w-1, Hkv, Dh] tensor of the latest keys before the
chunk (zeros, masked out, before position 0), so training, chunked prefill and one-token decoding
are one code path. Rows at different positions (`start` a LongTensor [B]) only change the
positions each row's queries and keys are rotated to and masked by.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.state import LayerState
from lmzoo.layers.rotary import RotaryEmbedding


ANGLE_BLOCK = 256  # positions whose RoPE angles one-token decoding computes at a time


class WindowHistory(LayerState):
    """One layer's keys/values of the w-1 tokens before the next chunk (decoding state)."""

    batch_dims = {"k": 0, "v": 0}  # [B, w-1, Hkv, Dh]


class GatedLocalAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, window: int, rope_theta: float = 10000.0):
        super().__init__()
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"d_model ({d_model}) must divide by n_heads ({n_heads}), "
                             f"and n_heads by n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads, self.window = n_heads, n_kv_heads, window
        self.head_dim = d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.out.residual_projection = True
        self.rope = RotaryEmbedding(self.head_dim, rope_theta)

    def keys_values(self, h: torch.Tensor, start: int | torch.Tensor, history: WindowHistory | None):
        """Rotated keys/values of the chunk with the w-1 before it: two [B, w-1+n, Hkv, Dh]."""
        b, n, _ = h.shape
        k, v = self.kv(h).view(b, n, 2, self.n_kv_heads, self.head_dim).unbind(2)
        k = self.rope(k.transpose(1, 2), start).transpose(1, 2)
        past = self.window - 1
        if history is None or history.k is None:
            pad = (0, 0, 0, 0, past, 0)
            k_ext, v_ext = F.pad(k, pad), F.pad(v, pad)
        else:
            k_ext = torch.cat((history.k.to(k.dtype), k), dim=1)
            v_ext = torch.cat((history.v.to(v.dtype), v), dim=1)
        if history is not None:
            history.k, history.v = k_ext[:, n:], v_ext[:, n:]  # the w-1 newest, for the next chunk
        return k_ext, v_ext

    def forward(self, h: torch.Tensor, selected: torch.Tensor, scale: torch.Tensor, start: int | torch.Tensor = 0,
                history: WindowHistory | None = None) -> torch.Tensor:
        """h [B, n, D]; selected [B, n] bool; scale [B, n] -> the residual update [B, n, D], zero
        at unselected tokens."""
        b, n, d = h.shape
        if n == 1 and isinstance(start, int) and history is not None and history.k is not None \
                and not torch.is_grad_enabled():
            return self.step(h, selected, scale, start, history)
        k_ext, v_ext = self.keys_values(h, start, history)
        rows = selected.reshape(-1).nonzero().squeeze(1)  # the one host sync: how many were selected
        update = h.new_zeros(b * n, d)
        # No early return when no token is selected: the path then runs on zero rows, so q and out
        # stay in the autograd graph (with zero gradient). DDP and FSDP need every rank's backward
        # to reach the same parameters, and a rank whose tokens all skip attention would not.
        batch, t = rows // n, rows % n
        q = self.q(h.reshape(b * n, d)[rows]).view(-1, self.n_heads, self.head_dim)
        if isinstance(start, torch.Tensor):  # each selected query at its own row's position
            start, end = start[batch], None
        else:
            end = start + n
        q = self.rope.rotate_at(q, t + start, end)
        # Window of query t: rows t .. t+w-1 of the extended keys (positions t-w+1 .. t), gathered
        # with one index_select, whose backward is an index_add into a tensor of k_ext's size.
        offsets = torch.arange(self.window, device=h.device)
        ext_rows = (batch * k_ext.shape[1] + t)[:, None] + offsets  # [N, w] rows of the flattened k_ext
        k_win = self._gather(k_ext, ext_rows)
        v_win = self._gather(v_ext, ext_rows)
        key_pos = (t + start - self.window + 1)[:, None] + offsets
        visible = (key_pos >= 0)[:, None, None, :]  # keys before position 0 are padding
        y = F.scaled_dot_product_attention(q.unsqueeze(2), k_win, v_win, attn_mask=visible,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        y = self.out(y.reshape(-1, d)) * scale.reshape(-1)[rows, None].to(h.dtype)
        return update.index_copy(0, rows, y).view(b, n, d)


    def step(self, h: torch.Tensor, selected: torch.Tensor, scale: torch.Tensor, start: int,
             history: WindowHistory) -> torch.Tensor:
        """`forward` for one token per row, every row at position `start` (decoding, no autograd):
        the window is the whole extended history, so no gather; the mask only while it reaches
        before position 0; attention only if some row is selected (the same host sync as the
        general path's nonzero), every row computed and the unselected ones zeroed."""
        b, _, d = h.shape
        cos, sin = self._angles_at(start, h.device)
        k, v = self.kv(h).view(b, 1, 2, self.n_kv_heads, self.head_dim).unbind(2)
        k = self.rope._rotate(k, cos, sin)
        k_ext = torch.cat((history.k.to(k.dtype), k), dim=1)               # [B, w, Hkv, Dh]
        v_ext = torch.cat((history.v.to(v.dtype), v), dim=1)
        history.k, history.v = k_ext[:, 1:], v_ext[:, 1:]
        if not bool(selected.any()):
            return h.new_zeros(b, 1, d)
        q = self.rope._rotate(self.q(h).view(b, 1, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        visible = None
        if start < self.window - 1:  # keys before position 0 are padding
            visible = (torch.arange(self.window, device=h.device) >= self.window - 1 - start)[None]
        y = F.scaled_dot_product_attention(q, k_ext.transpose(1, 2), v_ext.transpose(1, 2), attn_mask=visible,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        y = self.out(y.transpose(1, 2).reshape(b, 1, d)) * scale[..., None].to(h.dtype)
        return torch.where(selected[..., None], y, 0.0)

    def _angles_at(self, start: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos/sin rows [1, Dh] for position `start`, from a block of ANGLE_BLOCK positions
        computed at once by the rotary module's own formula (the values its tables hold): decoding
        past the rotary table's length then costs no per-step angle computation."""
        base = start - start % ANGLE_BLOCK
        block = self.__dict__.get("_angle_block")
        if block is None or block[0] != base or block[1].device != device:
            cos, sin = self.rope._angles(torch.arange(base, base + ANGLE_BLOCK, device=device))
            block = self.__dict__["_angle_block"] = (base, cos, sin)
        i = start - base
        return block[1][i:i + 1], block[2][i:i + 1]

    @staticmethod
    def _gather(ext: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[B, P, Hkv, Dh] and [N, w] flat row ids -> [N, Hkv, w, Dh]."""
        flat = ext.reshape(-1, *ext.shape[2:])
        return flat.index_select(0, rows.reshape(-1)).view(*rows.shape, *ext.shape[2:]).transpose(1, 2)
