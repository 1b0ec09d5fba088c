"""Segment-level memory for EFFICIA-1: the Global Memory Gate (FIFO of past-segment summaries,
cross-attended by every token) and the Context Compression Unit (a GRU over segment summaries).

The stream is cut into segments of `c` tokens on the absolute position grid. Both units are
lagged: a token in segment k sees only what was built from segments < k, so they are causal.
Document ids (`docs`, one int per token, counted from end-of-document tokens) reset both: a
summary belongs to the document of its segment's last token and pools only that document's
tokens; a token sees a memory slot or GRU state only of its own document. Decoding states hold
the open segment's inputs, the slots' keys and values and the GRU state, all of fixed size.

Rows at different positions (a batch whose rows joined at different steps) feed one token each
(`step_rows`): every token reads its row's memory and GRU state as they stand, and only the rows
whose segment that token closes push a summary (only those rows' FIFOs are moved) and step the
GRU (`torch.where` over the rows); the summaries are computed only in a call where some row
closes a segment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.layers.precision import upcast
from lmzoo.layers.state import LayerState

NO_DOC = -(1 << 40)  # the document id of empty memory slots: equal to no real document


@dataclass
class SegmentGrid:
    """A call's tokens on the segment grid: `left` carried tokens of the open segment, the `n`
    new ones, then padding to whole segments. `stream` [B, S*c, D], `docs` [B, S*c]."""

    stream: torch.Tensor
    docs: torch.Tensor
    left: int
    n: int
    size: int

    @property
    def segments(self) -> int:
        return self.stream.shape[1] // self.size

    @property
    def complete(self) -> int:
        return (self.left + self.n) // self.size

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """New-token values [B, n, ...] placed on the grid [B, S, c, ...] (zeros elsewhere)."""
        pad = [0, 0] * (x.dim() - 2) + [self.left, self.stream.shape[1] - self.left - self.n]
        return F.pad(x, pad).unflatten(1, (self.segments, self.size))

    def crop(self, y: torch.Tensor) -> torch.Tensor:
        """Grid values [B, S, c, ...] back to the new tokens [B, n, ...]."""
        return y.flatten(1, 2)[:, self.left:self.left + self.n]

    def segment_docs(self) -> torch.Tensor:
        """Document of each complete segment (that of its last token) [B, complete]."""
        return self.docs[:, self.size - 1::self.size][:, :self.complete]


def make_grid(stream: torch.Tensor, docs: torch.Tensor, size: int, open_stream, open_docs) -> SegmentGrid:
    left = 0 if open_stream is None else open_stream.shape[1]
    if left:
        stream, docs = torch.cat((open_stream, stream), 1), torch.cat((open_docs, docs), 1)
    n = stream.shape[1] - left
    pad = (-(left + n)) % size
    return SegmentGrid(F.pad(stream, (0, 0, 0, pad)), F.pad(docs, (0, pad), value=NO_DOC), left, n, size)


def full_segment(stream: torch.Tensor, docs: torch.Tensor) -> SegmentGrid:
    """Rows' open-segment buffers [B, c, D] (slot = position mod c) as one complete segment each:
    what the rows whose segment just closed summarise."""
    return SegmentGrid(stream, docs, 0, stream.shape[1], stream.shape[1])


def carry_open_segment(grid: SegmentGrid, last_doc: torch.Tensor):
    """The open (incomplete) segment's stream and rebased docs, for the next call."""
    start, end = grid.complete * grid.size, grid.left + grid.n
    if start == end:
        return None, None
    return grid.stream[:, start:end], grid.docs[:, start:end] - last_doc[:, None]


