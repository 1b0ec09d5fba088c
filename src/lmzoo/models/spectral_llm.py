"""`spectral-llm`: harmonic token embeddings, causal multi-resolution mixing, frequency-domain FFN.

    x = (1 - a) table[v] + a sum_h A[v,h] sin(2 pi f_h t + phi[v,h])      hybrid harmonic embedding
                                                  (embedding="harmonic": the sum alone, no table)
    block (pre-norm):
      v, g = split(W_in norm(x))
      bands = causal undecimated db4 wavelet decomposition of v (3 levels -> 4 bands, each length L)
      y = W_out( g * sum_b w_b (h_b * band_b) )        h_b: implicit long filter per band and channel,
                                                       applied as a causal convolution through the FFT
      x += y
      x += (1 - alpha) W2 GELU(W1 norm(x)) + alpha irfft(W_f * rfft(norm(x)))   (over channels, per token)

No positional embedding: the long filters depend on the lag, which gives the mixer its sense of
position. Decoding keeps each layer's band history; a one-token step is a dot product with the
reversed filters (O(L) per token), a longer chunk a convolution through the FFT.
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
from lmzoo.layers.long_conv import causal_conv_last
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

    def forward(self, h: torch.Tensor, state: MixerState | None) -> torch.Tensor:
        v, gate = self.inp(h).chunk(2, dim=-1)
        v = v.transpose(1, 2)                                                     # [B, D, n]
        history = state.level_history(v, self.decompose.history_lengths()) if state is not None else None
        bands, inputs = self.decompose.decompose(v, history)
        n = v.shape[-1]
        if state is not None:
            bands = state.extend(bands, inputs, self.decompose.history_lengths())
        length = bands[0].shape[-1]
        if state is not None and not torch.is_grad_enabled():
            filters = state.cached_filters(self.filters, length)
        else:
            filters = self.filters(length)
        outputs = [w * causal_conv_last(band, h, n) for w, band, h in zip(self.band_weight, bands, filters)]
        if self.record is not None:
            self.record.extend(float(o.square().mean()) for o in outputs)
        return self.out(F.silu(gate) * sum(outputs).transpose(1, 2))


class MixerState(LayerState):
    """One layer's decoding state: every past band value ([B, D, t] per band; the long filters
    reach the start), the last inputs of each wavelet level, and (without autograd only) the
    filters' lags computed so far ([bands, D, t], shared by every row)."""

    batch_dims = {"bands": 0, "levels": 0, "filters": None}

    def cached_filters(self, make: "ImplicitFilters", length: int) -> torch.Tensor:
        """The filters up to `length`, computing only the lags not seen before."""
        have = 0 if self.filters is None else self.filters.shape[-1]
        if length > have:
            new = make(length, start=have)
            self.filters = new if self.filters is None else torch.cat((self.filters, new), -1)
        return self.filters[..., :length]

    def level_history(self, v: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        if self.levels is None:
            return [v.new_zeros(v.shape[0], v.shape[1], n) for n in lengths]
        return self.levels

    def extend(self, bands: list[torch.Tensor], inputs: list[torch.Tensor], lengths: list[int]) -> list[torch.Tensor]:
        history = self.level_history(inputs[0], lengths)
        self.levels = [torch.cat((old, new), -1)[..., -n:] for old, new, n in zip(history, inputs, lengths)]
        self.bands = bands if self.bands is None else [torch.cat(p, -1) for p in zip(self.bands, bands)]
        return self.bands

    def trim(self, longest: int) -> None:
        self.bands = [band[..., -longest:] for band in self.bands]  # the left padding no row needs
        if self.filters is not None:
            self.filters = self.filters[..., :longest].clone()  # and the lags no row reaches

    def join(self, other: "MixerState", aligned: bool) -> None:
        # A row with a shorter history is padded with zeros on the left (before its first token):
        # the causal convolution then sums zeros there, so each row still sees only its own past.
        # No position is needed anywhere, so rows at different positions need nothing more.
        length = max(self.bands[0].shape[-1], other.bands[0].shape[-1])
        self.bands = [F.pad(band, (length - band.shape[-1], 0)) for band in self.bands]
        other.bands = [F.pad(band, (length - band.shape[-1], 0)) for band in other.bands]
        longer = max((f for f in (self.filters, other.filters) if f is not None), key=lambda f: f.shape[-1],
                     default=None)
        self.filters = other.filters = None
        super().join(other, aligned)
        self.filters = longer  # a cache of the (shared) filters' lags: keep the longer one


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

