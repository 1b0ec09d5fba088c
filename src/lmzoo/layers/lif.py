"""Leaky integrate-and-fire neurons over T timesteps, with surrogate gradients.

A LIF layer sees the same token position at every timestep t = 0..T-1 (the input is presented T
times); its membrane potential runs along t, starting at 0 for each token:

    u_t = clip(beta * u_{t-1} + I_t, -5, 5);   s_t = H(u_t - theta);   u_t = 0 where s_t (hard reset)

or `u_t -= theta * s_t` (soft reset). Positions never exchange state here, so the neuron is
causal by construction and vectorised over batch and positions (the only loop is over the T
timesteps). The Heaviside step has no useful gradient, so `spike` uses a surrogate in backward:
the derivative of a sigmoid (slope k) or of an arctangent (alpha).
"""
from __future__ import annotations

import math

import torch
from torch import nn

SURROGATES = ("sigmoid", "atan")
RESETS = ("hard", "soft")
MEMBRANE_CLIP = 5.0


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward; surrogate derivative backward (`kind`, `scale`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.scale = kind, scale
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * surrogate_derivative(x, ctx.kind, ctx.scale), None, None


def surrogate_derivative(x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    if kind == "sigmoid":
        sig = torch.sigmoid(scale * x)
        return scale * sig * (1 - sig)
    if kind == "atan":
        return (scale / 2) / (1 + (math.pi / 2 * scale * x) ** 2)
    raise ValueError(f"unknown surrogate '{kind}'; choose one of: {', '.join(SURROGATES)}")


def spike(x: torch.Tensor, kind: str = "sigmoid", scale: float = 2.0) -> torch.Tensor:
    return SpikeFunction.apply(x, kind, scale)


class LIF(nn.Module):
    """Spiking neurons of one site. Input/output [T, ...]: T timesteps of the same positions."""

    def __init__(self, threshold: float, beta: float = 0.9, surrogate: str = "sigmoid", scale: float = 2.0,
                 reset: str = "hard", learn_threshold: bool = False):
        super().__init__()
        if surrogate not in SURROGATES or reset not in RESETS:
            raise ValueError(f"surrogate must be one of {SURROGATES} and reset one of {RESETS}")
        self.beta, self.surrogate, self.scale, self.reset = beta, surrogate, scale, reset
        theta = torch.tensor([float(threshold)])  # [1], not 0-d: FSDP2 shards no 0-d parameter
        if learn_threshold:
            self.threshold = nn.Parameter(theta)
        else:
            self.register_buffer("threshold", theta)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return LIFSequence.apply(current, self.threshold.to(current.dtype), self.beta, self.surrogate, self.scale,
                                 self.reset == "hard")


def reference_lif(lif: LIF, current: torch.Tensor) -> torch.Tensor:
    """Step-by-step autograd form of `LIF.forward` (the fused Function is tested against it)."""
    u = torch.zeros_like(current[0])
    spikes = []
    for i_t in current.unbind(0):
        u = (lif.beta * u + i_t).clamp(-MEMBRANE_CLIP, MEMBRANE_CLIP)
        s = spike(u - lif.threshold, lif.surrogate, lif.scale)
        u = u * (1 - s) if lif.reset == "hard" else u - s * lif.threshold
        spikes.append(s)
    return torch.stack(spikes)


class LIFSequence(torch.autograd.Function):
    """All T steps of a LIF layer in one autograd node, with backpropagation through time written
    out: it computes exactly the gradients of `reference_lif` (the surrogate through the spike,
    through the reset and into the threshold) while keeping only the spikes, the membrane
    potentials and the clip mask per step instead of a graph of ~7 ops per step."""

    @staticmethod
    def forward(ctx, current, threshold, beta, kind, scale, hard):
        u = torch.zeros_like(current[0])
        spikes, membranes = torch.empty_like(current), torch.empty_like(current)
        inside = torch.empty(current.shape, dtype=torch.bool, device=current.device)
        for t in range(current.shape[0]):  # the T timesteps; positions and channels are vectorised
            a = beta * u + current[t]
            inside[t] = (a >= -MEMBRANE_CLIP) & (a <= MEMBRANE_CLIP)  # where clamp passes gradients
            m = a.clamp(-MEMBRANE_CLIP, MEMBRANE_CLIP)
            s = (m > threshold).to(current.dtype)
            spikes[t], membranes[t] = s, m
            u = m * (1 - s) if hard else m - threshold * s
        ctx.save_for_backward(spikes, membranes, inside, threshold)
        ctx.beta, ctx.kind, ctx.scale, ctx.hard = beta, kind, scale, hard
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        spikes, membranes, inside, threshold = ctx.saved_tensors
        grad_current = torch.empty_like(grad_spikes)
        grad_threshold = torch.zeros_like(threshold)
        du = torch.zeros_like(grad_spikes[0])  # gradient reaching u_t from step t+1
        for t in reversed(range(grad_spikes.shape[0])):
            s, m = spikes[t], membranes[t]
            slope = surrogate_derivative(m - threshold, ctx.kind, ctx.scale)
            if ctx.hard:  # u = m (1 - s)
                gs = grad_spikes[t] - du * m
                gm = gs * slope + du * (1 - s)
            else:         # u = m - theta s
                gs = grad_spikes[t] - du * threshold
                gm = gs * slope + du
                grad_threshold -= (du * s).sum()
            grad_threshold -= (gs * slope).sum()
            grad_current[t] = gm * inside[t]
            du = grad_current[t] * ctx.beta
        return grad_current, grad_threshold, None, None, None, None