class AttentionPool(nn.Module):
    """Summary of each complete segment: softmax(w . x_t) weighted mean over its document's tokens."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Linear(d_model, 1, bias=False)

    def forward(self, grid: SegmentGrid) -> torch.Tensor:
        k, c = grid.complete, grid.size
        x = grid.stream[:, :k * c].unflatten(1, (k, c))                     # [B, k, c, D]
        same_doc = grid.docs[:, :k * c].unflatten(1, (k, c)) == grid.segment_docs()[..., None]
        logits = upcast(self.score(x).squeeze(-1)).masked_fill(~same_doc, float("-inf"))
        weights = logits.softmax(-1).to(x.dtype)           # the last token is always of its own doc
        return (weights[..., None] * x).sum(2)                               # [B, k, D]


class MemoryState(LayerState):
    """GMG decoding state: keys/values of the last `slots` summaries [B, H, slots, dh] and their
    (rebased) documents [B, slots]."""

    batch_dims = {"keys": 0, "values": 0, "docs": 0}


class GlobalMemoryGate(nn.Module):
    """Tokens cross-attend to the FIFO of the last `slots` segment summaries; a gate mixes the read-out in."""

    def __init__(self, d_model: int, head_dim: int, slots: int):
        super().__init__()
        self.heads, self.head_dim = max(1, d_model // head_dim), min(head_dim, d_model)
        inner = self.heads * self.head_dim
        self.slots = slots
        self.pool = AttentionPool(d_model)
        self.q = nn.Linear(d_model, inner, bias=False)
        self.kv = nn.Linear(d_model, 2 * inner, bias=False)
        self.out = nn.Linear(inner, d_model, bias=False)
        self.gate = nn.Linear(2 * d_model, d_model)

    def forward(self, x: torch.Tensor, h: torch.Tensor, grid: SegmentGrid, last_doc: torch.Tensor,
                state: MemoryState | None) -> torch.Tensor:
        """x: the residual stream [B, n, D]; h: its normed form (queries); returns (1 - g) x + g r."""
        B, m = x.shape[0], self.slots
        summaries = self.pool(grid)
        keys, values = self.kv(summaries).view(B, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        docs = grid.segment_docs()
        if state is not None and state.keys is not None:
            old_k, old_v, old_docs = state.keys, state.values, state.docs
        else:  # empty slots
            old_k = old_v = keys.new_zeros(B, self.heads, m, self.head_dim)
            old_docs = torch.full((B, m), NO_DOC, dtype=docs.dtype, device=docs.device)
        keys, values = torch.cat((old_k, keys), 2), torch.cat((old_v, values), 2)
        docs = torch.cat((old_docs, docs), 1)
        if state is not None:
            state.keys, state.values, state.docs = keys[:, :, -m:], values[:, :, -m:], docs[:, -m:] - last_doc[:, None]

        # Segment s reads slots [s, s + m) of the sequence (old slots, then this call's summaries):
        # the m summaries before it.
        S = grid.segments
        key_win = keys.unfold(2, m, 1)[:, :, :S]                             # [B, H, S, dh, m]
        value_win = values.unfold(2, m, 1)[:, :, :S]
        doc_win = docs.unfold(1, m, 1)[:, :S]                                # [B, S, m]
        q = grid.grid(self.q(h).view(B, -1, self.heads, self.head_dim)).permute(0, 3, 1, 2, 4)  # [B, H, S, c, dh]
        visible = grid.grid(grid.docs[:, grid.left:grid.left + grid.n])[..., None] == doc_win[:, :, None, :]
        scores = upcast(q @ key_win) / math.sqrt(self.head_dim)           # [B, H, S, c, m]
        scores = scores.masked_fill(~visible[:, None], torch.finfo(scores.dtype).min)
        weights = torch.where(visible[:, None].any(-1, keepdim=True), scores.softmax(-1), 0.0).to(q.dtype)
        read = weights @ value_win.transpose(-1, -2)                          # [B, H, S, c, dh]
        r = self.out(grid.crop(read.permute(0, 2, 3, 1, 4)).flatten(-2))
        g = torch.sigmoid(self.gate(torch.cat((x, r), -1)))
        return (1 - g) * x + g * r

    def read_one(self, x: torch.Tensor, h: torch.Tensor, doc: torch.Tensor, state: MemoryState,
                 filled: int | None = None) -> torch.Tensor:
        """One token per row (x, h [B, 1, D]; `doc` [B] its document) reads the FIFO as it stands;
        returns (1 - g) x + g r. `filled`: when no document ever ends, the number of slots holding
        a summary (the newest ones), so only those are read, with no document mask (the masked
        slots' weights are exactly 0 either way); 0 or None: the masked read."""
        B = x.shape[0]
        q = self.q(h).view(B, 1, self.heads, self.head_dim).transpose(1, 2)  # [B, H, 1, dh]
        if filled:
            keys, values = state.keys[:, :, self.slots - filled:], state.values[:, :, self.slots - filled:]
            scores = upcast(q @ keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
            weights = scores.softmax(-1).to(q.dtype)
        else:
            values = state.values
            visible = (state.docs == doc[:, None])[:, None, None]            # [B, 1, 1, m]
            scores = upcast(q @ state.keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
            weights = torch.where(visible.any(-1, keepdim=True), scores.softmax(-1), 0.0).to(q.dtype)
        r = self.out((weights @ values).transpose(1, 2).flatten(-2))
        g = torch.sigmoid(self.gate(torch.cat((x, r), -1)))
        return (1 - g) * x + g * r

    def push(self, segment: SegmentGrid, doc: torch.Tensor, state: MemoryState) -> None:
        """Every row closed a segment (rows at one position): its summary enters the FIFO."""
        B = doc.shape[0]
        keys, values = self.kv(self.pool(segment)).view(B, 1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        state.keys = torch.cat((state.keys[:, :, 1:], keys), 2)
        state.values = torch.cat((state.values[:, :, 1:], values), 2)
        state.docs = torch.cat((state.docs[:, 1:], doc[:, None]), 1)

    def step_rows(self, x: torch.Tensor, h: torch.Tensor, segment: SegmentGrid | None, closing: torch.Tensor,
                  doc: torch.Tensor, state: MemoryState) -> torch.Tensor:
        """One token per row (x, h [B, 1, D]; `doc` [B] its document): it reads the FIFO as it stands;
        rows whose segment it closes (`closing`: their indices) then push the summary of their
        full `segment` (None when no row closes one)."""
        out = self.read_one(x, h, doc, state)
        if segment is not None:
            # Only the closing rows' FIFOs move, in place: a select over every row with a broadcast
            # mask, into fresh tensors, cost more than the rest of the step.
            summary = self.pool(segment).index_select(0, closing)
            keys, values = self.kv(summary).view(-1, 1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            push_rows(state.keys, closing, keys, dim=2)
            push_rows(state.values, closing, values, dim=2)
            push_rows(state.docs, closing, doc.index_select(0, closing)[:, None], dim=1)
        state.docs = state.docs - doc[:, None]
        return out


def push_rows(fifo: torch.Tensor, rows: torch.Tensor, new: torch.Tensor, dim: int) -> None:
    """Shift rows `rows` of `fifo` one place along `dim` and put `new` (those rows' entries) at the
    end, in place (a state owns its tensors: `take`, `select` and `join` all copy)."""
    mine = fifo.index_select(0, rows)
    fifo.index_copy_(0, rows, torch.cat((mine.narrow(dim, 1, mine.shape[dim] - 1), new.to(fifo.dtype)), dim))


class CompressionState(LayerState):
    """CCU decoding state: the GRU state after the last complete segment [B, d_state] and its
    (rebased) document [B]."""

    batch_dims = {"hidden": 0, "doc": 0}


class ContextCompression(nn.Module):
    """A GRU over segment summaries (plus the layer below's GRU states); tokens read the state after
    the previous segment, projected to the model width."""

    def __init__(self, d_model: int, d_state: int):
        super().__init__()
        self.d_state = d_state
        self.pool = AttentionPool(d_model)
        self.cell = nn.GRUCell(d_model + d_state, d_state)
        self.proj = nn.Linear(d_state, d_model, bias=False)

    def forward(self, grid: SegmentGrid, below: torch.Tensor | None, last_doc: torch.Tensor,
                state: CompressionState | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (per-token read-out [B, n, D], GRU state after each complete segment [B, k, d_state])."""
        summaries, docs = self.pool(grid), grid.segment_docs()
        B, k = summaries.shape[:2]
        if below is None:
            below = summaries.new_zeros(B, k, self.d_state)
        if state is not None and state.hidden is not None:
            hidden, doc = state.hidden, state.doc
        else:
            hidden, doc = summaries.new_zeros(B, self.d_state), torch.full((B,), NO_DOC, device=docs.device)
        states, state_docs = [hidden], [doc]
        inputs = torch.cat((summaries, below), -1)
        for s in range(k):  # the recurrence over segments (L / c steps), not positions
            kept = (docs[:, s] == doc)[:, None]
            hidden = self.cell(inputs[:, s], torch.where(kept, hidden, 0.0))
            doc = docs[:, s]
            states.append(hidden)
            state_docs.append(doc)
        if state is not None:
            state.hidden, state.doc = hidden, doc - last_doc
        # Segment s of the grid reads the state after segment s - 1 (entry s of `states`).
        seen = torch.stack(states[:grid.segments], 1)                        # [B, S, d_state]
        seen_docs = torch.stack(state_docs[:grid.segments], 1)
        token_docs = grid.grid(grid.docs[:, grid.left:grid.left + grid.n])    # [B, S, c]
        read = torch.where((token_docs == seen_docs[..., None])[..., None], seen[:, :, None], 0.0)
        return self.proj(grid.crop(read)), torch.stack(states[1:], 1) if k else summaries.new_zeros(B, 0, self.d_state)

    def step(self, segment: SegmentGrid | None, doc: torch.Tensor, below: torch.Tensor | None,
             state: CompressionState, plain_docs: bool = False):
        """One token of rows at one position (`doc` [B] its document): `step_rows` with every row
        closing a segment (`segment` given) or none. `plain_docs`: no document ever ends, so the
        GRU state is always the token's own document's (zeros before the first segment closes)
        and no document test or rebasing is needed. Returns (read-out [B, 1, D], GRU state after
        this call's segment [B, 1, d_state] or None)."""
        hidden = state.hidden if plain_docs else torch.where((state.doc == doc)[:, None], state.hidden, 0.0)
        read, after = self.proj(hidden[:, None]), None
        if segment is not None:
            summary = self.pool(segment)[:, 0]
            below = summary.new_zeros(summary.shape[0], self.d_state) if below is None else below[:, 0]
            after = self.cell(torch.cat((summary, below), -1), hidden)
            state.hidden, state.doc = after, torch.zeros_like(doc)
            after = after[:, None]
        elif not plain_docs:
            state.doc = state.doc - doc
        return read, after

    def step_rows(self, segment: SegmentGrid | None, closing: torch.Tensor, doc: torch.Tensor,
                  below: torch.Tensor | None, state: CompressionState):
        """One token per row (`doc` [B] its document): it reads the GRU state as it stands; rows whose
        segment it closes (`closing` [B]) step the GRU on the summary of their full `segment` (None
        when no row closes one). Returns (read-out [B, 1, D], the GRU states after this call's
        segment [B, 1, d_state] for the layer above, or None when no row closed one)."""
        read = torch.where((state.doc == doc)[:, None], state.hidden, 0.0)
        hidden, hidden_doc, after = state.hidden, state.doc, None
        if segment is not None:
            summary = self.pool(segment)[:, 0]
            below = summary.new_zeros(summary.shape[0], self.d_state) if below is None else below[:, 0]
            kept = (doc == state.doc)[:, None]
            after = self.cell(torch.cat((summary, below), -1), torch.where(kept, hidden, 0.0))
            hidden = torch.where(closing[:, None], after, hidden)
            hidden_doc = torch.where(closing, doc, hidden_doc)
            after = after[:, None]
        state.hidden, state.doc = hidden, hidden_doc - doc
        return self.proj(read[:, None]), after
