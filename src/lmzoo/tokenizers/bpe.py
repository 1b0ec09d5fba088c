"""Byte-level BPE trained with HF `tokenizers` (the GPT-2/GPT-4 recipe).

Text is NFC-normalised (so "é" typed two ways gets one token sequence), split by the GPT-4
pre-tokenisation regex (words with their leading space, digits in groups of at most three,
punctuation runs, newlines), mapped to bytes and merged by BPE. Every byte is in the
vocabulary, so there are no unknown tokens and decoding restores NFC text exactly.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmzoo.errors import LmzooError
from lmzoo.tokenizers.base import BOS, EOS, PAD, SPECIAL_TOKENS, Tokenizer, register_tokenizer

# Contractions, letters with one optional leading non-letter, 1-3 digit groups, punctuation
# runs with trailing newlines, newline runs, and whitespace not followed by a word.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)
N_BYTES = 256
DEFAULT_VOCAB_SIZE = 4096
MIN_VOCAB_SIZE = N_BYTES + len(SPECIAL_TOKENS)


@register_tokenizer("bpe")
class BPETokenizer(Tokenizer):
    needs_training = True

    def __init__(self, hf: HFTokenizer):
        ids = [hf.token_to_id(token) for token in SPECIAL_TOKENS]
        if None in ids:
            raise ValueError(f"the BPE vocabulary lacks the special tokens {SPECIAL_TOKENS}")
        # Treat "<|endoftext|>" inside input text as plain text, as the other kinds do: only
        # the data pipeline inserts the real eos id, so documents cannot forge separators.
        hf.encode_special_tokens = True
        self.hf = hf
        self.eos_id, self.pad_id, self.bos_id = ids

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # HF encodes a batch on all cores in Rust, much faster than one text at a time.
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def state_dict(self) -> dict[str, Any]:
        return {"hf_tokenizer": json.loads(self.hf.to_str())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BPETokenizer:
        try:
            hf = HFTokenizer.from_str(json.dumps(state["hf_tokenizer"]))
        except Exception as err:  # the Rust side raises a bare Exception on bad JSON
            raise ValueError(f"invalid HF tokenizer JSON: {err}") from None
        return cls(hf)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> BPETokenizer:
        """Learn merges from `texts` (streamed; only word counts stay in memory).

        The result may be smaller than vocab_size when the text runs out of pairs to merge.
        """
        vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
        if vocab_size < MIN_VOCAB_SIZE:
            raise LmzooError(
                f"bpe vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + 3 specials), got {vocab_size}"
            )
        hf = _untrained_hf_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,  # a pair seen once is noise, not a reusable unit
            special_tokens=[EOS, PAD, BOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = iter(texts)
        first = next((text for text in texts if text), None)
        if first is None:
            raise LmzooError("cannot train a bpe tokenizer on empty text; pass files that contain text")
        hf.train_from_iterator(itertools.chain([first], texts), trainer=trainer)
        return cls(hf)


def _untrained_hf_tokenizer() -> HFTokenizer:
    hf = HFTokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        # The split above replaces ByteLevel's own GPT-2 regex; ByteLevel only maps bytes.
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    return hf
