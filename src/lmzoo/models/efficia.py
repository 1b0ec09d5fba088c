"""`efficia-1`: windowed causal linear attention + global segment memory + GRU compression + fusion.

    block (per layer):
      lcp   = x + LCP(norm(x))                        short causal conv (token order), then causal
                                                      linear attention in windows of `window`
      h     = norm(lcp), cut into segments of `segment` tokens
      gmg   = (1 - g) lcp + g r,  r = attend(h, FIFO of the last `memory_slots` segment summaries)
      c     = proj(GRU state after the previous segment)   (GRU over summaries, fed the layer below's states)
      w     = softmax(W [lcp; gmg; c])                     per token
      fused = x + w . (lcp - x, gmg - x, c)               the streams' updates, so x passes at weight 1
      x     = fused + SwiGLU(norm(fused))

Everything is causal: the memory and the GRU lag one segment. Document ends (`eos_id`) reset
the memory and the GRU. The decoding state (window sums, open segment, memory slots, GRU state)
has a fixed size, so a stream of any length runs in constant memory and time per token.
`memory=False` / `compression=False` drop GMG / CCU (ablations). See docs/architectures.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.config import ModelConfig
from lmzoo.errors import LmzooError
from lmzoo.layers.linear_attention import LinearAttentionState, LocalLinearAttention
from lmzoo.layers.mlp import SwiGLU
from lmzoo.layers.norm import RMSNorm
from lmzoo.layers.segment_memory import (
    CompressionState,
    ContextCompression,
    GlobalMemoryGate,
    NO_DOC,
    MemoryState,
    carry_open_segment,
    full_segment,
    make_grid,
)
from lmzoo.layers.state import LayerState
from lmzoo.modeling import BlockContext, CausalLM, State
from lmzoo.models.transformer import SIZES as DENSE_SIZES
from lmzoo.registry import register

HEAD_DIM = 64


@dataclass
class EfficiaConfig(ModelConfig):
    d_ff: int = 256
    window: int = 256          # LCP window (tokens); a multiple of 64, or <= 64, runs fastest
    overlap: bool = False      # True: each window carries the previous one's sums (no restart)
    conv_size: int = 4         # short causal conv before LCP (token order); 0 = none, as in the seed
    segment: int = 64          # tokens per memory / compression segment
    memory_slots: int = 128    # FIFO length of the global memory
    compression_dim: int = 0   # GRU state width; 0 = d_model // 4
    memory: bool = True        # GMG on (False: ablation)
    compression: bool = True   # CCU on (False: ablation)
    eos_id: int | None = None  # end-of-document token: resets memory and GRU; set from the dataset
    zero_allowed: ClassVar[frozenset[str]] = frozenset({"conv_size", "compression_dim", "eos_id"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("window", "segment", "memory_slots", "d_ff"):
            if getattr(self, name) < 1:
                raise LmzooError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.conv_size < 0:
            raise LmzooError(f"conv_size must be >= 0 (0 = no short convolution), got {self.conv_size}")
        if self.compression_dim < 0:
            raise LmzooError(f"compression_dim must be >= 0 (0 = d_model // 4), got {self.compression_dim}")
        if self.eos_id is not None and self.eos_id >= self.vocab_size:
            raise LmzooError(f"eos_id {self.eos_id} is not below vocab_size {self.vocab_size}")

    @property
    def state_dim(self) -> int:
        return self.compression_dim or max(1, self.d_model // 4)


class EfficiaLayerState(LayerState):
    """One block's decoding state: its three units' states and the open segment's normed inputs
    ([B, <segment, D]) and document ids ([B, <segment]). Rows at different positions keep the
    open segment in a buffer of `segment` slots instead ([B, segment, D], slot = position mod
    segment), written one token per call."""

    batch_dims = {"lcp": 0, "memory": 0, "compression": 0, "open_stream": 0, "open_docs": 0}

    def __init__(self, segment: int):
        super().__init__()
        self.segment = segment
        self.lcp, self.memory, self.compression = LinearAttentionState(), MemoryState(), CompressionState()

    def write_open_rows(self, h: torch.Tensor, doc: torch.Tensor, start: torch.Tensor) -> None:
        """Put each row's token (h [B, D], doc [B]) into its slot of the open-segment buffer."""
        if self.open_stream is None:
            self.open_stream = h.new_zeros(h.shape[0], self.segment, h.shape[1])
            self.open_docs = doc.new_zeros(h.shape[0], self.segment)
        rows, slots = torch.arange(h.shape[0], device=h.device), start % self.segment
        self.open_stream[rows, slots] = h
        self.open_docs[rows, slots] = doc

    def join(self, other: "EfficiaLayerState", aligned: bool) -> None:
        if not aligned:  # open segments of different lengths: both to the per-row buffer
            self._open_buffer(like=other.open_stream)
            other._open_buffer(like=self.open_stream)
        super().join(other, aligned)

    def _open_buffer(self, like: torch.Tensor | None) -> None:
        """The open segment as a buffer of `segment` slots (slots not yet reached are unused)."""
        if self.open_stream is None:  # the segment just closed: an empty buffer, if the other has one
            if like is not None:
                rows = self.batch_size()
                self.open_stream = like.new_zeros(rows, self.segment, like.shape[2])
                self.open_docs = torch.full((rows, self.segment), NO_DOC, dtype=torch.long, device=like.device)
        elif self.open_stream.shape[1] < self.segment:
            missing = self.segment - self.open_stream.shape[1]
            self.open_stream = F.pad(self.open_stream, (0, 0, 0, missing))
            self.open_docs = F.pad(self.open_docs, (0, missing), value=NO_DOC)


