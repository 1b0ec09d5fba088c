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

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """`self(x)` for one decoded token [B, 1, D] without autograd: gate and up as one GEMM of the
        fused weight (the same products in fewer calls). Otherwise (chunks, training, a wrapped
        projection such as a LoRA layer) the ordinary forward."""
        if x.shape[1] != 1 or torch.is_grad_enabled() or type(self.gate_up) is not nn.Linear:
            return self(x)
        gate, up = F.linear(x, self.gate_up.weight).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)

    def forward(self, x: torch.Tensor, route=None) -> torch.Tensor:
        # Two matmuls on row slices of the fused weight: chunking one fused output costs a
        # concatenating copy of its gradient in backward and slower strided elementwise ops,
        # while the fused GEMM saves nothing measurable (benchmarks/throughput.py).
        if type(self.gate_up) is not nn.Linear:  # a wrapped projection (a peft LoRA layer) acts only when called
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        w = self.gate_up.weight
        half = w.shape[0] // 2
        return self.down(F.silu(F.linear(x, w[:half])) * F.linear(x, w[half:]))
