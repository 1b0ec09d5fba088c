"""Rotary position embeddings (RoPE), half-split convention (as in Llama/NeoX)."""
import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates the two halves of each head dim by position-dependent angles.

    cos/sin tables are cached and grown on demand, so any absolute start position works
    (decoding continues at `start = tokens already seen`).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def _tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < end or self._cos.device != device:
            length = max(end, 2 * (0 if self._cos is None else self._cos.shape[0]), 256)
            t = torch.arange(length, device=device, dtype=torch.float64)
            angles = torch.outer(t, self.inv_freq.to(device, torch.float64))
            # Full-width tables with the sign folded into sin: x*cos + swap_halves(x)*sin.
            self._cos = torch.cat((angles.cos(), angles.cos()), -1).float()
            self._sin = torch.cat((-angles.sin(), angles.sin()), -1).float()
        return self._cos, self._sin

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: [B, H, L, Dh] -> same shape, rotated for positions start..start+L-1."""
        length = x.shape[-2]
        cos, sin = self._tables(start + length, x.device)
        cos = cos[start:start + length].to(x.dtype)
        sin = sin[start:start + length].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((x2, x1), dim=-1) * sin

    def rotate_at(self, x: torch.Tensor, positions: torch.Tensor, end: int) -> torch.Tensor:
        """x: [N, H, Dh] rows at absolute `positions` [N], all < `end` (gathered tokens) -> rotated."""
        cos, sin = self._tables(end, x.device)
        cos = cos[positions].unsqueeze(1).to(x.dtype)
        sin = sin[positions].unsqueeze(1).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((x2, x1), dim=-1) * sin
