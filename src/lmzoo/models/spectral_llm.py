"""`spectral-llm`: harmonic token embeddings, causal multi-resolution mixing, frequency-domain FFN.

    x = (1 - a) table[v] + a sum_h A[v,h] sin(2 pi f_h t + phi[v,h])      hybrid harmonic embedding
                                                  (embedding="harmonic": the sum alone, no table)
    block (pre-norm):
      v, g = split(W_in norm(x))
      bands = causal undecimated db4 wavelet decomposition of v (3 levels -> 4 bands, each length L)
      y = W_out( g * sum_b w_b (h_b * band_b) )        h_b: implicit long filter per band and channel
        = W_out( g * (k * v) ),  k = sum_b w_b (h_b * r_b)   r_b: band b's impulse response (exact);
                                                       one causal convolution through the FFT
      x += y
      x += (1 - alpha) W2 GELU(W1 norm(x)) + alpha irfft(W_f * rfft(norm(x)))   (over channels, per token)

No positional embedding: the long filters depend on the lag, which gives the mixer its sense of
position. Decoding keeps each layer's history of v and k's lags (reversed); a one-token step is one
dot product per channel (O(L) per token), a longer chunk a convolution through the FFT.
See docs/architectures.md for the deviations from the seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.long_conv import causal_conv_last, fft_causal_conv
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.precision import upcast
from lmzoo.layers.wavelet import CausalWaveletDecomposition
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM, State
from lmzoo.models.transformer import SIZES as DENSE_SIZES
from lmzoo.registry import register

FILTER_FEATURES = 8     # sin/cos pairs of the lag fed to the implicit filter MLP
FILTER_HIDDEN = 64
FILTER_HORIZON = 4096.0  # lag scale of the slowest positional feature
EMBEDDINGS = ("hybrid", "harmonic")
LAG_BLOCK = 64  # decoding computes the combined filter's lags this far ahead


@dataclass
class SpectralConfig(ModelConfig):
    d_ff: int = 448
    embedding: str = "hybrid"           # hybrid = table mixed with harmonics; harmonic = harmonics only
    harmonic_bases: int = 16
    wavelet_type: str = "db4"
    wavelet_levels: int = 3
    spectral_loss_weight: float = 0.0   # new (not in the seed's code): L2 penalty on harmonic amplitudes

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding not in EMBEDDINGS:
            raise LmzooError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got '{self.embedding}'")
        if self.harmonic_bases < 1 or self.wavelet_levels < 1:
            raise LmzooError("harmonic_bases and wavelet_levels must be >= 1")
        if self.spectral_loss_weight < 0:
            raise LmzooError(f"spectral_loss_weight must be >= 0, got {self.spectral_loss_weight}")


class HarmonicEmbedding(nn.Module):
    """Per token: H learned amplitudes and phases of fixed frequencies, sampled over the channels."""

    def __init__(self, vocab_size: int, d_model: int, bases: int, amplitude_std: float = 0.02):
        super().__init__()
        self.amplitude = nn.Parameter(torch.randn(vocab_size, bases) * amplitude_std)
        self.phase = nn.Parameter(torch.rand(vocab_size, bases) * 2 * math.pi)
        self.register_buffer("freqs", torch.linspace(0.1, math.pi, bases), persistent=False)
        self.register_buffer("grid", torch.linspace(0, 1, d_model), persistent=False)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of `ids` [..., D]; without ids, the whole vocabulary [V, D] (the tied output weights)."""
        # A sin(w t + phi) = (A cos phi) sin(w t) + (A sin phi) cos(w t): two [H] x [H, D] products
        # per token instead of a [H, D] sine per token.
        angle = 2 * math.pi * self.freqs[:, None] * self.grid[None, :]            # [H, D]
        amplitude, phase = (self.amplitude, self.phase) if ids is None else (self.amplitude[ids], self.phase[ids])
        return (amplitude * phase.cos()) @ angle.sin() + (amplitude * phase.sin()) @ angle.cos()

    def reference(self, ids: torch.Tensor) -> torch.Tensor:
        """The defining sum, one sine per token, basis and channel (for tests)."""
        angle = 2 * math.pi * self.freqs[:, None] * self.grid[None, :]
        return (self.amplitude[ids][..., None] * torch.sin(angle + self.phase[ids][..., None])).sum(-2)


