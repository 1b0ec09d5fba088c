"""Causal stationary (undecimated, "à trous") wavelet decomposition along the sequence.

Level l filters the previous approximation with the analysis low-pass and high-pass filters of
a wavelet (db4 by default, taps from PyWavelets) dilated by 2^(l-1), with left padding only, so
output i depends on inputs <= i. No decimation: every band keeps the sequence length, and the
bands are [detail_1, ..., detail_n, approx_n].

    approx_l[i] = sum_k lo[k] approx_{l-1}[i - k 2^(l-1)]      (approx_0 = x)
    detail_l[i] = sum_k hi[k] approx_{l-1}[i - k 2^(l-1)]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.errors import LmzooError


def wavelet_filters(name: str = "db4") -> tuple[list[float], list[float]]:
    """(low-pass, high-pass) analysis filters of a discrete wavelet."""
    try:
        import pywt
    except ImportError:
        raise LmzooError("the spectral mixer needs PyWavelets; pip install 'lmzoo[spectral]'") from None
    try:
        wavelet = pywt.Wavelet(name)
    except ValueError:
        raise LmzooError(f"unknown wavelet '{name}'; pick one of pywt.wavelist(kind='discrete'), e.g. db4") from None
    return list(wavelet.dec_lo), list(wavelet.dec_hi)


class CausalWaveletDecomposition(nn.Module):
    def __init__(self, levels: int = 3, wavelet: str = "db4"):
        super().__init__()
        if levels < 1:
            raise ValueError(f"wavelet levels must be >= 1, got {levels}")
        lo, hi = wavelet_filters(wavelet)
        self.levels, self.taps = levels, len(lo)
        # conv1d correlates, so the filters are stored reversed: w[j] = f[K-1-j].
        self.register_buffer("filters", torch.tensor([lo[::-1], hi[::-1]]), persistent=False)

    def history_lengths(self) -> list[int]:
        """Inputs before a chunk that level l needs to continue exactly: (K-1) 2^(l-1)."""
        return [(self.taps - 1) * 2 ** level for level in range(self.levels)]

    def response_length(self) -> int:
        """Taps of each band's impulse response: (K-1)(2^levels - 1) + 1."""
        return sum(self.history_lengths()) + 1

    def impulse_responses(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[levels+1, response_length()]: band b of any x is exactly the causal convolution
        g_b * x (the decomposition is linear, time-invariant and starts from zeros)."""
        impulse = self.filters.new_zeros(1, 1, self.response_length(), dtype=dtype)
        impulse[..., 0] = 1
        return torch.cat(self(impulse), 1)[0]

    def forward(self, x: torch.Tensor, history: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """x [B, D, L] -> levels+1 bands [B, D, L]. `history[l]` (optional): the last inputs of level
        l before x ([B, D, history_lengths()[l]]); zeros (the sequence start) when None."""
        return self.decompose(x, history)[0]

    def decompose(self, x: torch.Tensor, history: list[torch.Tensor] | None = None):
        """-> (bands, level inputs): the inputs [x, approx_1, ...] are what a decoder keeps as history."""
        b, d, n = x.shape
        bands, approx, inputs = [], x, []
        for level, pad in enumerate(self.history_lengths()):
            inputs.append(approx)
            before = history[level] if history is not None else approx.new_zeros(b, d, pad)
            ext = torch.cat((before.to(approx.dtype), approx), dim=-1)
            weight = self.filters.to(x.dtype).repeat(d, 1).unsqueeze(1)  # [2D, 1, K]: lo, hi per channel
            out = F.conv1d(ext, weight, groups=d, dilation=2 ** level)  # [B, 2D, L]
            lo, hi = out.view(b, d, 2, n).unbind(2)
            bands.append(hi)
            approx = lo
        return bands + [approx], inputs
