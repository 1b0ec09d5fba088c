"""Decoding many sequences together, each joining and leaving on its own (continuous batching).

A `BatchDecoder` holds the sequences (rows) being decoded. `add` prefills one prompt alone and
returns a handle plus the logits for its next token; `step` feeds one token to each of the given
rows and returns their next logits; `remove` drops a row at once. A server admits requests
between steps, so rows sit at different positions.

This first version keeps one decoding `State` per row and steps the rows one after another:
exact for every architecture by construction, and the reference the batched version is tested
against.
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


class BatchDecoder:
    def __init__(self, model, max_rows: int | None = None, token_stats: bool = False):
        if max_rows is not None and max_rows < 1:
            raise LmzooError(f"max_rows must be >= 1, got {max_rows}")
        self.model = model
        self.max_rows = max_rows
        self.token_stats = token_stats
        self._states: dict[int, object] = {}
        self._next_handle = 0

    @property
    def active(self) -> list[int]:
        """Handles of the rows being decoded, in the order they joined."""
        return list(self._states)

    def position(self, handle: int) -> int:
        """Tokens fed to row `handle` so far."""
        return self._state(handle).position

    def nbytes(self) -> int:
        """Bytes of decoding state held for all rows."""
        return sum(state.nbytes() for state in self._states.values())

    @torch.no_grad()
    def add(self, prompt_ids: Sequence[int] | torch.Tensor) -> tuple[int, RowOutput]:
        """Prefill a prompt (at least one token) as a new row; return its handle and next-token output."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        if ids.shape[1] == 0:
            raise LmzooError("a prompt needs at least one token; start empty prompts with the tokenizer's eos id")
        if self.max_rows is not None and len(self._states) >= self.max_rows:
            raise LmzooError(f"the batch is full ({self.max_rows} rows); remove a row first")
        state = self.model.init_state()
        output = self._forward(ids, state)
        handle = self._next_handle
        self._next_handle += 1
        self._states[handle] = state
        return handle, output

    @torch.no_grad()
    def step(self, tokens: Mapping[int, int]) -> dict[int, RowOutput]:
        """Feed token `tokens[h]` to each row `h` given; return each row's next-token output."""
        outputs = {}
        for handle, token in tokens.items():
            ids = torch.tensor([[int(token)]], dtype=torch.long)
            outputs[handle] = self._forward(ids, self._state(handle))
        return outputs

    def remove(self, handle: int) -> None:
        """Drop a row and free its state (a finished or disconnected request)."""
        self._state(handle)
        del self._states[handle]

    def _state(self, handle: int):
        if handle not in self._states:
            raise LmzooError(f"no active row {handle}; it was removed or never added")
        return self._states[handle]

    def _forward(self, ids: torch.Tensor, state) -> RowOutput:
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(ids.to(self.model.device), state=state, logits_to_keep=1,
                             token_stats=self.token_stats)
        finally:
            self.model.train(was_training)
        stats = {name: value[0, -1] for name, value in out.token_stats.items()}
        return RowOutput(out.logits[0, -1], stats)
