"""Short causal depthwise convolution: each channel mixes the last `kernel` tokens.

    y_t[c] = sum_{j=0}^{kernel-1} w[c, j] x_{t-kernel+1+j}[c]          (x before t=0 is zero)

Linear attention with a positive feature map sums its keys and values without order, so within a
window it sees a bag of tokens; this layer in front of it (as in H3, Based, GLA, Mamba) gives the
keys, queries and values the order of the last few tokens. Decoding keeps the last kernel-1
inputs, so continuing from that tail equals one pass over the whole sequence.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ShortConv(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        if kernel < 1:
            raise ValueError(f"short conv kernel must be >= 1, got {kernel}")
        self.kernel = kernel
        # 2-D on purpose: CausalLM.init_weights re-draws 3-D parameters (expert stacks) at init_std.
        bound = 1 / math.sqrt(kernel)  # PyTorch's own Conv1d default for a depthwise kernel
        self.weight = nn.Parameter(torch.empty(channels, kernel).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, n, C]; `tail` holds the kernel-1 inputs before x (None: zeros). Returns (y, new tail)."""
        if tail is None:
            tail = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[2])
        ext = torch.cat((tail.to(x.dtype), x), dim=1)
        n, weight = x.shape[1], self.weight.to(x.dtype)
        # A sum over the few taps of shifted views: on CPU faster than conv1d (no transposes), both
        # for training steps and for one-token decoding.
        y = ext[:, :n] * weight[:, 0]
        for j in range(1, self.kernel):
            y = y + ext[:, j:j + n] * weight[:, j]
        return y, ext[:, ext.shape[1] - (self.kernel - 1):]
