"""The syllable tokenizer: exact round trips, <unk>, pyphen syllables in de and en, save/load,
compression on German text, and the `tokenizer train` / `tokenizer stats` commands."""
from __future__ import annotations

import json
import random

import pytest

from lmzoo.cli.main import main
from lmzoo.errors import LmzooError
from lmzoo.tokenizers import (
    ByteTokenizer,
    SyllableTokenizer,
    get_tokenizer,
    load_tokenizer,
    tokenizer_stats,
    train_tokenizer,
)
from lmzoo.tokenizers.syllable import SPECIALS, syllabify

pytest.importorskip("pyphen")  # the `syllable` extra; lmzoo imports it only when a word needs syllables

GERMAN = (
    "Die Straße führt über die Brücke. Größere Häuser stehen am Fluss, und der Bäcker backt Brot.\n"
    "Wir wohnen in der Stadt; die Stadt ist schön, die Häuser sind alt. Maß und Mitte!\n"
    "NASA, McDonald und iPhone 15 kosten 1.234,56 €.\t(Ärger? Übermut — ÖL.)\n\n"
)
ENGLISH = "The computer understands hyphenation. Wonderful computers compute wonderful things.\n"
SAMPLES = [
    "", " ", "   ", "\n\n\t", "Straße", "STRASSE", "McDonald", "iPhone", "ÄRGER über Öl",
    "Die  Stadt\tist\r\n schön.  ", "1234 + 5,6 = ?!", "a", "A", "ß", "Größe", "x" * 100,
]


def name(tok: SyllableTokenizer, ids: list[int]) -> list[str]:
    return [SPECIALS[i] if i < len(SPECIALS) else tok.decode([i]) for i in ids]


