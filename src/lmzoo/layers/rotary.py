"""Rotary position embeddings (RoPE), half-split convention (as in Llama/NeoX)."""
import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotates the two halves of each head dim by position-dependent angles.

    cos/sin tables are cached for the first CACHE_LIMIT positions; later positions (a long
    stream fed through a constant-size state) are computed on the fly, so memory stays flat
    at any absolute start (decoding continues at `start = tokens already seen`).
    """

    CACHE_LIMIT = 16384

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin) for the first positions

    def _angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.outer(positions.to(torch.float64), self.inv_freq.to(positions.device, torch.float64))
        # Full-width tables with the sign folded into sin: x*cos + swap_halves(x)*sin.
        return (torch.cat((angles.cos(), angles.cos()), -1).float(),
                torch.cat((-angles.sin(), angles.sin()), -1).float())

    def _tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Read and replaced as one attribute: a server runs prefills and decode steps on two
        # threads, and a grown cos beside the old sin would be a torn table.
        table = self._table
        if table is None or table[0].shape[0] < end or table[0].device != device:
            length = min(max(end, 2 * (0 if table is None else table[0].shape[0]), 256), self.CACHE_LIMIT)
            table = self._table = self._angles(torch.arange(length, device=device))
        return table

    def _at(self, positions: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        if end > self.CACHE_LIMIT:
            return self._angles(positions)
        cos, sin = self._tables(end, positions.device)
        return cos[positions], sin[positions]

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos.to(x.dtype) + torch.cat((x2, x1), dim=-1) * sin.to(x.dtype)

    def forward(self, x: torch.Tensor, start: int | torch.Tensor = 0) -> torch.Tensor:
        """x: [B, H, L, Dh] -> same shape, rotated for positions start..start+L-1 (`start` an int,
        or a LongTensor [B] of per-row starts)."""
        return self._rotate(x, *self._cos_sin(x.shape[-2], start, x.device))

    def pair(self, q: torch.Tensor, k: torch.Tensor, start: int | torch.Tensor = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`(self(q, start), self(k, start))` with the angles looked up (or computed) once."""
        cos, sin = self._cos_sin(q.shape[-2], start, q.device)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def _cos_sin(self, length: int, start: int | torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(start, torch.Tensor):
            # Per-row positions: the angles computed directly (the same float64 formula as the
            # tables, so the same values), with no table lookup that would need max(start).
            positions = start[:, None] + torch.arange(length, device=start.device)
            cos, sin = self._angles(positions.reshape(-1))
            return cos.view(-1, 1, length, cos.shape[-1]), sin.view(-1, 1, length, sin.shape[-1])
        if start + length > self.CACHE_LIMIT:
            return self._angles(torch.arange(start, start + length, device=device))
        cos, sin = self._tables(start + length, device)
        return cos[start:start + length], sin[start:start + length]

    def rotate_at(self, x: torch.Tensor, positions: torch.Tensor, end: int | None) -> torch.Tensor:
        """x: [N, H, Dh] rows at absolute `positions` [N], all < `end` (gathered tokens) -> rotated;
        `end` None (not known without reading the positions back) computes the angles directly."""
        cos, sin = self._angles(positions) if end is None else self._at(positions, end)
        return self._rotate(x, cos.unsqueeze(1), sin.unsqueeze(1))
