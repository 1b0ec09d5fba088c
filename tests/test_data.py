"""Data pipeline: reading sources, preparing token files, memory-mapped batching."""
from __future__ import annotations

import bz2
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import lmzoo.data.prepare as prepare_module
from lmzoo.data import (
    TokenDataset,
    default_corpus_documents,
    iter_documents,
    iter_pieces,
    prepare_dataset,
    prepare_default_corpus,
    read_meta,
    sources,
)
from lmzoo.errors import LmzooError
from lmzoo.tokenizers import ByteTokenizer, CharTokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = "der die das Straße Größe über Maß und the quick brown fox 😀 jumps 12345 over lazy dog".split()


def make_text(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choices(WORDS, k=12)) + "\n" for _ in range(n_lines))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_tokens(out: Path, split: str) -> np.ndarray:
    dtype = read_meta(out)["dtype"]
    return np.fromfile(out / f"{split}.bin", dtype=dtype)


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    """About 1.3 MB of text in one file: many blocks, so the hashed split is exercised."""
    root = tmp_path_factory.mktemp("big")
    prepare_dataset(write(root / "big.txt", make_text(15000)), root / "out", val_fraction=0.2)
    return root / "out"


# --- sources -----------------------------------------------------------------------------

def test_directory_is_recursive_sorted_and_skips_other_files(tmp_path):
    write(tmp_path / "b.txt", "second")
    write(tmp_path / "a" / "z.md", "first")
    write(tmp_path / "c.jsonl", json.dumps({"text": "third"}) + "\n")
    write(tmp_path / "notes.csv", "ignored")
    write(tmp_path / ".git" / "x.txt", "hidden")
    assert list(iter_documents(tmp_path)) == ["first", "second", "third"]


def test_jsonl_text_field_and_compression(tmp_path):
    lines = "".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(["Grüße", "", "Maß"]))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "e.txt.bz2").write_bytes(bz2.compress("aus der bz2".encode()))
    assert list(iter_documents(tmp_path, text_field="body")) == ["Grüße", "Maß", "aus der bz2"]


