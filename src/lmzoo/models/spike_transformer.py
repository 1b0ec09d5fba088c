"""`spike-transformer`: a spike-driven transformer LM trained end to end with surrogate gradients.

Each token is presented for T timesteps. The residual stream U [T, B, L, D] carries real-valued
membrane potentials (the "membrane shortcut"); every linear layer reads binary spikes, so its
work is accumulates (ACs) rather than multiply-accumulates. One block (pre-norm):

    x = LIF_in(norm1(U))                                   binary block input
    x = shift(x)                                           a fraction of channels from token i-1
    Q, K, V = LIF_q(x Wq), LIF_k(x Wk), LIF_v(x Wv)         binary
    C_i = sum_{j<=i} w^(i-j) K_j V_j / sum_{j<=i} w^(i-j)   decayed running mean, per channel
    U += LIF_attn(Q * C * g) Wo                             spike-driven self-attention, O(L)
    U += LIF_hid(LIF_ffn(norm2(U)) W1) W2                   spiking FFN

The token shift (channel-wise, so x stays binary) gives the block the order of adjacent tokens;
the learned per-channel decay w = exp(-exp(a)) (RWKV/SpikeGPT-style) lets each channel choose how
far back it averages, from the last token to the whole past (w -> 1 is the plain running mean of
`attention="mean"`). Why these two: docs/architectures.md, spike-transformer. The LM head reads
the mean over T of norm(U). Decoding keeps, per layer and timestep, the decayed sum of K*V and
the last token's shifted input spikes: O(1) state per token. `stats` holds every site's spike rate.
"""
from __future__ import annotations

import math
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
ATTENTIONS = ("decay", "mean")


# Same width and depth as `transformer`'s SIZES; d_ff is `lmzoo.registry.matched_value`'s pick, so a
# preset holds the transformer's non-embedding parameters (tests/test_registry.py checks it).
D_FF = {"nano": 512, "micro": 1024, "tiny": 1280, "small": 1856, "base": 2560}
PRESETS = {name: {"d_model": d, "n_layers": n, "d_ff": D_FF[name]} for name, (d, n, *_) in DENSE_SIZES.items()}


@dataclass
class SpikeTransformerConfig(ModelConfig):
    # Configs saved before the token shift and the decayed mean (issue 17) are the plain-mean model.
    legacy_defaults = {"attention": "mean", "token_shift": 0.0}
    d_ff: int = 512
    timesteps: int = 4
    beta: float = 0.9                  # membrane leak per timestep
    surrogate: str = "atan"            # atan (SpikeGPT's, alpha 2) or sigmoid (the seed's, slope 2)
    surrogate_scale: float = 2.0
    reset: str = "soft"                # soft: subtract theta on a spike; hard (the seed's): set u to 0
    learn_thresholds: bool = False
    thresholds: dict | None = None     # per-site overrides of SITES, e.g. {"v": 0.7}
    attn_gain: float = 8.0             # initial per-channel gain on Q*C (see SpikeDrivenBlock)
    attention: str = "decay"           # decay: learned per-channel exponential decay; mean: equal weights
    max_half_life: float = 256.0       # decay init: half-lives spread geometrically over 1..this (tokens)
    token_shift: float = 0.5           # fraction of the block input's channels read from the previous token

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timesteps < 1:
            raise LmzooError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.surrogate not in SURROGATES or self.reset not in RESETS:
            raise LmzooError(f"surrogate must be one of {', '.join(SURROGATES)} and reset one of "
                             f"{', '.join(RESETS)}; got {self.surrogate!r}, {self.reset!r}")
        if self.attention not in ATTENTIONS:
            raise LmzooError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if not 0.0 <= self.token_shift < 1.0 or self.max_half_life < 1.0:
            raise LmzooError(f"token_shift must be in [0, 1) and max_half_life >= 1; got {self.token_shift}, "
                             f"{self.max_half_life}")
        unknown = sorted(set(self.thresholds or {}) - set(SITES))
        if unknown:
            raise LmzooError(f"unknown spiking site(s) {unknown} in thresholds; valid: {', '.join(SITES)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
                   for v in (self.thresholds or {}).values()):
            raise LmzooError(f"thresholds must be positive finite numbers, got {self.thresholds}")

    def threshold(self, site: str) -> float:
        return float((self.thresholds or {}).get(site, SITES[site]))


