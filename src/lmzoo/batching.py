"""Decoding many sequences together, each joining and leaving on its own (continuous batching).

A `BatchDecoder` holds the sequences (rows) being decoded. `add` prefills one prompt alone and
returns a handle plus the logits for its next token; `step` feeds one token to each of the given
rows and returns their next logits; `remove` drops a row at once. A server admits requests
between steps, so rows sit at different positions. `add` is `prefill` (the model run on the
prompts, which leaves the decoder's rows alone, so it may run on another thread while the batch
is stepped) followed by `join` (between steps).

All rows live in ONE decoding `State`: `add` prefills the prompt alone (batch 1) and joins its
state into the batch (`State.join`), so a step is one forward call over every row, each at its
own position (the architecture declares `mixed_positions`). Stepping only some of the rows
copies them out of the batch and back in (`State.take`, `State.join`): exact, but it copies the
whole state, so a server steps every active row each time for speed. An architecture that does
not declare `mixed_positions` is decoded one row at a time, each with its own state.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lmzoo.errors import LmzooError


@dataclass
class RowOutput:
    """One row's result of `add` or `step`: logits [V] for its next token, and (when the decoder
    was asked for them) that row's per-token statistics of the last token fed."""

    logits: torch.Tensor
    token_stats: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def prefill(model, prompts: Sequence[Sequence[int]]):
    """Feed prompts of any lengths (each at least one token) as the rows of one decoding state:
    prompts of one length together, then the states joined (rows at different positions, so the
    model must declare `mixed_positions` unless all lengths agree). Returns (state, logits [B, V]
    for each row's next token), rows in the order given."""
    lengths = sorted({len(p) for p in prompts})
    if lengths[0] == 0:
        raise LmzooError("a prompt needs at least one token; start empty prompts with the tokenizer's eos id")
    if len(lengths) > 1 and not model.mixed_positions:
        raise LmzooError(f"{type(model).__name__} does not declare mixed_positions, so prompts of different "
                         "lengths cannot share one batch; decode each length on its own")
    was_training = model.training
    model.eval()
    try:
        state, logits, order = None, [], []
        for length in lengths:
            rows = [i for i, p in enumerate(prompts) if len(p) == length]
            part = model.init_state()
            ids = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long, device=model.device)
            logits.append(model(ids, state=part, logits_to_keep=1).logits[:, -1])
            state = part if state is None else state.join(part)
            order += rows
    finally:
        model.train(was_training)
    if order != sorted(order):  # back to the order given
        back = torch.tensor(order).argsort()
        return state.select(back), torch.cat(logits)[back.to(model.device)]
    return state, torch.cat(logits)


@dataclass
class Prefilled:
    """Prompts run through the model but not yet rows of a decoder (`BatchDecoder.prefill`): the
    states of the prompts fed together (prompt indices, their State), and each prompt's output."""

    parts: list[tuple[list[int], object]]
    outputs: list[RowOutput]