class ImplicitFilters(nn.Module):
    """Long causal filters h_b[d, t] = MLP(features(t))[b, d] * exp(-rate_bd t), for any length."""

    def __init__(self, d_model: int, bands: int):
        super().__init__()
        self.bands, self.d_model = bands, d_model
        self.mlp = nn.Sequential(nn.Linear(2 * FILTER_FEATURES, FILTER_HIDDEN), nn.GELU(),
                                 nn.Linear(FILTER_HIDDEN, bands * d_model))
        # Decay half-lives spread from a few tokens to about a thousand, per band and channel.
        half_life = torch.logspace(0.5, 3, d_model).repeat(bands, 1)
        self.log_rate = nn.Parameter(torch.log(math.log(2) / half_life))
        self.register_buffer("feature_freqs", 2 * math.pi / FILTER_HORIZON * 2.0 ** torch.arange(FILTER_FEATURES),
                             persistent=False)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        """[bands, D, length - start]: the filters at lags start .. length-1 (each lag on its own)."""
        # Lags in at least fp32 (bf16 cannot count past 256), float64 in a float64 model.
        t = torch.arange(start, length, device=self.log_rate.device,
                         dtype=torch.promote_types(self.log_rate.dtype, torch.float32))
        phase = t[:, None] * self.feature_freqs.to(t.dtype)
        features = torch.cat((phase.sin(), phase.cos()), -1).to(self.mlp[0].weight.dtype)
        shape = self.mlp(features)                                                 # [L, B*D]
        shape = shape.view(len(t), self.bands, self.d_model).permute(1, 2, 0)      # [B, D, L]
        return shape * torch.exp(-self.log_rate.exp()[..., None] * t)


class MultiResolutionMixer(nn.Module):
    """y = W_out(SiLU(g) * sum_b w_b (h_b * band_b)), band_b the b-th wavelet band of v.

    The wavelet bands are fixed causal filters of v (band_b = r_b * v, r_b its impulse response,
    50 taps for db4 at 3 levels), so the sum is one causal filter of v:
        sum_b w_b (h_b * r_b * v) = k * v,    k = sum_b w_b (r_b * h_b)   (exact, per channel)
    The fast path convolves v once with k; `reference` computes the bands one by one."""

    def __init__(self, config: SpectralConfig):
        super().__init__()
        d = config.d_model
        self.decompose = CausalWaveletDecomposition(config.wavelet_levels, config.wavelet_type)
        n_bands = config.wavelet_levels + 1
        self.inp = nn.Linear(d, 2 * d, bias=False)
        self.filters = ImplicitFilters(d, n_bands)
        # The seed scales the detail bands by 0.1 at the start; the approximation starts at 1.
        self.band_weight = nn.Parameter(torch.tensor([0.1] * config.wavelet_levels + [1.0]))
        self.out = nn.Linear(d, d, bias=False)
        self.out.residual_projection = True
        self.record: list[float] | None = None  # the analyzer sets a list to collect band energies

    def combined_filter(self, length: int, start: int = 0) -> torch.Tensor:
        """[D, length - start]: k at lags start .. length-1."""
        taps = self.decompose.response_length()
        first = max(0, start - (taps - 1))  # the filter lags that reach lag `start` through r
        h = self.filters(length, first)                                           # [bands, D, n]
        r = self.decompose.impulse_responses(h.dtype) * self.band_weight.to(h.dtype)[:, None]
        h = F.pad(h.transpose(0, 1), (taps - 1 - (start - first), 0))             # zeros: lags < 0
        return F.conv1d(h, r.flip(-1)[None])[:, 0]            # conv1d correlates: flip r to convolve

    def forward(self, h: torch.Tensor, state: MixerState | None) -> torch.Tensor:
        v, gate = self.inp(h).chunk(2, dim=-1)
        v = v.transpose(1, 2)                                                     # [B, D, n]
        n = v.shape[-1]
        if self.record is not None:
            if state is not None:
                raise ValueError("band energies are recorded on whole sequences only (no decoding state)")
            mixed = self.reference(v)
        elif state is None:
            mixed = fft_causal_conv(v, self.combined_filter(n))
        else:
            history = state.append(v)                          # [B, D, t]: every row ends at t-1
            if torch.is_grad_enabled():
                mixed = causal_conv_last(history, self.combined_filter(history.shape[-1]), n)
            else:
                reversed_k = state.reversed_kernel(self, history.shape[-1])        # [D, t]
                if n == 1:  # one dot product per channel (a batched matmul is far slower on CPU)
                    mixed = torch.linalg.vecdot(history, reversed_k)[..., None]
                else:
                    mixed = fft_causal_conv(history, reversed_k.flip(-1))[..., -n:]
        return self.out(F.silu(gate) * mixed.transpose(1, 2))

    def reference(self, v: torch.Tensor) -> torch.Tensor:
        """The defining per-band sum on a whole sequence v [B, D, n]; records each band's energy."""
        n = v.shape[-1]
        bands = self.decompose(v)
        outputs = [w * fft_causal_conv(band, h) for w, band, h in zip(self.band_weight, bands, self.filters(n))]
        if self.record is not None:
            self.record.extend(float(o.square().mean()) for o in outputs)
        return sum(outputs)