class DocumentState(LayerState):
    """Model-level decoding state: whether each row's last token ended a document ([B])."""

    batch_dims = {"after_eos": 0}


@dataclass
class EfficiaContext(BlockContext):
    docs: torch.Tensor | None = None      # [B, n] document id of each token
    last_doc: torch.Tensor | None = None  # [B] document id of each row's last token
    below: torch.Tensor | None = None     # the block below's GRU states after each segment (CCU input)
    fusion: list = field(default_factory=list)  # per block [B, n, streams] weights, when token_stats is asked
    closing: torch.Tensor | None = None   # rows at different positions: [B] whether the token closes a segment
    closing_rows: torch.Tensor | None = None  # and the indices of the rows where it does
    any_closing: bool = False             # whether any row does (read once, on the host)
    one_token: bool = False               # one token, every row at the same position (decoding)
    plain_docs: bool = False              # no end-of-document id: every document id is 0


class EfficiaBlock(nn.Module):
    """One block: the three token mixers of the seed, fused per token, then a SwiGLU FFN.

    - `lcp` (Local Context Processor): short causal conv + causal linear attention in windows.
    - `gmg` (Global Memory Gate): cross-attention to a FIFO of past segment summaries, gated.
    - `ccu` (Context Compression Unit): a GRU over segment summaries, read by later segments.
    """

    def __init__(self, config: EfficiaConfig):
        super().__init__()
        d = config.d_model
        self.segment = config.segment
        self.lcp_norm = RMSNorm(d, config.norm_eps)
        self.lcp = LocalLinearAttention(d, HEAD_DIM, config.window, config.overlap, config.conv_size)
        streams = 1 + config.memory + config.compression
        self.stream_norm = RMSNorm(d, config.norm_eps) if streams > 1 else None
        self.gmg = GlobalMemoryGate(d, HEAD_DIM, config.memory_slots) if config.memory else None
        self.ccu = ContextCompression(d, config.state_dim) if config.compression else None
        self.fusion = nn.Linear(streams * d, streams) if streams > 1 else None
        self.ffn_norm = RMSNorm(d, config.norm_eps)
        self.ffn = SwiGLU(d, config.d_ff)

    def new_state(self) -> EfficiaLayerState:
        return EfficiaLayerState(self.segment)

    def forward(self, x, context: EfficiaContext, state: EfficiaLayerState | None):
        lcp = x + self.lcp(self.lcp_norm(x), context.start, state.lcp if state is not None else None)
        if self.fusion is None:
            return lcp + self.ffn.step(self.ffn_norm(lcp))
        h = self.stream_norm(lcp)
        if context.one_token and self.step_ready(state):
            streams, updates = self.segment_streams_step(x, lcp, h, context, state)
        elif isinstance(context.start, torch.Tensor):
            streams, updates = self.segment_streams_rows(x, lcp, h, context, state)
        else:
            streams, updates = self.segment_streams(x, lcp, h, context, state)
        # The weights mix what each stream adds to x: mixing the streams themselves would scale
        # the residual path by w_lcp + w_gmg < 1 in every block (see docs/architectures.md).
        weights = self.fusion(torch.cat(streams, -1)).softmax(-1)
        if context.token_stats is not None:
            context.fusion.append(weights.detach())
        if x.shape[1] == 1:  # decoding (rows at one position or each at its own)
            # The same weighted sum of the updates as below, as one product and one sum over the
            # stacked updates (elementwise, so in fp32 under autocast as below; a matmul would not be).
            fused = x + (weights[..., None] * torch.stack(updates, -2)).sum(-2)
            return fused + self.ffn.step(self.ffn_norm(fused))
        fused = x + sum(w[..., None] * u for w, u in zip(weights.unbind(-1), updates))
        return fused + self.ffn(self.ffn_norm(fused))

    def segment_streams(self, x, lcp, h, context: EfficiaContext, state: EfficiaLayerState | None):
        """The streams (lcp, gmg, ccu) and their updates to x, for a call's tokens on the segment grid."""
        docs, last_doc = context.docs, context.last_doc
        grid = make_grid(h, docs, self.segment, *((state.open_stream, state.open_docs) if state else (None, None)))
        if state is not None:
            state.open_stream, state.open_docs = carry_open_segment(grid, last_doc)
        streams, updates = [lcp], [lcp - x]
        if self.gmg is not None:
            gmg = self.gmg(lcp, h, grid, last_doc, state.memory if state else None)
            streams.append(gmg)
            updates.append(gmg - x)
        if self.ccu is not None:
            read, context.below = self.ccu(grid, context.below, last_doc, state.compression if state else None)
            streams.append(read)
            updates.append(read)
        return streams, updates

    def step_ready(self, state: EfficiaLayerState) -> bool:
        """Whether the state holds what the one-token path continues from (a prefill made it)."""
        return ((self.gmg is None or state.memory.keys is not None)
                and (self.ccu is None or state.compression.hidden is not None))

    def segment_streams_step(self, x, lcp, h, context: EfficiaContext, state: EfficiaLayerState):
        """`segment_streams` for one token of rows at the same position (decoding): the token joins
        the open segment; when it closes it, every row summarises it (no grid, padding or per-segment
        loop). With no end-of-document id every document id is 0: no masks and no rebasing."""
        start, size, plain = context.start, self.segment, context.plain_docs
        doc = context.docs[:, 0]
        if state.open_stream is None:
            stream, docs = h, context.docs
        else:
            stream, docs = torch.cat((state.open_stream, h), 1), torch.cat((state.open_docs, context.docs), 1)
        closing = (start + 1) % size == 0
        segment = full_segment(stream, docs) if closing else None
        if closing:
            state.open_stream = state.open_docs = None
        else:
            state.open_stream, state.open_docs = stream, docs if plain else docs - doc[:, None]
        streams, updates = [lcp], [lcp - x]
        if self.gmg is not None:
            filled = min(start // size, self.gmg.slots) if plain else None
            gmg = self.gmg.read_one(lcp, h, doc, state.memory, filled)
            if closing:
                self.gmg.push(segment, doc, state.memory)
            if not plain:
                state.memory.docs = state.memory.docs - doc[:, None]
            streams.append(gmg)
            updates.append(gmg - x)
        if self.ccu is not None:
            read, context.below = self.ccu.step(segment, doc, context.below, state.compression, plain)
            streams.append(read)
            updates.append(read)
        return streams, updates

    def segment_streams_rows(self, x, lcp, h, context: EfficiaContext, state: EfficiaLayerState):
        """The same for one token per row at different positions: each token joins its row's open
        segment buffer; the rows whose segment it closes summarise the buffer."""
        doc = context.docs[:, 0]
        state.write_open_rows(h[:, 0], doc, context.start)
        segment = full_segment(state.open_stream, state.open_docs) if context.any_closing else None
        streams, updates = [lcp], [lcp - x]
        if self.gmg is not None:
            gmg = self.gmg.step_rows(lcp, h, segment, context.closing_rows, doc, state.memory)
            streams.append(gmg)
            updates.append(gmg - x)
        if self.ccu is not None:
            read, context.below = self.ccu.step_rows(segment, context.closing, doc, context.below, state.compression)
            streams.append(read)
            updates.append(read)
        state.open_docs = state.open_docs - doc[:, None]  # rebased: the row's current document is 0
        return streams, updates


# Per layer the mixers cost ~10 d^2 against the baseline's ~3 d^2 of attention, so at the same
# width efficia-1 has fewer layers (chosen here); d_ff is `lmzoo.registry.matched_value`'s pick for
# that depth, so a preset holds the transformer's non-embedding parameters (tests/test_registry.py).
#        name      layers d_ff
DEPTH_AND_D_FF = {"nano": (3, 352), "micro": (4, 544), "tiny": (5, 1280), "small": (9, 1472), "base": (11, 2048)}
PRESETS = {name: {"d_model": d, "n_layers": DEPTH_AND_D_FF[name][0], "d_ff": DEPTH_AND_D_FF[name][1]}
           for name, (d, *_) in DENSE_SIZES.items()}


@register("efficia-1", EfficiaConfig, PRESETS,
          "windowed causal linear attention + FIFO segment memory + GRU compression + gated fusion; "
          "constant-memory streaming")
class EfficiaLM(CausalLM):
    lora_targets = ("qkv", "q", "kv")  # LCP's projections and GMG's query and key/value
    constant_state = True
    mixed_positions = True
    def __init__(self, config: EfficiaConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(EfficiaBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.init_weights()

    def untrained_components(self, seq_len: int) -> list[str]:
        # Memory and compression lag one segment: with no segment complete before a sequence's
        # last token, nothing is read from either (the GRU then never even runs).
        c = self.config
        units = [name for name, on in (("memory (GMG)", c.memory), ("compression (CCU)", c.compression)) if on]
        if seq_len > c.segment or not units:
            return []
        return [f"efficia-1's {' and '.join(units)} get no gradient from sequences of {seq_len} tokens: they read "
                f"only segments of {c.segment} tokens completed before a token's own; train on sequences longer "
                f"than {c.segment} tokens or lower `segment` (--model-arg segment=N)"]

    def new_extras(self) -> DocumentState:
        return DocumentState()

    def documents(self, input_ids: torch.Tensor, state: State | None) -> torch.Tensor:
        """Document id per token: end-of-document tokens before it (in this call), +1 if the
        previous call ended on one. Stored ids are rebased so the current document is 0."""
        if self.config.eos_id is None:
            return torch.zeros_like(input_ids)
        ends = (input_ids == self.config.eos_id).long()
        docs = ends.cumsum(1) - ends
        if state is not None:
            if state.extras.after_eos is not None:
                docs = docs + state.extras.after_eos[:, None]
            state.extras.after_eos = ends[:, -1]
        return docs

    def new_context(self, input_ids: torch.Tensor, state: State | None) -> EfficiaContext:
        docs = self.documents(input_ids, state)
        context = EfficiaContext(start=self.start_position(state), docs=docs, last_doc=docs[:, -1],
                                 plain_docs=self.config.eos_id is None)
        context.one_token = state is not None and not state.per_row and input_ids.shape[1] == 1
        if state is not None and state.per_row:  # which rows' tokens close a segment, read on the host
            closing = (state.position + 1) % self.config.segment == 0
            context.closing, context.any_closing = closing.to(input_ids.device), bool(closing.any())
            context.closing_rows = closing.nonzero().squeeze(1).to(input_ids.device)
        return context

    def backbone(self, input_ids: torch.Tensor, state: State | None, context: EfficiaContext):
        x = self.run_blocks(self.embed(input_ids), context, state)
        if context.token_stats is not None and context.fusion:  # [B, L, layers, streams (lcp, gmg, ccu)]
            context.token_stats["fusion"] = torch.stack(context.fusion, dim=2)
        return self.norm(x), None, {}
