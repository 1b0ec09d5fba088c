"""The default tokenizer: one id per UTF-8 byte, then the special tokens.

Needs no training, has no unknown tokens and round-trips any text exactly, which makes it
the natural baseline for bits-per-byte comparisons between architectures.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lmzoo.errors import LmzooError
from lmzoo.tokenizers.base import SPECIAL_TOKENS, Tokenizer, register_tokenizer

N_BYTES = 256


@register_tokenizer("bytes")
class ByteTokenizer(Tokenizer):
    """ids 0..255 are bytes; 256, 257, 258 are eos, pad, bos."""

    eos_id = N_BYTES
    pad_id = N_BYTES + 1
    bos_id = N_BYTES + 2

    @property
    def vocab_size(self) -> int:
        return N_BYTES + len(SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        # Decode each run of bytes between specials on its own, so a special token never
        # glues together the halves of a multi-byte character.
        parts: list[str] = []
        run = bytearray()
        for i in ids:
            if i < N_BYTES:
                run.append(i)
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            run.clear()
            if not skip_special:
                parts.append(SPECIAL_TOKENS[i - N_BYTES])
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ByteTokenizer:
        return cls()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> ByteTokenizer:
        tokenizer = cls()
        if vocab_size not in (None, tokenizer.vocab_size):
            raise LmzooError(
                f"the bytes tokenizer has a fixed vocab_size of {tokenizer.vocab_size}, not {vocab_size}; "
                "drop vocab_size or choose the 'bpe' tokenizer"
            )
        return tokenizer
