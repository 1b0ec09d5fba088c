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
    through the reset and into the threshold). It keeps only the spikes and, per step, the membrane
    before the clip (the clipped membrane and the clip's gradient mask are recomputed from it).
    The layer is memory-bound, so its cost is the passes over [T, B, L, D]: fused and in-place ops,
    outputs written in place, and per-step temporaries ([B, L, D], not [T, B, L, D]: glibc returns
    buffers of 32 MiB or more to the OS, and each new one is page-faulted in again). The forward's
    arithmetic is op for op the reference's (beta * u, then + I): spikes are bitwise equal."""

    @staticmethod
    def forward(ctx, current, threshold, beta, kind, scale, hard):
        steps = current.shape[0]
        spikes, before_clip = torch.empty_like(current), []
        u = None
        for t in range(steps):  # the T timesteps; positions and channels are vectorised
            a = current[t].clone() if u is None else torch.mul(u, beta).add_(current[t])
            before_clip.append(a)
            m = a.clamp(-MEMBRANE_CLIP, MEMBRANE_CLIP)
            s = torch.gt(m, threshold, out=spikes[t])
            if t + 1 < steps:  # the last step's reset is never read
                u = m.mul_(1 - s) if hard else m.addcmul_(s, threshold, value=-1)
        ctx.save_for_backward(spikes, threshold, *before_clip)
        ctx.beta, ctx.kind, ctx.scale, ctx.hard = beta, kind, scale, hard
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        spikes, threshold, *before_clip = ctx.saved_tensors
        beta, hard = ctx.beta, ctx.hard
        want_threshold = ctx.needs_input_grad[1]
        grad_current = torch.empty_like(spikes)
        grad_threshold = torch.zeros_like(threshold)
        after = None  # grad_current[t + 1]: the gradient reaching u_t is beta * after
        for t in reversed(range(len(before_clip))):
            m, outside = _clip(before_clip[t])
            if hard:
                slope = surrogate_derivative(m - threshold, ctx.kind, ctx.scale)
            else:  # m is needed no more: the slope may take its memory (not the saved tensor's)
                slope = surrogate_slope_(m.sub_(threshold) if outside is not None else m - threshold,
                                         ctx.kind, ctx.scale)
            gm = grad_current[t]  # gradient of the clipped membrane m_t, then of the current I_t
            if after is None:
                torch.mul(grad_spikes[t], slope, out=gm)
                if want_threshold:
                    grad_threshold -= gm.sum()
            elif hard:  # u = m (1 - s)
                du = after * beta
                gs = grad_spikes[t] - du * m
                torch.mul(gs, slope, out=gm)
                if want_threshold:
                    grad_threshold -= gm.sum()
                gm.add_(du).addcmul_(du, spikes[t], value=-1)
            else:       # u = m - theta s
                gs = torch.addcmul(grad_spikes[t], after, threshold, value=-beta)
                torch.mul(gs, slope, out=gm)
                if want_threshold:
                    grad_threshold -= gm.sum() + beta * (after * spikes[t]).sum()
                gm.add_(after, alpha=beta)
            if outside is not None:  # few elements clip: zero them by index, not with a masked pass
                gm[outside] = 0.0
            after = gm
        return grad_current, grad_threshold, None, None, None, None


def _clip(before: torch.Tensor):
    """(clipped membrane, indices where the clip blocks the gradient, or None: nothing clipped). On
    CPU one min/max pass finds the usual case, nothing clipped, and returns `before` itself (read
    only); elsewhere always the clamp (reading the min/max would wait for the device)."""
    if before.device.type == "cpu":
        low, high = torch.aminmax(before)
        if not (bool(low < -MEMBRANE_CLIP) or bool(high > MEMBRANE_CLIP)):
            return before, None
    m = before.clamp(-MEMBRANE_CLIP, MEMBRANE_CLIP)
    return m, (m != before).nonzero(as_tuple=True)  # bounds pass the gradient, as autograd's clamp


def surrogate_slope_(x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """`surrogate_derivative(x)` computed in x's memory (x is overwritten), in few passes."""
    if kind == "sigmoid":
        sig = torch.sigmoid_(x.mul_(scale))
        return sig.addcmul_(sig, sig, value=-1).mul_(scale)  # k sig (1 - sig)
    if kind == "atan":
        c = math.pi / 2 * scale
        torch.addcmul(x.new_ones(()), x, x, value=c * c, out=x)  # 1 + (c x)^2
        return torch.div(x.new_tensor(scale / 2), x, out=x)
    raise ValueError(f"unknown surrogate '{kind}'; choose one of: {', '.join(SURROGATES)}")