class BatchDecoder:
    def __init__(self, model, max_rows: int | None = None, token_stats: bool = False):
        if max_rows is not None and max_rows < 1:
            raise LmzooError(f"max_rows must be >= 1, got {max_rows}")
        self.model = model
        self.max_rows = max_rows
        self.token_stats = token_stats
        # One group per run of rows decoded together: with mixed_positions there is at most one,
        # otherwise one per row. A group is (handles in row order, their State).
        self._groups: list[tuple[list[int], object]] = []
        self._next_handle = 0

    @property
    def active(self) -> list[int]:
        """Handles of the rows being decoded, in the order they joined."""
        return sorted(h for handles, _ in self._groups for h in handles)

    def position(self, handle: int) -> int:
        """Tokens fed to row `handle` so far."""
        handles, state = self._group(handle)
        return int(state.row_positions()[handles.index(handle)])

    def nbytes(self) -> int:
        """Bytes of decoding state held for all rows."""
        return sum(state.nbytes() for _, state in self._groups)

    def add(self, prompt_ids: Sequence[int] | torch.Tensor) -> tuple[int, RowOutput]:
        """Prefill a prompt (at least one token) as a new row; return its handle and next-token output."""
        return self.add_many([prompt_ids])[0]

    def add_many(self, prompts: Sequence[Sequence[int] | torch.Tensor]) -> list[tuple[int, RowOutput]]:
        """Prefill several prompts as new rows, those of one length in one call (a server admitting
        the requests that arrived during a step pays one prefill per prompt length, not per prompt).
        Returns (handle, next-token output) per prompt, in the order given."""
        self._check_room(len(prompts))
        prefilled = self.prefill(prompts)
        return list(zip(self.join(prefilled), prefilled.outputs))

    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int] | torch.Tensor], token_stats: bool | None = None) -> "Prefilled":
        """Run prompts (each at least one token) through the model as future rows, without touching
        the rows being decoded: a server prefills on one thread while another steps the batch,
        then `join`s the result between steps. `token_stats`: whether to gather per-token
        statistics (default: as the decoder was made)."""
        ids = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in prompts]
        if any(len(i) == 0 for i in ids):
            raise LmzooError("a prompt needs at least one token; start empty prompts with the tokenizer's eos id")
        # Rows that may join one batch are prefilled a length at a time; otherwise each on its own.
        by_length: dict[object, list[int]] = {}
        for i, prompt in enumerate(ids):
            by_length.setdefault(len(prompt) if self.model.mixed_positions else i, []).append(i)
        parts, outputs = [], {}
        for rows in by_length.values():
            state = self.model.init_state()
            outputs.update(zip(rows, self._forward(torch.stack([ids[i] for i in rows]), state, token_stats)))
            parts.append((rows, state))
        return Prefilled(parts, [outputs[i] for i in range(len(ids))])

    def join(self, prefilled: "Prefilled") -> list[int]:
        """Make prefilled prompts rows of this decoder; returns their handles, in the order prompted."""
        count = len(prefilled.outputs)
        self._check_room(count)
        handles = list(range(self._next_handle, self._next_handle + count))
        self._next_handle += count
        for rows, state in prefilled.parts:
            new = [handles[i] for i in rows]
            if self._groups and self.model.mixed_positions:
                group, batch = self._groups[0]
                self._groups[0] = (group + new, batch.join(state))
            else:
                self._groups.append((new, state))
        return handles

    def _check_room(self, count: int) -> None:
        if self.max_rows is not None and len(self.active) + count > self.max_rows:
            raise LmzooError(f"the batch is full ({self.max_rows} rows); remove a row first")

    @torch.no_grad()
    def step(self, tokens: Mapping[int, int], token_stats: bool | None = None) -> dict[int, RowOutput]:
        """Feed token `tokens[h]` to each row `h` given; return each row's next-token output
        (with per-token statistics if `token_stats`; default: as the decoder was made)."""
        for handle in tokens:
            self._group(handle)
        outputs = {}
        for i, (handles, state) in enumerate(self._groups):
            stepped = [h for h in handles if h in tokens]
            if not stepped:
                continue
            if len(stepped) < len(handles):  # copy the stepped rows out, step them, join them back
                rest = [h for h in handles if h not in tokens]
                state, kept = state.take(self._rows(handles, stepped)), state.select(self._rows(handles, rest))
            ids = torch.tensor([[int(tokens[h])] for h in stepped], dtype=torch.long)
            outputs.update(zip(stepped, self._forward(ids, state, token_stats)))
            if len(stepped) < len(handles):
                state, stepped = kept.join(state), rest + stepped
            self._groups[i] = (stepped, state)
        return outputs

    def remove(self, handle: int) -> None:
        """Drop a row and free its state (a finished or disconnected request)."""
        handles, state = self._group(handle)
        i = next(i for i, (group, _) in enumerate(self._groups) if group is handles)
        rest = [h for h in handles if h != handle]
        if rest:
            self._groups[i] = (rest, state.select(self._rows(handles, rest)))
        else:
            del self._groups[i]

    def _group(self, handle: int):
        for handles, state in self._groups:
            if handle in handles:
                return handles, state
        raise LmzooError(f"no active row {handle}; it was removed or never added")

    @staticmethod
    def _rows(handles: list[int], wanted: list[int]) -> torch.Tensor:
        return torch.tensor([handles.index(h) for h in wanted], dtype=torch.long)

    def _forward(self, ids: torch.Tensor, state, token_stats: bool | None = None) -> list[RowOutput]:
        """One model call over the rows of `state`; each row's output for its last token."""
        was_training = self.model.training
        if was_training:  # eval() and train() walk every module: not on each step of a model in eval mode
            self.model.eval()
        try:
            out = self.model(ids.to(self.model.device), state=state, logits_to_keep=1,
                             token_stats=self.token_stats if token_stats is None else token_stats)
        finally:
            if was_training:
                self.model.train()
        return [RowOutput(out.logits[row, -1], {name: value[row, -1] for name, value in out.token_stats.items()})
                for row in range(ids.shape[0])]