def test_big_file_streams_in_pieces_cut_after_newlines(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 200)  # longer than a line
    text = "\ufeff" + make_text(100)
    pieces = list(iter_pieces(write(tmp_path / "big.txt", text)))
    assert len(pieces) > 10
    assert "".join(p.text for p in pieces) == text[1:]  # the byte-order mark is dropped
    assert [p.doc_end for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(p.text.endswith("\n") for p in pieces)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(LmzooError, match="input not found: .*nope.txt; check the path"):
        list(iter_documents(tmp_path / "nope.txt"))
    with pytest.raises(LmzooError, match="no inputs given"):
        list(iter_documents([]))
    with pytest.raises(LmzooError, match=r"no \*.txt, \*.md, \*.jsonl files .* under"):
        list(iter_documents(tmp_path))
    with pytest.raises(LmzooError, match="no text found in .*empty.txt"):
        list(iter_documents(write(tmp_path / "empty.txt", "")))


@pytest.mark.parametrize("piece_bytes", [7, 1 << 20])
def test_non_utf8_names_file_and_offset(tmp_path, monkeypatch, piece_bytes):
    monkeypatch.setattr(sources, "PIECE_BYTES", piece_bytes)  # 7: the bad byte lands mid-stream
    path = tmp_path / "latin1.txt"
    path.write_bytes("Grüße\n".encode() + "Maß".encode("latin-1"))
    with pytest.raises(LmzooError, match=r"latin1.txt is not UTF-8 text \(invalid byte at offset 10\); convert"):
        list(iter_documents(path))


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    write(path, '{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(LmzooError, match=r"d.jsonl:2: no 'text' field \(fields: body\); .*--text-field"):
        list(iter_documents(path))
    write(path, '{"text": "ok"}\n\n{"text": \n')
    with pytest.raises(LmzooError, match=r"d.jsonl:3: invalid JSON"):
        list(iter_documents(path))
    write(path, '{"text": 5}\n')
    with pytest.raises(LmzooError, match="field 'text' is int, not a string"):
        list(iter_documents(path))
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(LmzooError, match=r"d.jsonl is not UTF-8 text \(line 2\)"):
        list(iter_documents(path))


# --- prepare -----------------------------------------------------------------------------

def test_prepare_small_file_meta_and_nonempty_val(tmp_path):
    text = "Grüße aus Köln 😀\n" * 20
    meta = prepare_dataset(write(tmp_path / "a.txt", text), tmp_path / "out")
    assert meta == read_meta(tmp_path / "out")
    assert meta["format_version"] == 1 and meta["tokenizer"] == "bytes"
    assert (meta["vocab_size"], meta["eos_id"], meta["dtype"]) == (259, 256, "uint16")
    assert meta["documents"] == 1 and meta["seed"] == 0 and meta["val_fraction"] == 0.05
    assert meta["sources"] == [str(tmp_path / "a.txt")]
    train, val = (meta["splits"][s] for s in ("train", "val"))
    assert val["tokens"] > 0 and train["tokens"] > val["tokens"]
    assert train["bytes"] + val["bytes"] == len(text.encode())
    joined = np.concatenate([read_tokens(tmp_path / "out", "train"), read_tokens(tmp_path / "out", "val")])
    assert joined.tolist() == ByteTokenizer().encode(text) + [256]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["meta.json", "tokenizer.json",
                                                                      "train.bin", "val.bin"]


def test_prepare_directory_puts_eos_after_each_document(tmp_path):
    docs = ["erstes Dokument", "zweites über Maß", "third 😀"]
    for i, doc in enumerate(docs):
        write(tmp_path / "in" / f"{i}.txt", doc)
    meta = prepare_dataset(tmp_path / "in", tmp_path / "out", val_fraction=0)
    tok = ByteTokenizer()
    expected = [i for doc in docs for i in tok.encode(doc) + [tok.eos_id]]
    assert read_tokens(tmp_path / "out", "train").tolist() == expected
    assert meta["documents"] == 3 and meta["splits"]["val"]["tokens"] == 0


@pytest.mark.parametrize("val_fraction", [0, 0.3])
def test_blocks_keep_every_token_of_mixed_documents(tmp_path, monkeypatch, val_fraction):
    monkeypatch.setattr(prepare_module, "BLOCK_CHARS", 100)  # documents both smaller and larger than a block
    monkeypatch.setattr(sources, "PIECE_BYTES", 150)
    docs = [make_text(n, seed=n) for n in (1, 7, 2, 30, 1, 1, 12)]
    for i, doc in enumerate(docs):
        write(tmp_path / "in" / f"{i}.txt", doc)
    meta = prepare_dataset(tmp_path / "in", tmp_path / "out", val_fraction=val_fraction)
    tok = ByteTokenizer()
    expected = [i for doc in docs for i in tok.encode(doc) + [tok.eos_id]]
    train, val = (read_tokens(tmp_path / "out", s).tolist() for s in ("train", "val"))
    assert meta["documents"] == len(docs)
    assert sum(s["bytes"] for s in meta["splits"].values()) == sum(len(d.encode()) for d in docs)
    if val_fraction == 0:
        assert train == expected
    else:
        assert val and sorted(train + val) == sorted(expected)


def test_prepare_jsonl_with_text_field(tmp_path):
    path = write(tmp_path / "d.jsonl", "".join(json.dumps({"body": f"Dokument {i} über Maß"}) + "\n"
                                                 for i in range(50)))
    meta = prepare_dataset(path, tmp_path / "out", text_field="body", tokenizer="char")
    assert meta["documents"] == 50 and meta["text_field"] == "body" and meta["tokenizer"] == "char"
    ds = TokenDataset(tmp_path / "out", "train")
    assert "über Maß" in ds.tokenizer.decode(ds.data)


def test_prepare_bpe_with_vocab_size(tmp_path):
    meta = prepare_dataset(write(tmp_path / "a.txt", make_text(300)), tmp_path / "out",
                           tokenizer="bpe", vocab_size=300)
    assert meta["vocab_size"] == 300 and meta["eos_id"] == 0
    tokens = np.concatenate([read_tokens(tmp_path / "out", s) for s in ("train", "val")])
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == len(tokens)
    assert TokenDataset(tmp_path / "out").tokenizer.vocab_size == 300


def test_dtype_uint32_for_large_vocab(tmp_path):
    chars = [chr(0x20000 + i) for i in range(70000)]
    tok = CharTokenizer(chars)
    meta = prepare_dataset(write(tmp_path / "a.txt", "".join(chars[-50:]) * 3), tmp_path / "out",
                           tokenizer=tok)
    assert meta["dtype"] == "uint32"
    train = TokenDataset(tmp_path / "out").data
    assert train.dtype == np.uint32 and train.max() == tok.vocab_size - 5


def test_split_is_deterministic_and_seeded(tmp_path):
    path = write(tmp_path / "a.txt", make_text(15000))
    outs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        prepare_dataset(path, tmp_path / name, val_fraction=0.2, seed=seed)
        outs[name] = [(tmp_path / name / f"{s}.bin").read_bytes() for s in ("train", "val")]
    assert outs["a"] == outs["b"]
    assert outs["a"][1] != outs["c"][1]


def test_split_fraction_on_big_single_file(big_dataset):
    meta = read_meta(big_dataset)
    val_share = meta["splits"]["val"]["bytes"] / sum(s["bytes"] for s in meta["splits"].values())
    assert 0.05 < val_share < 0.4  # 0.2 requested, in whole ~64 KB blocks


def test_max_tokens_caps_output(tmp_path):
    meta = prepare_dataset(write(tmp_path / "a.txt", make_text(2000)), tmp_path / "out", max_tokens=1000)
    assert sum(s["tokens"] for s in meta["splits"].values()) == 1000
    assert meta["splits"]["val"]["tokens"] > 0


def test_prepare_bad_arguments(tmp_path):
    path = write(tmp_path / "a.txt", "text")
    with pytest.raises(LmzooError, match="val_fraction must be between 0 and 1, got 1.5"):
        prepare_dataset(path, tmp_path / "out", val_fraction=1.5)
    with pytest.raises(LmzooError, match="unknown tokenizer 'wordpiece'"):
        prepare_dataset(path, tmp_path / "out", tokenizer="wordpiece")
    with pytest.raises(LmzooError, match="vocab_size only applies when a tokenizer is trained"):
        prepare_dataset(path, tmp_path / "out", tokenizer=ByteTokenizer(), vocab_size=300)
    with pytest.raises(LmzooError, match="is a file; choose a directory"):
        prepare_dataset(path, path)


def test_failed_prepare_leaves_the_existing_dataset_as_it_was(tmp_path):
    out = tmp_path / "out"
    prepare_dataset(write(tmp_path / "good.txt", make_text(50)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(make_text(2000).encode() + b"\xff")
    with pytest.raises(LmzooError, match="bad.txt is not UTF-8"):
        prepare_dataset(bad, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no *.tmp left either
    assert len(TokenDataset(out)) > 0


# --- TokenDataset ------------------------------------------------------------------------

def test_dataset_reads_memmap(big_dataset):
    ds = TokenDataset(big_dataset, "val")
    meta = read_meta(big_dataset)["splits"]["val"]
    assert isinstance(ds.data, np.memmap) and not ds.data.flags.writeable
    assert len(ds) == ds.tokens == meta["tokens"] and ds.bytes == meta["bytes"]
    assert np.array_equal(ds.data, read_tokens(big_dataset, "val"))
    assert ds.vocab_size == 259 and ds.eos_id == 256
    assert ds.max_id() == int(read_tokens(big_dataset, "val").max())
    assert ds.bits_per_byte(np.log(2)) == pytest.approx(ds.tokens / ds.bytes)


def test_get_batch_is_a_pure_function_of_seed_and_step(big_dataset):
    ds = TokenDataset(big_dataset)
    batch = ds.get_batch(3, 4, 32, seed=7)
    assert batch.shape == (4, 32) and batch.dtype == torch.int64
    assert torch.equal(batch, TokenDataset(big_dataset).get_batch(3, 4, 32, seed=7))
    assert not torch.equal(batch, ds.get_batch(4, 4, 32, seed=7))
    assert not torch.equal(batch, ds.get_batch(3, 4, 32, seed=8))
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(ds.data), 32)
    for row in batch.numpy():
        assert (windows == row).all(axis=1).any()  # every row is a real window of the data


def test_get_batch_ranks_slice_the_global_batch(big_dataset):
    ds = TokenDataset(big_dataset)
    whole = ds.get_batch(5, 6, 16, seed=1)
    parts = [ds.get_batch(5, 3, 16, seed=1, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(whole, torch.cat(parts))
    assert not torch.equal(parts[0], parts[1])
    with pytest.raises(LmzooError, match="rank 2 is outside world_size 2"):
        ds.get_batch(0, 3, 16, seed=1, rank=2, world_size=2)


def test_eval_batches_cover_the_split(big_dataset):
    ds = TokenDataset(big_dataset, "val")
    batches = list(ds.iter_eval_batches(batch_size=8, seq_len=100))
    assert all(b.shape[1] == 100 for b in batches) and all(b.shape[0] == 8 for b in batches[:-1])
    flat = torch.cat(batches).flatten().numpy()
    assert np.array_equal(flat, ds.data[: len(ds) // 100 * 100])
    assert len(list(ds.iter_eval_batches(8, 100, max_batches=2))) == 2


def test_dataset_errors(tmp_path):
    with pytest.raises(LmzooError, match="dataset directory not found.*lmzoo data prepare"):
        TokenDataset(tmp_path / "missing")
    out = tmp_path / "out"
    prepare_dataset(write(tmp_path / "a.txt", make_text(20)), out)
    with pytest.raises(LmzooError, match="has no split 'test'; choose one of: train, val"):
        TokenDataset(out, "test")
    ds = TokenDataset(out, "val")
    with pytest.raises(LmzooError, match=f"only {len(ds)} tokens, fewer than seq_len 100000"):
        ds.get_batch(0, 1, 100000, seed=0)
    with pytest.raises(LmzooError, match="fewer than seq_len"):
        next(ds.iter_eval_batches(1, 100000))

    with open(out / "val.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(LmzooError, match=r"val.bin has \d+ bytes but meta.json promises \d+"):
        TokenDataset(out, "val")
    (out / "val.bin").unlink()
    with pytest.raises(LmzooError, match="val.bin is missing"):
        TokenDataset(out, "val")

    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "vocab_size": 300}))
    with pytest.raises(LmzooError, match="tokenizer vocab_size 259 does not match meta.json"):
        TokenDataset(out).tokenizer
    (out / "meta.json").write_text("{broken")
    with pytest.raises(LmzooError, match="corrupt .*meta.json"):
        TokenDataset(out)


def test_empty_split_is_a_clear_error(tmp_path):
    prepare_dataset(write(tmp_path / "a.txt", "abc"), tmp_path / "out", val_fraction=0)
    with pytest.raises(LmzooError, match="split 'val' .* is empty"):
        TokenDataset(tmp_path / "out", "val")
    meta = prepare_dataset(write(tmp_path / "b.txt", make_text(2000)), tmp_path / "all_val", val_fraction=1)
    assert meta["splits"]["val"]["tokens"] == len(make_text(2000).encode()) + 1
    with pytest.raises(LmzooError, match="split 'train' .* is empty"):
        TokenDataset(tmp_path / "all_val", "train")


# --- default corpus and shared data ------------------------------------------------------

def test_default_corpus_is_deterministic_and_sized(tmp_path):
    docs = list(default_corpus_documents())
    assert docs == list(default_corpus_documents())
    assert 1_000_000 < sum(len(d.encode()) for d in docs) < 2_500_000
    meta = prepare_default_corpus(tmp_path / "out")
    assert meta["documents"] == len(docs) and meta["splits"]["val"]["tokens"] > 0


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_tinyshakespeare_bytes(tmp_path):
    path = shared_file("tinyshakespeare.txt")
    meta = prepare_dataset(path, tmp_path / "out")
    assert sum(s["bytes"] for s in meta["splits"].values()) == path.stat().st_size
    assert sum(s["tokens"] for s in meta["splits"].values()) == path.stat().st_size + 1  # + eos
    assert TokenDataset(tmp_path / "out", "val").max_id() < 128  # ASCII only


def test_german_text_char_tokenizer(tmp_path):
    path = shared_file("german/goethe_faust.txt")
    meta = prepare_dataset(path, tmp_path / "out", tokenizer="char")
    ds = TokenDataset(tmp_path / "out")
    assert {"ä", "ö", "ü", "ß"} <= set(ds.tokenizer.chars)
    assert sum(s["bytes"] for s in meta["splits"].values()) == path.stat().st_size
    assert ds.tokenizer.unk_id not in set(ds.data.tolist())
