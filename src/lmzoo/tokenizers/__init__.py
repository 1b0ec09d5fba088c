"""Tokenizers: "bytes" (default), "char" and "bpe", behind one `Tokenizer` interface."""
from lmzoo.tokenizers.base import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    TOKENIZER_KINDS,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
    register_tokenizer,
    train_tokenizer,
)

# Importing a kind's module registers it in TOKENIZER_KINDS.
from lmzoo.tokenizers.byte import ByteTokenizer
from lmzoo.tokenizers.char import CharTokenizer
from lmzoo.tokenizers.bpe import BPETokenizer

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
    "Tokenizer",
    "get_tokenizer",
    "load_tokenizer",
    "register_tokenizer",
    "train_tokenizer",
]
