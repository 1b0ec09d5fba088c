"""Tokenizers: "bytes" (default), "char", "bpe" and "syllable", behind one `Tokenizer` interface."""
from lmzoo.tokenizers.base import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    TOKENIZER_KINDS,
    Tokenizer,
    check_tokenizer_output,
    get_tokenizer,
    load_tokenizer,
    register_tokenizer,
    train_tokenizer,
)

# Importing a kind's module registers it in TOKENIZER_KINDS, in this order (bytes, the default, first).
# isort: off
from lmzoo.tokenizers.byte import ByteTokenizer
from lmzoo.tokenizers.char import CharTokenizer
from lmzoo.tokenizers.bpe import BPETokenizer
from lmzoo.tokenizers.syllable import SyllableTokenizer
from lmzoo.tokenizers.stats import tokenizer_stats
# isort: on

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "TOKENIZER_KINDS",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "SyllableTokenizer",
    "Tokenizer",
    "check_tokenizer_output",
    "get_tokenizer",
    "load_tokenizer",
    "register_tokenizer",
    "tokenizer_stats",
    "train_tokenizer",
]
