"""`spike-transformer`: a spike-driven transformer LM trained end to end with surrogate gradients.

Each token is presented for T timesteps. The residual stream U [T, B, L, D] carries real-valued
membrane potentials (the "membrane shortcut"); every linear layer reads binary spikes, so its
work is accumulates (ACs) rather than multiply-accumulates. One block (pre-norm):

    x = LIF_in(norm1(U))                                   binary block input
    Q, K, V = LIF_q(x Wq), LIF_k(x Wk), LIF_v(x Wv)         binary
    C_i = sum_{j<=i} K_j * V_j / (i + 1)                    causal running mean (per timestep)
    U += LIF_attn(Q * C) Wo                                 spike-driven self-attention, O(L)
    U += LIF_hid(LIF_ffn(norm2(U)) W1) W2                   spiking FFN

The LM head reads the mean over T of norm(U). Decoding keeps, per layer and timestep, the running
sum of K*V: O(1) state per token. `stats` holds the spike rate of every site.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.lif import LIF, RESETS, SURROGATES
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.precision import upcast
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM, State
from lmzoo.models.transformer import SIZES as DENSE_SIZES
from lmzoo.registry import register

# Spiking sites of a block and their default thresholds. The seed's names: embedding (the block
# input; for the first block that is the embedding), Q, K, V, attention, FFN1 (hidden) and FFN2
# (the FFN's input).
SITES = {"input": 0.5, "q": 0.5, "k": 0.5, "v": 0.6, "attn": 0.5, "ffn_in": 0.6, "ffn_hidden": 0.5}


def _presets() -> dict[str, dict]:
    # Same width/depth as `transformer`; 4 d^2 attention + 2 d d_ff FFN per layer against its
    # 3 d^2 + 3 d d_ff, so d_ff = (3 d_ff_dense - d) / 2 keeps the parameters matched.
    return {name: {"d_model": d, "n_layers": n, "d_ff": (3 * ff - d) // 2}
            for name, (d, n, _h, _kv, ff) in DENSE_SIZES.items()}


@dataclass
class SpikeTransformerConfig(ModelConfig):
    d_ff: int = 512
    timesteps: int = 4
    beta: float = 0.9                  # membrane leak per timestep
    surrogate: str = "sigmoid"         # sigmoid (the seed's, slope 2) or atan (SpikeGPT's, alpha 2)
    surrogate_scale: float = 2.0
    reset: str = "hard"
    learn_thresholds: bool = False
    thresholds: dict | None = None     # per-site overrides of SITES, e.g. {"v": 0.7}
    attn_gain: float = 8.0             # initial per-channel gain on Q*C (see SpikeDrivenBlock)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timesteps < 1:
            raise LmzooError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.surrogate not in SURROGATES or self.reset not in RESETS:
            raise LmzooError(f"surrogate must be one of {', '.join(SURROGATES)} and reset one of "
                             f"{', '.join(RESETS)}; got {self.surrogate!r}, {self.reset!r}")
        unknown = sorted(set(self.thresholds or {}) - set(SITES))
        if unknown:
            raise LmzooError(f"unknown spiking site(s) {unknown} in thresholds; valid: {', '.join(SITES)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
                   for v in (self.thresholds or {}).values()):
            raise LmzooError(f"thresholds must be positive finite numbers, got {self.thresholds}")

    def threshold(self, site: str) -> float:
        return float((self.thresholds or {}).get(site, SITES[site]))


class SpikeDrivenBlock(nn.Module):
    def __init__(self, config: SpikeTransformerConfig):
        super().__init__()
        d = config.d_model
        self.lif = nn.ModuleDict({site: LIF(config.threshold(site), config.beta, config.surrogate,
                                            config.surrogate_scale, config.reset, config.learn_thresholds)
                                  for site in SITES})
        self.attn_norm = RMSNorm(d, config.norm_eps)
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.out = nn.Linear(d, d, bias=False)
        self.mlp_norm = RMSNorm(d, config.norm_eps)
        self.ffn_in = nn.Linear(d, config.d_ff, bias=False)
        self.ffn_out = nn.Linear(config.d_ff, d, bias=False)
        self.out.residual_projection = self.ffn_out.residual_projection = True
        # The running mean C of K*V is about rate_k * rate_v (a few percent), far below any useful
        # threshold; a learned per-channel gain lets the attention neurons fire from the start.
        self.attn_gain = nn.Parameter(torch.full((d,), float(config.attn_gain)))

    def new_state(self) -> "KVSums":
        return KVSums()

    def forward(self, u: torch.Tensor, context: "SpikeContext", state: "KVSums | None") -> torch.Tensor:
        """u [T, B, n, D] -> u; `state.sum` moves to the chunk's last position."""
        start, rates = context.start, {}
        context.rates.append(rates)
        kv_sum = state.sum if state is not None else None
        x = self.fire("input", self.attn_norm(u), rates)
        q = self.fire("q", self.q(x), rates)
        k = self.fire("k", self.k(x), rates)
        v = self.fire("v", self.v(x), rates)
        sums = torch.cumsum(k * v, dim=2)  # over positions, per timestep
        if kv_sum is not None:
            sums = sums + kv_sum.unsqueeze(2)
        count = torch.arange(start + 1, start + u.shape[2] + 1, device=u.device, dtype=u.dtype)
        attn = self.fire("attn", q * (sums / count[:, None]) * self.attn_gain, rates)
        u = u + self.out(attn)
        hidden = self.fire("ffn_hidden", self.ffn_in(self.fire("ffn_in", self.mlp_norm(u), rates)), rates)
        if state is not None:
            state.sum = sums[:, :, -1]
        return u + self.ffn_out(hidden)

    def fire(self, site: str, current: torch.Tensor, rates: dict) -> torch.Tensor:
        spikes = self.lif[site](current)
        rates[site] = spikes.detach().mean()
        return spikes


