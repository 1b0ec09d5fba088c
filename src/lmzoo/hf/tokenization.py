"""lmzoo tokenizers as Hugging Face fast tokenizers (`PreTrainedTokenizerFast` over a `tokenizers` model).

Each kind maps to the same ids: bytes (a byte-level BPE without merges: one id per UTF-8 byte),
char (a BPE without merges over the character vocabulary, `<unk>` for unseen characters) and bpe
(lmzoo's own `tokenizers` model). The syllable tokenizer's case and space markers (`<cap>` upper-cases
the next piece) have no `tokenizers` equivalent, so it is not converted (`HFTokenizerUnsupported`).

One difference remains for every kind: lmzoo encodes the text of a special token found inside the
input ("<|endoftext|>") as plain text, HF tokenizers encode it as the special token.
"""
from __future__ import annotations

import json

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lmzoo.errors import LmzooError
from lmzoo.tokenizers import BOS, EOS, PAD, SPECIAL_TOKENS, BPETokenizer, ByteTokenizer, CharTokenizer
from lmzoo.tokenizers.char import UNK


class HFTokenizerUnsupported(LmzooError):
    """The tokenizer kind has no Hugging Face `tokenizers` equivalent."""


def to_hf_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The HF fast tokenizer giving the same ids as the lmzoo `tokenizer` (see the module docstring)."""
    if isinstance(tokenizer, ByteTokenizer):
        backend = _byte_backend(tokenizer)
    elif isinstance(tokenizer, CharTokenizer):
        backend = _char_backend(tokenizer)
    elif isinstance(tokenizer, BPETokenizer):
        backend = HFTokenizer.from_str(tokenizer.hf.to_str())  # a copy: lmzoo's keeps its own settings
    else:
        raise HFTokenizerUnsupported(f"the '{tokenizer.kind}' tokenizer has no Hugging Face equivalent (its markers "
                                     "change the text around them); use the model with lmzoo's tokenizer")
    unk = {"unk_token": UNK} if isinstance(tokenizer, CharTokenizer) else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD, bos_token=BOS,
                                   clean_up_tokenization_spaces=False, **unk)


def _specials(backend: HFTokenizer, names) -> HFTokenizer:
    backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    return backend


def _byte_backend(tokenizer: ByteTokenizer) -> HFTokenizer:
    # GPT-2's byte-to-character table: byte b is the character byte_chars[b], and id b.
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    vocab.update({name: i for name, i in zip(SPECIAL_TOKENS, (tokenizer.eos_id, tokenizer.pad_id, tokenizer.bos_id))})
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return _specials(backend, SPECIAL_TOKENS)


def _char_backend(tokenizer: CharTokenizer) -> HFTokenizer:
    vocab = {c: i for i, c in enumerate(tokenizer.chars)}
    vocab.update({name: i for name, i in zip((*SPECIAL_TOKENS, UNK), (tokenizer.eos_id, tokenizer.pad_id,
                                                                    tokenizer.bos_id, tokenizer.unk_id))})
    # Without merges, BPE splits the text into characters; without a pre-tokenizer, spaces are characters too.
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    backend.decoder = decoders.Fuse()
    return _specials(backend, (*SPECIAL_TOKENS, UNK))


def tokenizer_json(tokenizer) -> dict:
    """The `tokenizers` JSON of the converted tokenizer (what tokenizer.json holds)."""
    return json.loads(to_hf_tokenizer(tokenizer).backend_tokenizer.to_str())
