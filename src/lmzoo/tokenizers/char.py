"""Character-level tokenizer: one id per character seen in the training text.

The classic char-rnn / nanoGPT-shakespeare setup. Layout: the sorted characters first, then
eos, pad, bos and `<unk>`, which stands for any character not seen in training.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from lmzoo.errors import LmzooError
from lmzoo.tokenizers.base import SPECIAL_TOKENS, Tokenizer, register_tokenizer

UNK = "<unk>"
# An unknown character decodes to U+FFFD, the same stand-in a byte decoder uses.
UNK_TEXT = "\ufffd"
N_EXTRA = len(SPECIAL_TOKENS) + 1  # the specials plus <unk>


@register_tokenizer("char")
class CharTokenizer(Tokenizer):
    needs_training = True

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("every vocabulary entry must be a single character")
        self._index = {c: i for i, c in enumerate(self.chars)}
        n = len(self.chars)
        self.eos_id, self.pad_id, self.bos_id, self.unk_id = range(n, n + N_EXTRA)
        # id -> text, for decoding with and without the special tokens
        self._pieces_plain = self.chars + [""] * len(SPECIAL_TOKENS) + [UNK_TEXT]
        self._pieces_special = self.chars + [*SPECIAL_TOKENS, UNK]

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + N_EXTRA

    def encode(self, text: str) -> list[int]:
        get, unk = self._index.get, self.unk_id
        return [get(c, unk) for c in text]

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        pieces = self._pieces_plain if skip_special else self._pieces_special
        return "".join(pieces[i] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CharTokenizer:
        return cls(state["chars"])

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> CharTokenizer:
        """Vocabulary of all characters in `texts`, or the most frequent ones if vocab_size is set."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        if not counts:
            raise LmzooError("cannot train a char tokenizer on empty text; pass files that contain text")
        if vocab_size is None:
            return cls(counts)
        if vocab_size <= N_EXTRA:
            raise LmzooError(f"char vocab_size must be > {N_EXTRA} (the special tokens and <unk>), got {vocab_size}")
        # Most frequent first; ties broken by the character so the result is deterministic.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(c for c, _ in ranked[: vocab_size - N_EXTRA])