@dataclass
class SpikeContext(BlockContext):
    rates: list[dict] = field(default_factory=list)  # per block: spike rate of each site


class KVSums(LayerState):
    """Decoding state of one block: the running sum of K*V per timestep ([T, B, D])."""

    batch_dims = {"sum": 1}


@register("spike-transformer", SpikeTransformerConfig, _presets(),
          "spiking transformer: LIF neurons over T timesteps, spike-driven linear attention, surrogate gradients")
class SpikeTransformerLM(CausalLM):
    lora_targets = ("q", "k", "v")
    constant_state = True  # one running K*V sum per timestep and layer
    def __init__(self, config: SpikeTransformerConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(SpikeDrivenBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()
        for block in self.blocks:  # spike-fed layers: unit-scale currents so the neurons fire at init
            for linear in (block.q, block.k, block.v, block.ffn_in):
                nn.init.normal_(linear.weight, 0.0, linear.in_features ** -0.5)

    def backbone(self, input_ids: torch.Tensor, state: State | None):
        x = self.embed(input_ids)
        u = x.unsqueeze(0).expand(self.config.timesteps, *x.shape)  # the same input at every timestep
        context = SpikeContext(start=state.position if state is not None else 0)
        # Spikes are thresholds: bf16 rounding of the currents flips near-threshold neurons and the
        # flips compound over layers, so the blocks run in (at least) fp32 even under autocast.
        with torch.autocast(u.device.type, enabled=False):
            u = self.run_blocks(upcast(u), context, state)
        stats, layer_rates = {}, []
        for i, rates in enumerate(context.rates):
            stats.update({f"spike_rate/layer{i}/{site}": r for site, r in rates.items()})
            layer_rates.append(torch.stack(list(rates.values())).mean())
            stats[f"spike_rate/layer{i}"] = layer_rates[-1]
        stats["spike_rate"] = torch.stack(layer_rates).mean()
        return self.norm(u).mean(0), None, stats
