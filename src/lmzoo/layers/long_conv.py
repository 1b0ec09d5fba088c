"""Causal long convolution through the FFT: y = x * h over the sequence, O(L log L).

Both signals are zero-padded to 2L before `rfft`, which turns the FFT's circular convolution into
a linear one, and only the first L outputs are kept, so y[i] depends on x[<= i] only.
"""
from __future__ import annotations

import torch


def fft_causal_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x [..., D, L], h [D, L] (one filter per channel) -> [..., D, L], y[i] = sum_{j<=i} h[j] x[i-j]."""
    n = x.shape[-1]
    size = 2 * n
    dtype = torch.promote_types(x.dtype, torch.float32)  # FFTs in at least fp32, also under bf16
    spectrum = torch.fft.rfft(x.to(dtype), n=size) * torch.fft.rfft(h.to(dtype), n=size)
    return torch.fft.irfft(spectrum, n=size)[..., :n].to(x.dtype)


def causal_conv_last(x: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """The last n outputs of `fft_causal_conv(x, h)`. For one output (a decoding step) that is one
    dot product per channel with the reversed filter, O(L), instead of a whole FFT convolution."""
    if n == 1:
        return (x * h.flip(-1).to(x.dtype)).sum(-1, keepdim=True)
    return fft_causal_conv(x, h)[..., -n:]