def decayed_sums(x: torch.Tensor, log_decay: torch.Tensor, initial: torch.Tensor | None) -> torch.Tensor:
    """y_i = sum_{j<=i} w^(i-j) x_j + w^(i+1) initial along dim 2 of x [T, B, L, D], w = exp(log_decay) [D].

    Chunked so that no loop runs over positions: inside chunks of ~sqrt(L) positions a [c, c, D]
    decay matrix, across chunks an [n, n, D] one; every exponent is <= 0, so nothing overflows."""
    length = x.shape[2]
    c = max(1, math.isqrt(length - 1) + 1)
    n = -(-length // c)
    chunks = nn.functional.pad(x, (0, 0, 0, n * c - length)).unflatten(2, (n, c))  # [T, B, n, c, D]
    y = per_channel_matmul(_decay_matrix(c, log_decay, 0), chunks)
    carry = per_channel_matmul(_decay_matrix(n, log_decay * c, 1), y[:, :, :, -1])
    if initial is not None:
        steps = torch.arange(n, device=x.device, dtype=x.dtype)[:, None]
        carry = carry + torch.exp(steps * c * log_decay) * initial.unsqueeze(2)
    steps = torch.arange(1, c + 1, device=x.device, dtype=x.dtype)[:, None]
    y = y + torch.exp(steps * log_decay) * carry.unsqueeze(3)
    return y.flatten(2, 3)[:, :, :length]


def per_channel_matmul(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[..., i, d] = sum_j weights[i, j, d] x[..., j, d]: one bmm over channels, on contiguous [D, N, j]
    operands (an einsum hands bmm strided ones, which it copies matrix by matrix, in backward too)."""
    *lead, size, channels = x.shape
    x = x.reshape(-1, size, channels).permute(2, 0, 1).contiguous()        # [D, N, j]
    y = torch.bmm(x, weights.permute(2, 1, 0).contiguous())                # [D, N, i]
    return y.permute(1, 2, 0).unflatten(0, lead)                           # [..., i, D], a view


def _decay_matrix(size: int, log_decay: torch.Tensor, lag: int) -> torch.Tensor:
    """[size, size, D]: exp((i - j - lag) log_decay) where i - j >= lag, else 0."""
    index = torch.arange(size, device=log_decay.device)
    gap = (index[:, None] - index[None, :] - lag).to(log_decay.dtype)
    return torch.where(gap[..., None] >= 0, torch.exp(gap.clamp(min=0)[..., None] * log_decay), 0.0)


def decay_weight_total(positions: torch.Tensor, log_decay: torch.Tensor) -> torch.Tensor:
    """sum_{j<=p} w^(p-j) = (1 - w^(p+1)) / (1 - w) for absolute positions p [...] -> [..., D]."""
    return torch.expm1((positions[..., None] + 1) * log_decay) / torch.expm1(log_decay)


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
        self.shifted = round(config.token_shift * d)  # the last `shifted` input channels come from token i-1
        self.decay = None
        if config.attention == "decay":
            # w = exp(-exp(a)) stays in (0, 1); half-lives 1..max_half_life tokens across channels.
            half_lives = config.max_half_life ** torch.linspace(0, 1, d)
            self.decay = nn.Parameter(torch.log(math.log(2) / half_lives))

    def new_state(self) -> "KVSums":
        return KVSums()

    def forward(self, u: torch.Tensor, context: "SpikeContext", state: "KVSums | None") -> torch.Tensor:
        """u [T, B, n, D] -> u; `state` (decoding) is read and advanced to the chunk's last position."""
        start, rates = context.start, {}
        context.rates.append(rates)
        per_token = None  # each site's [B, n] spike rate per token, only when asked
        if context.token_stats is not None:
            per_token = {}
            context.token_rates.append(per_token)
        x = self.token_shift(self.fire("input", self.attn_norm(u), rates, per_token), state)
        q = self.fire("q", self.q(x), rates, per_token)
        k = self.fire("k", self.k(x), rates, per_token)
        v = self.fire("v", self.v(x), rates, per_token)
        context, last_sum = self.running_mean(k * v, start, state.sum if state is not None else None)
        if state is not None:
            state.sum = last_sum
        attn = self.fire("attn", q * context * self.attn_gain, rates, per_token)
        u = u + self.out(attn)
        hidden = self.fire("ffn_hidden", self.ffn_in(self.fire("ffn_in", self.mlp_norm(u), rates, per_token)), rates,
                           per_token)
        return u + self.ffn_out(hidden)

    def token_shift(self, x: torch.Tensor, state: "KVSums | None") -> torch.Tensor:
        """Replace the last `shifted` channels of x by those of the previous position (zeros before the
        first token): still binary spikes, so Q, K, V stay accumulate-only."""
        if not self.shifted:
            return x
        tail = x[..., -self.shifted:]
        before = state.tail if state is not None and state.tail is not None else torch.zeros_like(tail[:, :, :1])
        if state is not None:
            state.tail = tail[:, :, -1:]
        return torch.cat([x[..., :-self.shifted], torch.cat([before, tail[:, :, :-1]], dim=2)], dim=-1)

    def running_mean(self, kv: torch.Tensor, start: int | torch.Tensor, previous: torch.Tensor | None):
        """Causal (decayed) mean of kv [T, B, n, D] over positions; also the running sum at the last one.
        `start`: an int, or per-row starts [B] (positions [B, n] then normalise each row)."""
        if isinstance(start, torch.Tensor):
            positions = (start[:, None] + torch.arange(kv.shape[2], device=kv.device)).to(kv.dtype)
        else:
            positions = torch.arange(start, start + kv.shape[2], device=kv.device, dtype=kv.dtype)
        if self.decay is None:
            sums = torch.cumsum(kv, dim=2)  # binary kv: integer sums, exact in any chunking
            if previous is not None:
                sums = sums + previous.unsqueeze(2)
            return sums / (positions + 1)[..., None], sums[:, :, -1]
        log_decay = -torch.exp(self.decay.to(kv.dtype))
        sums = decayed_sums(kv, log_decay, previous)
        return sums / decay_weight_total(positions, log_decay), sums[:, :, -1]

    def fire(self, site: str, current: torch.Tensor, rates: dict, per_token: dict | None = None) -> torch.Tensor:
        spikes = self.lif[site](current)
        rates[site] = spikes.detach().mean()
        if per_token is not None:
            per_token[site] = spikes.detach().mean(dim=(0, 3))  # [T, B, n, D] -> [B, n]
        return spikes


@dataclass
class SpikeContext(BlockContext):
    rates: list[dict] = field(default_factory=list)  # per block: spike rate of each site
    token_rates: list[dict] = field(default_factory=list)  # per block: each site's rate per token, when asked


class KVSums(LayerState):
    """Decoding state of one block, fixed size: the (decayed) running sum of K*V per timestep
    ([T, B, D]) and the last token's token-shifted input spikes ([T, B, 1, shifted])."""

    batch_dims = {"sum": 1, "tail": 1}


@register("spike-transformer", SpikeTransformerConfig, PRESETS,
          "spiking transformer: LIF neurons over T timesteps, spike-driven linear attention, surrogate gradients")
class SpikeTransformerLM(CausalLM):
    lora_targets = ("q", "k", "v")
    constant_state = True  # per layer and timestep one (decayed) K*V sum and the shifted spikes of one token
    mixed_positions = True
    def __init__(self, config: SpikeTransformerConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(SpikeDrivenBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()
        for block in self.blocks:  # spike-fed layers: unit-scale currents so the neurons fire at init
            for linear in (block.q, block.k, block.v, block.ffn_in):
                nn.init.normal_(linear.weight, 0.0, linear.in_features ** -0.5)

    def new_context(self, input_ids: torch.Tensor, state: State | None) -> SpikeContext:
        return SpikeContext(start=self.start_position(state))

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: SpikeContext):
        x = self.embed(input_ids)
        u = x.unsqueeze(0).expand(self.config.timesteps, *x.shape)  # the same input at every timestep
        # Spikes are thresholds: bf16 rounding of the currents flips near-threshold neurons and the
        # flips compound over layers, so the blocks run in fp32 (or float64) even under autocast.
        with torch.autocast(u.device.type, enabled=False):
            u = self.run_blocks(upcast(u), context, state)
        stats, layer_rates = {}, []
        for i, rates in enumerate(context.rates):
            stats.update({f"spike_rate/layer{i}/{site}": r for site, r in rates.items()})
            layer_rates.append(torch.stack(list(rates.values())).mean())
            stats[f"spike_rate/layer{i}"] = layer_rates[-1]
        stats["spike_rate"] = torch.stack(layer_rates).mean()
        if context.token_stats is not None:  # [B, L, layers]: each layer's mean rate over its sites
            context.token_stats["spike_rate"] = torch.stack(
                [torch.stack(list(sites.values())).mean(0) for sites in context.token_rates], dim=-1)
        return self.norm(u).mean(0), None, stats
