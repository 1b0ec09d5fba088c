"""Dense feed-forward blocks."""
import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """SiLU-gated MLP: down(silu(gate(x)) * up(x)); gate and up share one matmul."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.down.residual_projection = True

    def forward(self, x: torch.Tensor, route=None) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
