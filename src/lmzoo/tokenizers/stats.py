"""How well a tokenizer compresses some text, and how much of it it cannot represent.

Characters per token is the compression ratio against a character-level tokenizer (the
seed's "~2.5x" claim for syllables is of this kind); bytes per token compares with the bytes
tokenizer and is what turns a loss per token into bits per byte.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from lmzoo.tokenizers.base import Tokenizer

BATCH = 64  # texts per encode_batch call (BPE encodes a batch on all cores)


def tokenizer_stats(tokenizer: Tokenizer, texts: Iterable[str]) -> dict[str, Any]:
    """Counts over `texts` (streamed): texts, tokens, characters, bytes, chars_per_token,
    bytes_per_token, unk_tokens and unk_share (0 for kinds without an `<unk>`, such as bytes and bpe)."""
    unk_id = getattr(tokenizer, "unk_id", None)
    stats = {"texts": 0, "tokens": 0, "characters": 0, "bytes": 0, "unk_tokens": 0}
    texts = iter(texts)
    while batch := list(itertools.islice(texts, BATCH)):
        for text, ids in zip(batch, tokenizer.encode_batch(batch)):
            stats["texts"] += 1
            stats["tokens"] += len(ids)
            stats["characters"] += len(text)
            stats["bytes"] += len(text.encode("utf-8"))
            if unk_id is not None:
                stats["unk_tokens"] += ids.count(unk_id)
    tokens = stats["tokens"]
    stats["chars_per_token"] = stats["characters"] / tokens if tokens else 0.0
    stats["bytes_per_token"] = stats["bytes"] / tokens if tokens else 0.0
    stats["unk_share"] = stats["unk_tokens"] / tokens if tokens else 0.0
    return stats