@pytest.fixture(scope="module")
def tok() -> SyllableTokenizer:
    """Small on purpose, so that words are also spelled out; the samples' characters are all in it."""
    return SyllableTokenizer.train([GERMAN * 3, *SAMPLES], lang="de", n_syllables=30, n_words=5)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_examples(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_round_trip_random_strings(tok):
    """Property-style: random strings over the character set, mixing words, case and whitespace."""
    rng = random.Random(0)
    alphabet = [c for c in tok.chars] + [" "] * 5
    words = ["straße", "Straße", "STRASSE", "McDonald", "brücke", "Häuser", "über", "größere", "stadt"]
    for _ in range(300):
        parts = [rng.choice(words) if rng.random() < 0.4 else "".join(rng.choices(alphabet, k=rng.randint(1, 8)))
                 for _ in range(rng.randint(0, 12))]
        text = "".join(rng.choice(["", " ", "  ", "\n", "\t", " \n "]) + part for part in parts)
        text = "".join(c.upper() if rng.random() < 0.1 else c for c in text) if rng.random() < 0.5 else text
        text = "".join(c for c in text if c in tok.chars or c == " ")  # upper() may leave the set (ß -> SS is fine)
        assert tok.decode(tok.encode(text)) == text, text


def test_case_and_space_are_tokens(tok):
    assert name(tok, tok.encode("die Stadt")) == ["die", "<space>", "<cap>", "stadt"]
    assert tok.encode("Stadt")[1:] == tok.encode("stadt")  # the vocabulary is lowercase
    mc = name(tok, tok.encode("McDonald"))
    assert mc.count("<cap>") == 2 and mc[0] == "<cap>"
    assert "<cap>" not in name(tok, tok.encode("NASA"))  # all caps: spelled in capitals


def test_unknown_characters_become_unk_not_dropped(tok):
    ids = tok.encode("Stadt 😀 漢")
    assert ids.count(tok.unk_id) == 2
    assert tok.decode(ids) == "Stadt \ufffd \ufffd"
    assert tok.decode(ids, skip_special=False) == "Stadt <unk> <unk>"


def test_specials(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    ids = [tok.bos_id, *tok.encode("Maß"), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "Maß"
    assert tok.decode(ids, skip_special=False) == "<|startoftext|>Maß<|endoftext|><|pad|>"
    assert not set(tok.encode("<|endoftext|> <cap>")) & {tok.eos_id, tok.cap_id}


def test_german_word_outside_the_vocabulary_uses_pyphen_syllables():
    de = SyllableTokenizer.train([GERMAN * 3], lang="de")
    assert "häuser" in de.words and name(de, de.encode("Häuser")) == ["<cap>", "häuser"]  # frequent: whole
    word = "häuserbrücke"  # not in the text; pyphen cuts it into syllables that are
    assert word not in de.words
    syllables = syllabify(word, "de")
    assert len(syllables) > 2 and "".join(syllables) == word
    assert name(de, de.encode("Häuserbrücke")) == ["<cap>", *syllables]
    # a syllable outside the vocabulary is spelled out, the others stay whole
    spelled = name(de, de.encode("Häuserbrückenwohnungen"))
    assert "".join(spelled[1:]) == "häuserbrückenwohnungen" and "häu" in spelled
    assert len(spelled) < len("häuserbrückenwohnungen")


def test_english_uses_english_hyphenation():
    en = SyllableTokenizer.train([ENGLISH * 3], lang="en")
    parts = syllabify("hyphenation", "en")
    assert len(parts) > 1 and "".join(parts) == "hyphenation"
    assert parts != syllabify("hyphenation", "de")  # the two languages' patterns differ
    assert "com" in en.syllables and en.lang == "en"
    assert en.decode(en.encode(ENGLISH)) == ENGLISH
    assert name(en, en.encode("computing")) == ["com", *name(en, en.encode("puting"))]


def test_vocab_size_is_the_total(tok):
    sized = SyllableTokenizer.train([GERMAN], vocab_size=len(SPECIALS) + len(tok.chars) + 10)
    assert sized.vocab_size <= len(SPECIALS) + len(tok.chars) + 10
    with pytest.raises(LmzooError, match="at least"):
        SyllableTokenizer.train([GERMAN], vocab_size=10)
    with pytest.raises(LmzooError, match="de, en"):
        SyllableTokenizer.train([GERMAN], lang="fr")
    with pytest.raises(LmzooError, match="empty"):
        SyllableTokenizer.train([])


def test_save_load(tok, tmp_path):
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, SyllableTokenizer) and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(GERMAN) == tok.encode(GERMAN)
    assert get_tokenizer(tmp_path).decode(tok.encode(GERMAN)) == GERMAN
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["chars"].append("ab")
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(LmzooError, match="corrupt syllable tokenizer"):
        load_tokenizer(tmp_path)


def test_compression_on_faust(shared_data):
    path = shared_data / "german" / "goethe_faust.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    tok = train_tokenizer("syllable", path)
    stats = tokenizer_stats(tok, [text])
    assert stats["chars_per_token"] > 1
    assert stats["unk_tokens"] == 0
    assert tok.decode(tok.encode(text)) == text


def test_stats_function():
    stats = tokenizer_stats(ByteTokenizer(), ["Maß", "ab"])
    assert stats["tokens"] == stats["bytes"] == 6 and stats["characters"] == 5
    assert stats["unk_share"] == 0 and stats["bytes_per_token"] == 1


def test_cli_train_and_stats(tmp_path, capsys):
    corpus = tmp_path / "de.txt"
    corpus.write_text(GERMAN * 5, encoding="utf-8")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", str(corpus), "--kind", "syllable", "--lang", "de",
                 "--vocab-size", "150", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "syllable" and summary["vocab_size"] <= 150
    assert load_tokenizer(out).lang == "de"

    other = tmp_path / "other.txt"
    other.write_text("Stadt 😀\n", encoding="utf-8")
    assert main(["tokenizer", "stats", str(out), str(other), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["unk_tokens"] == 1 and stats["characters"] == 8
    assert main(["tokenizer", "stats", str(out), str(corpus)]) == 0
    printed = capsys.readouterr().out
    assert "chars/token" in printed and "compression ratio vs characters" in printed
    assert main(["tokenizer", "stats", "bytes", str(corpus)]) == 0
    assert "no <unk> token" in capsys.readouterr().out
    assert main(["tokenizer", "stats", "char", str(corpus), "--json"]) == 0  # a kind: trained on the files
    stats = json.loads(capsys.readouterr().out)
    assert stats["trained_on_files"] and stats["chars_per_token"] == 1 and stats["unk_tokens"] == 0

    assert main(["tokenizer", "train", str(corpus), "--kind", "char", "--lang", "de", "--out", str(out)]) == 2
    assert "only apply to --kind syllable" in capsys.readouterr().err
