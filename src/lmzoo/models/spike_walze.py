"""`spike-walze`: a causal roller, a per-token spike gate, and local attention only where it fires.

One block (pre-norm, residual):

    x += Walze(norm1(x))                                   causal sparse-tap conv + gated mixing
    p, spike = SpikeGate(norm1(x_before), norm2(x))        per-token decision, p = soft score
    x += spike * p * LocalAttn(norm2(x))                   queries/attention/out-proj only if spiked
    x += SwiGLU(norm3(x))                                  (mlp=True, the default; the seed has none)

An auxiliary loss pulls each layer's spike rate toward `spike_target`; the gate temperature is
annealed from `temperature_start` to `temperature_end` by the trainer's progress. See
docs/architectures.md for where this departs from the seed and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.local_attention import GatedLocalAttention, WindowHistory
from lmzoo.layers.mlp import SwiGLU
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.spike_gate import SpikeGate, anneal_temperature, straight_through_rate
from lmzoo.layers.walze import DEFAULT_TAPS, CausalWalze, WalzeBuffer
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM, State
from lmzoo.registry import register

# Same d_model/layers/heads as `transformer`'s table; d_ff, cut to pay for the roller and the gate
# (2.5 d^2 per layer), is `lmzoo.registry.matched_value`'s pick, so a preset holds the transformer's
# non-embedding parameters (tests/test_registry.py checks it).
#        name      d_model layers heads kv  d_ff
SIZES = {
    "nano": (128, 5, 4, 1, 288),
    "micro": (256, 6, 4, 1, 608),
    "tiny": (384, 10, 6, 1, 736),
    "small": (512, 16, 8, 2, 1056),
    "base": (768, 20, 12, 3, 1440),
}


MAX_ROLLER_REACH = 1 << 20


@dataclass
class SpikeWalzeConfig(ModelConfig):
    # A training-time cap on the share of spiking tokens, removed: it ranked p over the whole
    # sequence, so a token's decision depended on later tokens (inference never used it).
    removed_keys = ("spike_capacity",)
    n_heads: int = 4
    n_kv_heads: int = 1
    d_ff: int = 288
    mlp: bool = True                      # False reproduces the seed's block (no feed-forward)
    rope_theta: float = 10000.0
    window: int = 64                      # local attention looks at the last `window` tokens
    taps: tuple = DEFAULT_TAPS            # roller offsets into the past
    dilation_cycle: int = 1               # layer i dilates the taps by 2 ** (i % cycle); 1 = none
    spike_target: float = 0.25            # spike rate the auxiliary loss pulls toward
    spike_loss_weight: float = 0.1
    temperature_start: float = 1.0
    temperature_end: float = 0.1
    # Ablations (benchmarks/ablations.py): no roller, or a fixed spike pattern instead of the router.
    roller: bool = True
    forced_spike_rate: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.taps or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.taps):
            raise LmzooError(f"taps must be integer offsets >= 0, got {list(self.taps)}")
        self.taps = tuple(self.taps)
        # The roller buffers max(taps) * its largest dilation past tokens per layer.
        reach = max(self.taps) * 2 ** (min(self.dilation_cycle, self.n_layers) - 1)
        if reach > MAX_ROLLER_REACH:
            raise LmzooError(f"the roller would reach {reach:,} tokens back (max(taps) * 2**(dilation_cycle - 1)); "
                             f"keep it <= {MAX_ROLLER_REACH:,}")
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise LmzooError(f"d_model ({self.d_model}) must divide by n_heads ({self.n_heads}) and n_heads "
                             f"by n_kv_heads ({self.n_kv_heads})")
        if self.window < 1 or self.dilation_cycle < 1:
            raise LmzooError(f"window and dilation_cycle must be >= 1, got {self.window}, {self.dilation_cycle}")
        if not 0.0 <= self.spike_target <= 1.0:
            raise LmzooError(f"spike_target is a rate in [0, 1], got {self.spike_target}")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise LmzooError("gate temperatures need 0 < temperature_end <= temperature_start, got "
                             f"{self.temperature_start} -> {self.temperature_end}")
        if self.forced_spike_rate is not None and not 0 <= self.forced_spike_rate <= 1:
            raise LmzooError(f"forced_spike_rate is a rate in [0, 1] or None, got {self.forced_spike_rate}")


class SpikeWalzeLayerState(LayerState):
    """Decoding state of one block: the roller's circular buffer and the window's keys/values."""

    batch_dims = {"walze": 0, "window": 0}

    def __init__(self, walze: WalzeBuffer | None):
        super().__init__()
        self.walze, self.window = walze, WindowHistory()


@dataclass
class SpikeWalzeContext(BlockContext):
    rates: list = field(default_factory=list)  # per block: the straight-through spike rate
    spikes: list = field(default_factory=list)  # per block [B, L] decisions, only when token_stats is asked


class SpikeWalzeBlock(nn.Module):
    def __init__(self, config: SpikeWalzeConfig, layer: int):
        super().__init__()
        d = config.d_model
        self.walze_norm = RMSNorm(d, config.norm_eps)
        self.walze = CausalWalze(d, config.taps, dilation=2 ** (layer % config.dilation_cycle)) if config.roller else None
        self.attn_norm = RMSNorm(d, config.norm_eps)
        self.gate = SpikeGate(d, config.temperature_start)
        self.gate.force_rate = config.forced_spike_rate
        self.attn = GatedLocalAttention(d, config.n_heads, config.n_kv_heads, config.window, config.rope_theta)
        self.mlp_norm = RMSNorm(d, config.norm_eps) if config.mlp else None
        self.mlp = SwiGLU(d, config.d_ff) if config.mlp else None

    def new_state(self) -> SpikeWalzeLayerState:
        return SpikeWalzeLayerState(self.walze.new_buffer() if self.walze is not None else None)

    def forward(self, x: torch.Tensor, context: SpikeWalzeContext, state: SpikeWalzeLayerState | None):
        start = context.start
        h_before = self.walze_norm(x)
        if self.walze is not None:
            x = x + self.walze(h_before, start, state.walze if state is not None else None)
        h = self.attn_norm(x)
        p, spike = self.gate(h_before, h, start)
        x = x + self.attn(h, spike, p, start, state.window if state is not None else None)
        if self.mlp is not None:
            x = x + self.mlp.step(self.mlp_norm(x))
        context.rates.append(straight_through_rate(p, spike))
        if context.token_stats is not None:
            context.spikes.append(spike.detach())
        return x


@register("spike-walze", SpikeWalzeConfig,
          {name: dict(d_model=d, n_layers=n, n_heads=h, n_kv_heads=kv, d_ff=ff)
           for name, (d, n, h, kv, ff) in SIZES.items()},
          "causal conv roller + per-token spike gate + local attention only for spiked tokens")
class SpikeWalzeLM(CausalLM):
    lora_targets = ("q", "kv")
    constant_state = True  # a roller buffer of max(taps) inputs and the last window-1 keys per layer
    mixed_positions = True
    def __init__(self, config: SpikeWalzeConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(SpikeWalzeBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()  # leaves the roller's taps at their averaging init (not a Linear)

    def set_training_progress(self, fraction: float) -> None:
        tau = anneal_temperature(fraction, self.config.temperature_start, self.config.temperature_end)
        for block in self.blocks:
            block.gate.temperature.fill_(tau)

    def force_spike_rate(self, rate: float | None) -> None:
        """Benchmarks: spike a fixed causal pattern of `rate` of the tokens (None = the router decides).
        Changes this instance only; the `forced_spike_rate` config field sets it from construction."""
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise LmzooError(f"a forced spike rate must be in [0, 1], got {rate}")
        for block in self.blocks:
            block.gate.force_rate = rate

    def new_context(self, input_ids: torch.Tensor, state: State | None) -> SpikeWalzeContext:
        return SpikeWalzeContext(start=self.start_position(state))

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: SpikeWalzeContext):
        x = self.run_blocks(self.embed(input_ids), context, state)
        rates = torch.stack(context.rates)
        stats = {f"spike_rate/layer{i}": rate for i, rate in enumerate(rates.detach().unbind())}
        stats["spike_rate"] = rates.detach().mean()
        stats["gate_temperature"] = self.blocks[0].gate.temperature.detach().clone()
        penalty = (rates.float() - self.config.spike_target).square().sum()
        aux_loss = penalty * (self.config.spike_loss_weight / len(self.blocks))
        if context.token_stats is not None:
            context.token_stats["spiked"] = torch.stack(context.spikes, dim=-1)  # [B, L, layers] bool
        return self.norm(x), aux_loss, stats