class MixerState(LayerState):
    """One layer's decoding state: v of every past token (k reaches the start) and k's lags.

    `history` [B, D, capacity]: slots 0 .. length-1 in use, every row's latest token in slot
    length-1 (a row with fewer tokens is zeros on the left, where the convolution then sums
    zeros). `kernel` [D, capacity] (without autograd only; shared by every row): k reversed, the
    last `lags` columns valid, lag t in column capacity-1-t, so the last t columns pair with the
    first t history slots.
    Both double when full, so a token costs amortised O(1) copying."""

    batch_dims = {"history": 0, "kernel": None}

    def __init__(self) -> None:
        super().__init__()
        self.length = 0  # history slots in use
        self.lags = 0    # kernel lags computed

    def append(self, v: torch.Tensor) -> torch.Tensor:
        """Add a chunk v [B, D, n]; return the history in use, [B, D, length]."""
        end = self.length + v.shape[-1]
        if self.history is not None and torch.is_grad_enabled() and (v.requires_grad or self.history.requires_grad):
            self.history = torch.cat((self.history[..., :self.length], v), -1)  # no in-place write into the graph
        else:
            if self.history is None or end > self.history.shape[-1]:
                grown = v.new_empty(*v.shape[:-1], max(end, 0 if self.history is None else 2 * self.history.shape[-1]))
                if self.history is not None:
                    grown[..., :self.length] = self.history[..., :self.length]
                self.history = grown
            elif self.history.dtype != v.dtype:
                self.history = self.history.to(v.dtype)
            self.history[..., self.length:end] = v
        self.length = end
        return self.history[..., :end]

    def reversed_kernel(self, mixer: MultiResolutionMixer, length: int) -> torch.Tensor:
        """k's lags length-1 .. 0, [D, length]."""
        if self.kernel is not None and self.kernel.dtype != self.history.dtype:
            self.kernel = self.kernel.to(self.history.dtype)
        if length > self.lags:
            # Computed ahead in blocks (one filter-MLP call per LAG_BLOCK tokens, not per token),
            # written in place at the front of the valid tail; the buffer doubles when full.
            lags = length + LAG_BLOCK
            new = mixer.combined_filter(lags, start=self.lags).to(self.history.dtype).flip(-1)
            if self.kernel is None or lags > self.kernel.shape[-1]:
                grown = new.new_empty(new.shape[0], max(lags, 0 if self.kernel is None else 2 * self.kernel.shape[-1]))
                if self.lags:
                    grown[:, grown.shape[-1] - self.lags:] = self.kernel[:, self.kernel.shape[-1] - self.lags:]
                self.kernel = grown
            capacity = self.kernel.shape[-1]
            self.kernel[:, capacity - lags:capacity - self.lags] = new
            self.lags = lags
        return self.kernel[:, self.kernel.shape[-1] - length:]

    def trim(self, longest: int) -> None:
        # Drop the left padding no row needs; keep room to grow (as a KV cache does).
        if self.length > longest or self.history.shape[-1] > 2 * longest:
            kept = self.history[..., self.length - longest:self.length]
            self.history = F.pad(kept, (0, longest))
            self.length = longest
        if self.kernel is not None and self.kernel.shape[-1] > 2 * longest + LAG_BLOCK:  # lags no row reaches soon
            self.lags = min(self.lags, longest + LAG_BLOCK)
            self.kernel = self.kernel[:, self.kernel.shape[-1] - self.lags:].clone()

    def join(self, other: "MixerState", aligned: bool) -> None:
        # Right-align both: rows with a shorter history get zeros on the left (before their first
        # token). No position is needed anywhere, so rows at different positions need nothing more.
        length = max(self.length, other.length)
        capacity = max(self.history.shape[-1], other.history.shape[-1], length)
        history = self.history.new_zeros(self.history.shape[0] + other.history.shape[0],
                                         self.history.shape[1], capacity)
        rows = self.history.shape[0]
        history[:rows, :, length - self.length:length] = self.history[..., :self.length]
        history[rows:, :, length - other.length:length] = other.history[..., :other.length]
        self.history, self.length = history, length
        if other.lags > self.lags:  # a cache of the (shared) filter's lags: keep the longer one
            self.kernel, self.lags = other.kernel, other.lags


