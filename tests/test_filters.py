"""Document filters of `prepare_dataset` / `lmzoo data prepare`: blocklist, <unk>, metadata prefixes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lmzoo.cli.main import main
from lmzoo.data import prepare_dataset, read_meta
from lmzoo.data.filters import DocumentFilters, load_blocklist, metadata_prefix
from lmzoo.errors import LmzooError
from lmzoo.tokenizers import CharTokenizer, load_tokenizer

RECORDS = [
    {"text": "Die Kraft ist Masse mal Beschleunigung.", "category": "Physik", "source": "wiki"},
    {"text": "Ein Sporn ist ein Dorn am Stiefel.", "category": "Reiten", "source": "wiki"},
    {"text": "Ein Artikel über Porn und Ähnliches.", "category": "Medien"},
    {"text": "Spam, spam, SPAMMING everywhere.", "category": ["Küche", "Humor"]},
    {"text": "Zeichen wie 😀 kennt der Tokenizer nicht.", "source": "chat"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def decode_split(out, split="train"):
    meta = read_meta(out)
    ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"])
    return load_tokenizer(out).decode(ids.tolist(), skip_special=False)


@pytest.fixture
def corpus(tmp_path):
    return write_jsonl(tmp_path / "docs.jsonl", RECORDS)


@pytest.fixture
def blocklist(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("# comments and blank lines are skipped\n\nporn\n/spam+ing/\n", encoding="utf-8")
    return path


def test_blocklist_terms_are_whole_words_and_regexes_ignore_case(blocklist):
    pattern, n = load_blocklist(blocklist)
    assert n == 2
    assert pattern.search("über PORN") and pattern.search("SPAMMING")
    assert not pattern.search("Ein Sporn") and not pattern.search("pornography") and not pattern.search("spam")


def test_blocklist_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(LmzooError, match="no entries"):
        load_blocklist(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\n/(unclosed/\n", encoding="utf-8")
    with pytest.raises(LmzooError, match=r"bad.txt:2: invalid regular expression"):
        load_blocklist(bad)
    with pytest.raises(LmzooError, match="blocklist .*missing.txt does not exist"):
        DocumentFilters(blocklist=tmp_path / "missing.txt")


def test_metadata_prefix_format():
    record = {"category": ["Küche", "Humor"], "source": "wiki\n  de", "empty": "", "none": None}
    assert metadata_prefix(record, ["category", "missing", "source", "empty", "none"]) == (
        "[category: Küche, Humor] [source: wiki de] ")


def test_prepare_with_blocklist_and_prefix(corpus, blocklist, tmp_path):
    out = tmp_path / "out"
    meta = prepare_dataset(corpus, out, val_fraction=0, blocklist=blocklist, metadata_prefix="category,source")
    text = decode_split(out)
    docs = text.split("<|endoftext|>")[:-1]
    assert docs[0] == "[category: Physik] [source: wiki] Die Kraft ist Masse mal Beschleunigung."
    assert docs[1].startswith("[category: Reiten] ")  # "Sporn" is not the blocked word "porn"
    assert docs[2] == "[source: chat] Zeichen wie 😀 kennt der Tokenizer nicht."
    assert len(docs) == 3 and meta["documents"] == 3
    filters = meta["filters"]
    assert filters["documents_in"] == 5 and filters["documents_kept"] == 3
    assert filters["blocklist"] == {"file": str(blocklist), "entries": 2, "dropped_documents": 2}
    assert filters["metadata_prefix"]["fields"] == ["category", "source"]
    assert filters["metadata_prefix"]["documents_prefixed"] == 5


def test_drop_unk_with_a_saved_tokenizer(corpus, tmp_path):
    tok_dir = tmp_path / "tok"
    CharTokenizer.train([r["text"] for r in RECORDS[:4]]).save(tok_dir)  # has never seen the emoji
    out = tmp_path / "out"
    meta = prepare_dataset(corpus, out, tokenizer=tok_dir, val_fraction=0, drop_unk=True)
    assert meta["filters"]["drop_unk"] == {"dropped_documents": 1, "dropped_paragraphs": 1}
    assert "<unk>" not in decode_split(out) and meta["documents"] == 4


def test_drop_unk_removes_only_the_paragraphs_with_unknown_characters(tmp_path):
    tok_dir = tmp_path / "tok"
    CharTokenizer.train(["Ein Absatz.\n\nNoch einer."]).save(tok_dir)
    text = "Ein Absatz.\n\nNoch einer mit 😀.\n\nNoch einer."
    meta = prepare_dataset(lambda: [text, "😀"], tmp_path / "out", tokenizer=tok_dir, val_fraction=0, drop_unk=True)
    assert meta["filters"]["drop_unk"] == {"dropped_documents": 1, "dropped_paragraphs": 2}
    assert decode_split(tmp_path / "out").split("<|endoftext|>")[0] == "Ein Absatz.\n\nNoch einer."
    with pytest.raises(LmzooError, match="needs a tokenizer with an <unk>"):
        prepare_dataset(corpus, tmp_path / "bytes", drop_unk=True)


def test_no_filter_means_no_change(corpus, tmp_path):
    plain = prepare_dataset(corpus, tmp_path / "a", val_fraction=0)
    assert "filters" not in plain
    prefix_only = prepare_dataset(corpus, tmp_path / "b", val_fraction=0, metadata_prefix=["nope", "category"])
    assert prefix_only["filters"]["metadata_prefix"]["documents_prefixed"] == 4
    assert decode_split(tmp_path / "a") == "<|endoftext|>".join(r["text"] for r in RECORDS) + "<|endoftext|>"


def test_filter_errors(corpus, tmp_path):
    with pytest.raises(LmzooError, match="no JSONL record has any of the fields"):
        prepare_dataset(corpus, tmp_path / "x", metadata_prefix="categroy")
    with pytest.raises(LmzooError, match="needs JSONL files"):
        prepare_dataset(lambda: ["a b"], tmp_path / "x", metadata_prefix="category")
    everything = tmp_path / "all.txt"
    everything.write_text("/./\n", encoding="utf-8")
    with pytest.raises(LmzooError, match="dropped all 5 documents"):
        prepare_dataset(corpus, tmp_path / "x", blocklist=everything)
    assert not (tmp_path / "x" / "train.bin").exists()


def test_text_files_pass_unprefixed_and_are_one_document(tmp_path, blocklist):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", RECORDS[:1])
    (tmp_path / "in" / "b.txt").write_text("Zeile eins\nZeile zwei mit porn\n", encoding="utf-8")
    (tmp_path / "in" / "c.txt").write_text("Sauberer Text\n", encoding="utf-8")
    meta = prepare_dataset(tmp_path / "in", tmp_path / "out", val_fraction=0, blocklist=blocklist,
                           metadata_prefix="category")
    assert decode_split(tmp_path / "out") == (
        "[category: Physik] Die Kraft ist Masse mal Beschleunigung.<|endoftext|>Sauberer Text\n<|endoftext|>")
    assert meta["filters"]["blocklist"]["dropped_documents"] == 1


def test_cli_prepare_with_each_filter(corpus, blocklist, tmp_path, capsys):
    pytest.importorskip("pyphen")
    tok_dir = tmp_path / "tok"
    assert main(["tokenizer", "train", str(corpus), "--kind", "syllable", "--out", str(tok_dir)]) == 0
    capsys.readouterr()
    # a tokenizer trained on all records knows the emoji; one trained on four of them does not
    narrow = tmp_path / "narrow.jsonl"
    write_jsonl(narrow, RECORDS[:4])
    assert main(["tokenizer", "train", str(narrow), "--kind", "syllable", "--out", str(tmp_path / "narrow")]) == 0
    capsys.readouterr()

    cases = {
        "blocklist": (["--blocklist", str(blocklist)], "blocklist dropped 2"),
        "unk": (["--drop-unk", "--tokenizer", str(tmp_path / "narrow")], "drop_unk dropped 1"),
        # trained here, on the prefixed text, so "[", ":" and "]" are in its vocabulary
        "prefix": (["--metadata-prefix", "category,source", "--tokenizer", "syllable"],
                   "5 prefixed with category, source"),
    }
    for name, (flags, expected) in cases.items():
        args = ["data", "prepare", str(corpus), "--out", str(tmp_path / name), "--val-fraction", "0"]
        if "--tokenizer" not in flags:
            args += ["--tokenizer", str(tok_dir)]
        assert main(args + flags) == 0, name
        printed = capsys.readouterr().out
        assert "filters: " in printed and expected in printed, printed
    assert decode_split(tmp_path / "prefix").startswith("[category: Physik] [source: wiki] Die Kraft")
    assert read_meta(tmp_path / "unk")["tokenizer"] == "syllable"

    assert main(["data", "prepare", str(corpus), "--out", str(tmp_path / "bad"), "--drop-unk"]) == 2
    assert "needs a tokenizer with an <unk>" in capsys.readouterr().err
