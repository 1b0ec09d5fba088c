"""lmzoo's decoding state as a `transformers` `Cache`, so HF `generate()` never recomputes the prefix.

A `Cache` in transformers is a list of per-layer key/value holders; an lmzoo `State` is whatever
each architecture keeps (KV buffers, recurrent sums, ring buffers). `LmzooCache` holds one `State`
and answers the questions `generate()` asks of any cache (how many tokens it has seen, reorder the
rows for beam search); it keeps no HF layers, and the model reads and advances `cache.state` itself.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from lmzoo.errors import LmzooError


class LmzooCache(Cache):
    """The decoding state of one lmzoo model (`model.init_state()`), for HF generation."""

    def __init__(self, lm) -> None:
        super().__init__(layers=[])
        self._init_state = lm.init_state
        self.state = lm.init_state()

    def __repr__(self) -> str:
        return f"LmzooCache(position={self.state.position}, nbytes={self.state.nbytes()})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.state.position

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no maximum: full attention grows, the other states have a fixed size

    def reset(self) -> None:
        self.state = self._init_state()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state.select(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state.select(indices)

    @property
    def is_croppable(self) -> bool:
        return False  # a recurrent state cannot forget its last tokens

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise LmzooError("an lmzoo decoding state cannot drop tokens (assisted or speculative decoding "
                             "needs that); generate without an assistant model")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise LmzooError("expanding a filled lmzoo cache is not supported; pass the expanded input_ids with "
                         "a fresh cache instead")