class SpectralFFN(nn.Module):
    """(1 - alpha) W2 GELU(W1 x) + alpha irfft(W_f * rfft(x)) over the channels of each token."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.down.residual_projection = True
        bins = d_model // 2 + 1
        self.spectral_weight = nn.Parameter(torch.stack((torch.ones(bins), torch.zeros(bins)), -1) * 0.02)
        self.mix_logit = nn.Parameter(torch.tensor([0.1]))  # [1], not 0-d: FSDP2 shards no 0-d parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_logit)
        spectral = torch.fft.irfft(torch.fft.rfft(upcast(x), dim=-1) * torch.view_as_complex(self.spectral_weight),
                                   n=x.shape[-1], dim=-1).to(x.dtype)
        return (1 - alpha) * self.down(F.gelu(self.up(x))) + alpha * spectral


class SpectralBlock(nn.Module):
    def __init__(self, config: SpectralConfig):
        super().__init__()
        self.mix_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = MultiResolutionMixer(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = SpectralFFN(config.d_model, config.d_ff)

    def new_state(self) -> MixerState:
        return MixerState()

    def forward(self, x: torch.Tensor, context: BlockContext, state: MixerState | None) -> torch.Tensor:
        x = x + self.mixer(self.mix_norm(x), state)
        return x + self.ffn(self.ffn_norm(x))


# Same width and depth as `transformer`'s SIZES; d_ff is `lmzoo.registry.matched_value`'s pick, so a
# preset holds the transformer's non-embedding parameters (tests/test_registry.py checks it).
D_FF = {"nano": 448, "micro": 1024, "tiny": 1344, "small": 1984, "base": 2816}
PRESETS = {name: {"d_model": d, "n_layers": n, "d_ff": D_FF[name]} for name, (d, n, *_) in DENSE_SIZES.items()}


@register("spectral-llm", SpectralConfig, PRESETS,
          "harmonic embeddings + causal wavelet/FFT long-convolution mixing + frequency-domain FFN")
class SpectralLM(CausalLM):
    lora_targets = ("inp",)
    mixed_positions = True
    def __init__(self, config: SpectralConfig):
        super().__init__(config, token_table=config.embedding == "hybrid")
        # As the output weights (embedding="harmonic"), the low harmonics add up coherently over the
        # channels, so the logits grow with D * A: start A small enough for a uniform first prediction.
        amplitude_std = config.init_std if config.embedding == "hybrid" else config.init_std / config.harmonic_bases
        self.harmonic = HarmonicEmbedding(config.vocab_size, config.d_model, config.harmonic_bases, amplitude_std)
        if config.embedding == "hybrid":
            self.harmonic_mix = nn.Parameter(torch.tensor([0.5]))  # a = sigmoid(m), m init 0.5; [1] for FSDP2
        self.blocks = nn.ModuleList(SpectralBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [*super().embedding_parameters(), self.harmonic.amplitude, self.harmonic.phase]

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: BlockContext):
        stats = {}
        if self.embed is None:
            x = self.harmonic(input_ids)
        else:
            a = torch.sigmoid(self.harmonic_mix)
            x = (1 - a) * self.embed(input_ids) + a * self.harmonic(input_ids)
            stats["harmonic_mix"] = a.detach().squeeze(0)  # stats are 0-d
        x = self.run_blocks(x, context, state)
        aux = None
        if self.config.spectral_loss_weight > 0:
            aux = self.config.spectral_loss_weight * self.harmonic.amplitude.square().mean()
        return self.norm(x), aux, stats

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(hidden)
        return F.linear(hidden, self.harmonic())  # tied to the harmonic embedding: 2 H parameters per token

