"""Token-routed MLP: each token id is served by one fixed expert (no learned router).

E experts, each a SwiGLU of width d_ff / E, so the total parameters equal a dense SwiGLU of
width d_ff while each token pays 1/E of its FLOPs. Tokens are sorted by expert once per
forward (the routing depends only on the input ids, so every layer reuses it) and each expert
runs one matmul over its contiguous rows via `torch.nn.functional.grouped_mm`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ROUTINGS = ("modulo", "range")


@dataclass
class TokenRoute:
    """Where each token goes. Computed once per forward, shared by all layers."""

    order: torch.Tensor    # [N] token indices sorted by expert (stable)
    offsets: torch.Tensor  # [E] int32 cumulative row counts, the grouped-matmul boundaries
    counts: torch.Tensor   # [E] tokens per expert

    @classmethod
    def from_ids(cls, input_ids: torch.Tensor, n_experts: int, vocab_size: int, routing: str) -> "TokenRoute":
        ids = input_ids.reshape(-1)
        expert = expert_ids(ids, n_experts, vocab_size, routing)
        order = torch.argsort(expert, stable=True)
        # scatter_add rather than bincount: bincount sizes its output from max() -> a CUDA sync.
        counts = torch.zeros(n_experts, dtype=torch.long, device=ids.device).scatter_add_(
            0, expert, torch.ones_like(expert))
        return cls(order, torch.cumsum(counts, 0).to(torch.int32), counts)


def expert_ids(ids: torch.Tensor, n_experts: int, vocab_size: int, routing: str) -> torch.Tensor:
    """The expert that serves each token id (same shape as `ids`)."""
    if routing == "modulo":
        return ids % n_experts
    if routing == "range":
        return ids * n_experts // vocab_size
    raise ValueError(f"unknown routing '{routing}'; choose one of {ROUTINGS}")


def _grouped_available(x: torch.Tensor) -> bool:
    if not hasattr(F, "grouped_mm") or x.dtype not in (torch.float32, torch.bfloat16):
        return False  # no float64 (or fp16) grouped kernel: the looped reference serves those
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False  # the compiled grouped_mm accepts bf16 only
    if x.device.type == "cuda":  # CUDA kernels need bf16 on sm90+
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return True


def grouped_matmul(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows offsets[e-1]:offsets[e] of x times w[e]. x: [N, K], w: [E, K, M] -> [N, M]."""
    if _grouped_available(x) and x.shape[-1] % 8 == 0 and w.shape[-1] % 8 == 0:
        return F.grouped_mm(x, w.to(x.dtype), offs=offsets)
    return looped_matmul(x, w, offsets)


def looped_matmul(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Plain reference (one matmul per expert). Reads offsets on the host: tests and fallback only."""
    bounds = [0] + offsets.tolist()
    return torch.cat([x[bounds[e]:bounds[e + 1]] @ w[e].to(x.dtype) for e in range(w.shape[0])])


class TokenRoutedMLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int):
        super().__init__()
        if d_ff % n_experts:
            raise ValueError(f"d_ff ({d_ff}) must divide by n_experts ({n_experts})")
        self.n_experts = n_experts
        width = d_ff // n_experts
        self.gate_up = nn.Parameter(torch.empty(n_experts, d_model, 2 * width))
        self.down = nn.Parameter(torch.empty(n_experts, width, d_model))
        self.down.residual_projection = True

    def forward(self, x: torch.Tensor, route: TokenRoute) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if torch.is_autocast_enabled(flat.device.type):
            flat = flat.to(torch.get_autocast_dtype(flat.device.type))
        rows = flat[route.order]
        gate, up = grouped_matmul(rows, self.gate_up, route.offsets).chunk(2, dim=-1)
        out_sorted = grouped_matmul(F.silu(gate) * up, self.down, route.offsets)
        out = torch.empty_like(out_sorted).index_copy_(0, route.order, out_sorted)
        return out.reshape(shape[:-1] + (out.shape[-1],))
