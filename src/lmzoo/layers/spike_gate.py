"""AdaptiveSpikeDetector: a per-token, causal router that decides which tokens get attention.

    s = MLP([h_before, h_after])            (Linear(2d, d/4), GELU, Linear(d/4, 1))
    p = sigmoid((s - theta) / tau)          (theta learned, tau annealed 1 -> 0.1 over training)
    spike = p > 0.5                         (i.e. s > theta: a decision per token, no top-k over
                                             the sequence, so it is causal at inference)

The expert path's output is scaled by p, which is how the router learns from the language-model
loss; the spike-rate penalty uses a straight-through rate (the hard rate forward, the gradient of
mean(p) backward), so it can pull the realised rate toward its target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.precision import upcast


def forced_spikes(start: int | torch.Tensor, n: int, rate: float, device) -> torch.Tensor:
    """A fixed causal pattern spiking `rate` of positions (t spikes when floor((t+1) r) > floor(t r)):
    [n], or [B, n] for per-row starts [B].

    Used by benchmarks to measure cost as a function of the rate, independent of the router.
    """
    if isinstance(start, torch.Tensor):
        t = (start[:, None] + torch.arange(n, device=device)).to(torch.float64)
    else:
        t = torch.arange(start, start + n, device=device, dtype=torch.float64)
    return torch.floor((t + 1) * rate) > torch.floor(t * rate)


class SpikeGate(nn.Module):
    def __init__(self, d_model: int, temperature: float = 1.0):
        super().__init__()
        hidden = max(1, d_model // 4)
        self.score_in = nn.Linear(2 * d_model, hidden)
        self.score_out = nn.Linear(hidden, 1)
        # Shape [1], not 0-d: FSDP2 shards no 0-d parameter (older checkpoints' 0-d one loads).
        self.threshold = nn.Parameter(torch.zeros(1))
        # Saved with the weights: p = sigmoid((s - theta) / tau) scales the attention output, so
        # a loaded model must use the temperature it was trained to.
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.force_rate: float | None = None  # benchmarks: replace the decision by a fixed pattern

    def forward(self, h_before: torch.Tensor, h_after: torch.Tensor, start: int | torch.Tensor = 0):
        """-> (p [B, n] in (0, 1), spike [B, n] bool)."""
        score = self.score_out(F.gelu(self.score_in(torch.cat((h_before, h_after), dim=-1)))).squeeze(-1)
        p = torch.sigmoid((upcast(score) - self.threshold) / self.temperature)
        if self.force_rate is not None:
            pattern = forced_spikes(start, p.shape[1], self.force_rate, p.device)
            return p, pattern.expand_as(p)
        return p, p > 0.5


def straight_through_rate(p: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
    """The realised spike rate in the forward pass, with the gradient of mean(p) (no autograd,
    e.g. decoding: just the rate, without the two means that only carry the gradient)."""
    if not torch.is_grad_enabled():
        return spike.to(p.dtype).mean()
    return spike.to(p.dtype).mean() + p.mean() - p.mean().detach()


def anneal_temperature(progress: float, start: float, end: float) -> float:
    """Geometric interpolation start -> end as training progress goes 0 -> 1."""
    progress = min(max(progress, 0.0), 1.0)
    return start * (end / start) ** progress
