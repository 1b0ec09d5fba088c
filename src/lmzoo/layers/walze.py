"""The Spike-Walze "roller": a causal sparse-tap depthwise convolution plus gated channel mixing.

The seed rolls a 3x3 kernel over the sequence laid out as a 32-wide grid, which sees future
positions and wraps the sequence end onto its start. Here only the past half of that
neighbourhood is kept: taps at offsets {0, 1, 2, 31, 32, 33} (this token, the two before it,
and the three "above" it in the 32-wide grid), times an optional per-layer dilation.

    c_t = bias + sum_k w_k * h_{t - offset_k}          (per channel; h before t=0 is zero)
    y_t = W_out(c_t * silu(W_gate h_t))                 (the channel mixing a depthwise conv lacks)

Decoding keeps the last `span` = max(offsets) inputs in a circular buffer: token t is written to slot
t mod R and tap k reads slot (t - offset_k) mod R, so a step costs no shifting copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.state import LayerState

DEFAULT_TAPS = (0, 1, 2, 31, 32, 33)


class WalzeBuffer(LayerState):
    """Circular buffer of one layer's last R roller inputs, per sample ([B, R, D], zeros = before t=0)."""

    batch_dims = {"slots": 0}

    def __init__(self, span: int):
        super().__init__()
        self.span = span

    def history(self, like: torch.Tensor, start: int | torch.Tensor) -> torch.Tensor:
        """Inputs at positions start-R .. start-1, oldest first: [B, R, D] (`start` an int or
        per-row starts [B])."""
        if self.slots is None:
            self.slots = like.new_zeros(like.shape[0], self.span, like.shape[2])
        elif self.slots.dtype != like.dtype:
            self.slots = self.slots.to(like.dtype)
        if isinstance(start, torch.Tensor):
            order = (start[:, None] + torch.arange(-self.span, 0, device=like.device)) % self.span
            return self.slots.gather(1, order[..., None].expand(-1, -1, self.slots.shape[2]))
        order = torch.arange(start - self.span, start, device=like.device) % self.span
        return self.slots[:, order]

    def write(self, h: torch.Tensor, start: int | torch.Tensor) -> None:
        keep = min(h.shape[1], self.span)
        end = start + h.shape[1]
        if isinstance(start, torch.Tensor):
            slots = (end[:, None] + torch.arange(-keep, 0, device=h.device)) % self.span
            self.slots.scatter_(1, slots[..., None].expand(-1, -1, h.shape[2]), h[:, -keep:])
            return
        slots = torch.arange(end - keep, end, device=h.device) % self.span
        self.slots[:, slots] = h[:, -keep:]


class CausalWalze(nn.Module):
    def __init__(self, d_model: int, taps: tuple[int, ...] = DEFAULT_TAPS, dilation: int = 1):
        super().__init__()
        if not taps or min(taps) < 0 or len(set(taps)) != len(taps):
            raise ValueError(f"walze taps must be distinct offsets >= 0, got {taps}")
        self.offsets = tuple(sorted(t * dilation for t in taps))
        self.span = max(max(self.offsets), 1)  # buffer length: the oldest input a tap reads
        self.tap_weight = nn.Parameter(torch.empty(len(self.offsets), d_model))
        self.tap_bias = nn.Parameter(torch.zeros(d_model))
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.out.residual_projection = True
        self.reset_taps()

    def reset_taps(self) -> None:
        # Average of the taps at init: a smooth look-back the mixing can build on.
        nn.init.constant_(self.tap_weight, 1.0 / len(self.offsets))

    def new_buffer(self) -> WalzeBuffer:
        return WalzeBuffer(self.span)

    def step(self, h: torch.Tensor, start: int, buffer: WalzeBuffer) -> torch.Tensor:
        """`convolve` for one token (h [B, 1, D]) of rows at position `start`, from the buffer:
        the taps read with one gather and summed with one product and one sum (decoding); then h
        is written to its slot."""
        if buffer.slots.dtype != h.dtype:
            buffer.slots = buffer.slots.to(h.dtype)
        past = buffer.slots.index_select(1, self._past_slots(start, h.device))  # [B, taps with offset > 0, D]
        taps = torch.cat((h, past), 1) if self.offsets[0] == 0 else past          # in the order of `offsets`
        out = (taps * self.tap_weight.to(h.dtype)).sum(1, keepdim=True) + self.tap_bias.to(h.dtype)
        buffer.slots[:, start % buffer.span] = h[:, 0]
        return out

    def _past_slots(self, start: int, device) -> torch.Tensor:
        """Buffer slots of the taps with offset > 0 at position `start` (cached per start mod span)."""
        key = (start % self.span, str(device))
        cache = self.__dict__.setdefault("_slot_cache", {})
        if key not in cache:
            cache[key] = torch.tensor([(start - o) % self.span for o in self.offsets if o], device=device)
        return cache[key]

    def convolve(self, h: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Depthwise causal conv of h [B, n, D]; `history` holds the R inputs before it (None = zeros)."""
        n = h.shape[1]
        if history is None:
            ext = F.pad(h, (0, 0, self.span, 0))
        else:
            ext = torch.cat((history, h), dim=1)
        out = self.tap_bias.to(h.dtype).expand_as(h)
        for k, offset in enumerate(self.offsets):  # a loop over the 6 taps, not over positions
            begin = self.span - offset
            out = torch.addcmul(out, ext[:, begin:begin + n], self.tap_weight[k].to(h.dtype))
        return out

    def forward(self, h: torch.Tensor, start: int | torch.Tensor = 0, buffer: WalzeBuffer | None = None) -> torch.Tensor:
        if h.shape[1] == 1 and isinstance(start, int) and buffer is not None and buffer.slots is not None:
            return self.out(self.step(h, start, buffer) * F.silu(self.gate(h)))
        history = buffer.history(h, start) if buffer is not None else None
        c = self.convolve(h, history)
        if buffer is not None:
            buffer.write(h, start)
        return self.out(c * F.silu(self.gate(h)))
