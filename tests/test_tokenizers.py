"""Tokenizers: round trips, specials, save/load, training, the registry and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmzoo.errors import LmzooError
from lmzoo.tokenizers import (
    EOS,
    TOKENIZER_KINDS,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
    register_tokenizer,
    train_tokenizer,
)

SAMPLES = [
    "Hello, world!",
    "Grüße aus Köln: Straße, Maß, Öl, Übermut, ÄRGER.",
    "Emoji 😀👍🏽 and flags 🇩🇪 and CJK 漢字.",
    "Windows\r\nline endings\n\n\ttabs  and   spaces ",
    "Numbers 1234567 and 3.14159, year 2024.",
    "Literal special text: <|endoftext|> <|pad|> <|startoftext|>",
    "",
]
CORPUS = [
    "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus Köln!\n" * 20,
    "The quick brown fox jumps over the lazy dog; 12345 foxes, 678 dogs.\n" * 20,
    "Straße, Maß, Öl, Übermut, ÄRGER 😀👍🏽🇩🇪 漢字 <|endoftext|> <|pad|> <|startoftext|>\r\n\t" * 5,
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def tokenizers(bpe) -> dict[str, Tokenizer]:
    return {"bytes": ByteTokenizer(), "char": CharTokenizer.train(CORPUS + SAMPLES), "bpe": bpe}


KINDS = ["bytes", "char", "bpe"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tokenizers, kind, text):
    tok = tokenizers[kind]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", KINDS)
def test_special_text_in_input_is_not_a_special_token(tokenizers, kind):
    tok = tokenizers[kind]
    ids = tok.encode(f"a{EOS}b")
    assert not set(ids) & set(tok.special_ids)


@pytest.mark.parametrize("kind", KINDS)
def test_specials_distinct_and_skipped_on_decode(tokenizers, kind):
    tok = tokenizers[kind]
    assert len(set(tok.special_ids)) == 3
    ids = [tok.bos_id, *tok.encode("Maß"), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "Maß"
    assert tok.decode(ids, skip_special=False) == "<|startoftext|>Maß<|endoftext|><|pad|>"


@pytest.mark.parametrize("kind", KINDS)
def test_decode_accepts_tensors_and_arrays(tokenizers, kind):
    tok = tokenizers[kind]
    ids = tok.encode("Grüße 😀")
    assert tok.decode(torch.tensor(ids)) == "Grüße 😀"
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "Grüße 😀"


@pytest.mark.parametrize("kind", KINDS)
def test_encode_batch_matches_encode(tokenizers, kind):
    tok = tokenizers[kind]
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


@pytest.mark.parametrize("kind", KINDS)
def test_decode_rejects_out_of_range_and_2d(tokenizers, kind):
    tok = tokenizers[kind]
    with pytest.raises(LmzooError, match=rf"token id {tok.vocab_size} is outside .*vocab_size"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(LmzooError, match="1-D"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_identity(tokenizers, kind, tmp_path):
    tok = tokenizers[kind]
    path = tok.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
    for source in (path, path.parent):
        loaded = load_tokenizer(source)
        assert type(loaded) is type(tok)
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.special_ids == tok.special_ids
        assert loaded.state_dict() == tok.state_dict()
        assert [loaded.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]
    assert get_tokenizer(str(path.parent)).encode("Öl") == tok.encode("Öl")


def test_bytes_layout():
    tok = ByteTokenizer()
    assert tok.vocab_size == 259
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (256, 257, 258)
    assert tok.encode("ß") == [0xC3, 0x9F]
    assert tok.decode([0xC3]) == "\ufffd"  # half a character decodes leniently
    assert get_tokenizer("bytes").vocab_size == 259


def test_bytes_rejects_other_vocab_size():
    with pytest.raises(LmzooError, match="fixed vocab_size of 259"):
        ByteTokenizer.train([], vocab_size=512)


def test_char_vocab_sorted_with_unk():
    tok = CharTokenizer.train(["baca", "äb"])
    assert tok.chars == ["a", "b", "c", "ä"]
    assert tok.vocab_size == 4 + 4
    ids = tok.encode("abz")
    assert ids[2] == tok.unk_id
    assert tok.decode(ids) == "ab\ufffd"
    assert tok.decode(ids, skip_special=False) == "ab<unk>"


def test_char_vocab_size_keeps_most_frequent():
    tok = CharTokenizer.train(["aaaabbbcc d"], vocab_size=4 + 3)
    assert tok.chars == ["a", "b", "c"]
    assert tok.encode("d") == [tok.unk_id]
    with pytest.raises(LmzooError, match="vocab_size must be > 4"):
        CharTokenizer.train(["abc"], vocab_size=3)


@pytest.mark.parametrize("vocab_size", [300, 350])
def test_bpe_respects_vocab_size(vocab_size):
    tok = BPETokenizer.train(CORPUS, vocab_size=vocab_size)
    assert tok.vocab_size == vocab_size
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (0, 1, 2)


def test_bpe_learns_merges(bpe):
    text = "Der schnelle braune Fuchs"
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) / 2


def test_bpe_digits_in_groups_of_at_most_three(bpe):
    pieces = [bpe.decode([i]) for i in bpe.encode("12345 foxes, 1234567")]
    assert "".join(pieces) == "12345 foxes, 1234567"
    digit_pieces = [p.strip() for p in pieces if p.strip().isdigit()]
    assert digit_pieces and all(len(p) <= 3 for p in digit_pieces)


def test_bpe_normalises_to_nfc(bpe):
    assert bpe.decode(bpe.encode("Cafe\u0301")) == "Caf\u00e9"


def test_bpe_vocab_too_small_or_no_text():
    with pytest.raises(LmzooError, match="at least 259"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(LmzooError, match="empty text"):
        BPETokenizer.train(["", ""], vocab_size=300)


def test_train_tokenizer_from_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(CORPUS):
        (data / f"{i}.txt").write_text(text, encoding="utf-8")
    tok = train_tokenizer("bpe", data, vocab_size=320, out=tmp_path / "tok")
    assert tok.vocab_size == 320
    assert load_tokenizer(tmp_path / "tok").encode("Grüße") == tok.encode("Grüße")
    char = train_tokenizer("char", [data / "0.txt"])
    assert "ü" in char.chars and "😀" not in char.chars


def test_get_tokenizer_errors(tmp_path):
    with pytest.raises(LmzooError, match="unknown tokenizer 'wordpiece'.*bytes, char, bpe"):
        get_tokenizer("wordpiece")
    with pytest.raises(LmzooError, match="'bpe' tokenizer must be trained first"):
        get_tokenizer("bpe")
    with pytest.raises(LmzooError, match="unknown tokenizer kind 'wordpiece'"):
        train_tokenizer("wordpiece", tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(LmzooError, match="no tokenizer found"):
        load_tokenizer(tmp_path / "missing")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(LmzooError, match="corrupt tokenizer file .*re-run prepare"):
        load_tokenizer(tmp_path)
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(LmzooError, match="corrupt tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('{"model": {}}', encoding="utf-8")
    with pytest.raises(LmzooError, match="not an lmzoo tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('{"format": "lmzoo.tokenizer", "kind": "nope"}', encoding="utf-8")
    with pytest.raises(LmzooError, match="unknown tokenizer kind 'nope'"):
        load_tokenizer(bad)
    bad.write_text('{"format": "lmzoo.tokenizer", "kind": "char"}', encoding="utf-8")
    with pytest.raises(LmzooError, match="corrupt char tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('{"format": "lmzoo.tokenizer", "kind": "bpe", "hf_tokenizer": {"model": 1}}', encoding="utf-8")
    with pytest.raises(LmzooError, match="corrupt bpe tokenizer file"):
        load_tokenizer(bad)


def test_registry_accepts_new_kind(tmp_path):
    assert {"bytes", "char", "bpe"} <= set(TOKENIZER_KINDS)

    @register_tokenizer("test-upper")
    class UpperTokenizer(ByteTokenizer):
        def encode(self, text):
            return super().encode(text.upper())

    try:
        UpperTokenizer().save(tmp_path)
        loaded = load_tokenizer(tmp_path)
        assert isinstance(loaded, UpperTokenizer) and loaded.kind == "test-upper"
        assert loaded.decode(get_tokenizer("test-upper").encode("abc")) == "ABC"
        with pytest.raises(RuntimeError, match="registered twice"):
            register_tokenizer("test-upper")(UpperTokenizer)
    finally:
        TOKENIZER_KINDS.pop("test-upper")
