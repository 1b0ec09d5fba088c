"""Turning text into `train.bin` / `val.bin` token files plus `meta.json`.

The text stream is cut into blocks of about 64K characters (after a newline where possible,
keeping documents that fit in a block whole). Block 0 always goes to train; every later block
goes to val when a seeded hash of its index falls below `val_fraction`. The split is thus
deterministic, works for one huge file as well as for many small documents, and needs no
second pass. If no block landed in val, the last block does (a lone block is cut, its tail
going to val), so any data with at least two tokens yields non-empty train and val splits.
val_fraction=1 sends everything to val (for evaluating a model on a whole file).

Everything streams: blocks are tokenised in small groups and appended to temporary files
that are renamed into place only at the end, once every input has been read; meta.json is
written last, so an interrupted run never leaves a dataset that looks valid, and a failed one
(a mistyped path, a bad file) leaves an existing dataset as it was. An existing output folder
is overwritten only if it holds an lmzoo dataset; see docs/safety.md.

Optional filters (`drop_unk`, `blocklist`, `metadata_prefix`; see `lmzoo.data.filters`) act on
whole documents before tokenising; meta.json then records them under "filters" with how many
documents each dropped. Without them the output is exactly what it was before filters existed.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lmzoo.data.dataset import FORMAT, FORMAT_VERSION, INCOMPLETE, META_FILE
from lmzoo.data.filters import DocumentFilters
from lmzoo.data.sources import Inputs, Piece, describe_inputs, list_files, mark_last
from lmzoo.errors import LmzooError
from lmzoo.io import write_json_atomic
from lmzoo.locking import output_lock
from lmzoo.tokenizers import TOKENIZER_FILE, TOKENIZER_KINDS, Tokenizer, check_tokenizer_output, get_tokenizer
from lmzoo.tokenizers.base import check_vocab_size

BLOCK_CHARS = 1 << 16
ENCODE_GROUP = 16  # blocks per encode_batch call: big enough to keep a BPE's threads busy
SPLITS = ("train", "val")
OUTPUT_FILES = ("train.bin", "val.bin", META_FILE, TOKENIZER_FILE)


@dataclass
class _Block:
    tokens: np.ndarray
    nbytes: int  # UTF-8 bytes of the text the tokens came from


def prepare_dataset(inputs: Inputs, out_dir: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer = "bytes",
                    val_fraction: float = 0.05, text_field: str = "text", seed: int = 0,
                    max_tokens: int | None = None, *, vocab_size: int | None = None,
                    progress: bool = False, drop_unk: bool = False, blocklist: str | os.PathLike | None = None,
                    metadata_prefix: str | list[str] | None = None) -> dict[str, Any]:
    """Tokenise `inputs` into `out_dir` and return the metadata written to meta.json.

    `inputs`: a file, a directory, a list of them, or a zero-argument function returning
    documents. `tokenizer`: a kind ("bytes", "char", "bpe", "syllable"; all but bytes are trained
    on the inputs first, with `vocab_size`), a saved tokenizer's path, or a Tokenizer. `max_tokens`
    caps the total number of tokens written. `drop_unk` drops documents holding the tokenizer's
    `<unk>`, `blocklist` (a file) drops documents matching its entries, `metadata_prefix` (JSONL
    field names, a list or "a,b") prefixes each record's text with "[field: value] " tags; see
    `lmzoo.data.filters`. A tokenizer trained here sees the prefixed, blocklist-filtered text.
    """
    if not 0 <= val_fraction <= 1:
        raise LmzooError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if max_tokens is not None and max_tokens < 1:
        raise LmzooError(f"max_tokens must be positive, got {max_tokens}")
    out_dir = Path(out_dir)
    filters = DocumentFilters(drop_unk=drop_unk, blocklist=blocklist, metadata_prefix=metadata_prefix)
    if not callable(inputs):
        list_files(inputs)  # a mistyped path fails now, before anything is written
    with output_lock(out_dir):
        _check_output_dir(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return _prepare(inputs, out_dir, tokenizer, val_fraction, text_field, seed, max_tokens, vocab_size,
                        progress, filters)


def _prepare(inputs: Inputs, out_dir: Path, tokenizer: str | os.PathLike | Tokenizer, val_fraction: float,
             text_field: str, seed: int, max_tokens: int | None, vocab_size: int | None, progress: bool,
             filters: DocumentFilters) -> dict[str, Any]:
    tok = _resolve_tokenizer(tokenizer, inputs, text_field, vocab_size, progress, filters)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65535 else np.uint32)
    pieces = _with_progress(filters.pieces(inputs, text_field), "tokenizing", inputs, progress)
    if filters.active:
        pieces = filters.apply(pieces, tok)
    blocks = _tokenize(_text_blocks(pieces, BLOCK_CHARS), tok, dtype)
    if max_tokens is not None:
        blocks = _truncate(blocks, max_tokens, tok)
    with _split_writers(out_dir, tok.eos_id) as writers:
        for name, block in _assign_splits(blocks, val_fraction, seed, tok):
            writers[name].write(block)
        # Every input is read and tokenised: only now is an existing dataset replaced. Its
        # meta.json must not vouch for the new files meanwhile, but still marks the folder as ours.
        write_json_atomic(out_dir / META_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                INCOMPLETE: True})
        splits = {name: writer.commit() for name, writer in writers.items()}
    tok.save(out_dir)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": tok.kind,
        "tokenizer_file": TOKENIZER_FILE,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "dtype": dtype.name,
        "splits": splits,
        "documents": sum(s["documents"] for s in splits.values()),
        "sources": describe_inputs(inputs),
        "text_field": text_field,
        "seed": seed,
        "val_fraction": val_fraction,
        "block_chars": BLOCK_CHARS,
        "max_tokens": max_tokens,
    }
    if filters.active:
        meta["filters"] = filters.report
    write_json_atomic(out_dir / META_FILE, meta)
    return meta


def _resolve_tokenizer(spec: str | os.PathLike | Tokenizer, inputs: Inputs, text_field: str,
                       vocab_size: int | None, progress: bool, filters: DocumentFilters) -> Tokenizer:
    """A kind name is trained on the inputs (a first pass over them); anything else is loaded."""
    if isinstance(spec, str) and spec in TOKENIZER_KINDS:
        cls = TOKENIZER_KINDS[spec]
        texts: Iterable[str] = ()
        if cls.needs_training:
            pieces = _with_progress(filters.pieces(inputs, text_field), f"training {spec} tokenizer", inputs,
                                    progress)
            if filters.active:
                pieces = filters.apply(pieces, None)  # no tokenizer yet, so no <unk> check
            texts = (piece.text for piece in pieces)
        check_vocab_size(vocab_size)
        return cls.train(texts, vocab_size=vocab_size)
    if vocab_size is not None:
        raise LmzooError("vocab_size only applies when a tokenizer is trained; pass a kind such as 'bpe' "
                         "or drop vocab_size")
    return get_tokenizer(spec)


def _text_blocks(pieces: Iterable[Piece], limit: int) -> Iterator[list[Piece]]:
    """Group the stream into blocks of at most `limit` characters.

    A piece that fits in a block is never split; a longer one is cut after a newline when
    the remaining room has one. Consecutive parts of one document in a block are merged.
    """
    block: list[Piece] = []
    size = 0
    for text, doc_end in pieces:
        if block and size + len(text) > limit >= len(text):
            yield block  # start a fresh block rather than split a piece that fits in one
            block, size = [], 0
        while size + len(text) > limit:
            cut = _line_cut(text, limit - size, allow_empty=bool(block))
            if cut:
                _append(block, text[:cut], False)
            yield block
            block, size = [], 0
            text = text[cut:]
        _append(block, text, doc_end)
        size += len(text)
    if block:
        yield block


def _line_cut(text: str, room: int, allow_empty: bool) -> int:
    """Where to cut `text` to fit `room` characters: after the last newline that fits, else at
    `room`, or 0 (move everything to the next block) when that is allowed."""
    after_newline = text.rfind("\n", 0, room) + 1
    if after_newline:
        return after_newline
    return 0 if allow_empty else room


def _append(block: list[Piece], text: str, doc_end: bool) -> None:
    if block and not block[-1].doc_end:  # continue the same document
        block[-1] = Piece(block[-1].text + text, doc_end)
    else:
        block.append(Piece(text, doc_end))


def _tokenize(text_blocks: Iterable[list[Piece]], tok: Tokenizer, dtype: np.dtype) -> Iterator[_Block]:
    """Token blocks, with eos appended after every document's last piece."""
    text_blocks = iter(text_blocks)
    while group := list(itertools.islice(text_blocks, ENCODE_GROUP)):
        encoded = iter(tok.encode_batch([piece.text for block in group for piece in block]))
        for block in group:
            ids: list[int] = []
            for piece in block:
                ids.extend(next(encoded))
                if piece.doc_end:
                    ids.append(tok.eos_id)
            nbytes = sum(len(piece.text.encode("utf-8")) for piece in block)
            yield _Block(np.array(ids, dtype=dtype), nbytes)


def _cut(block: _Block, k: int, tok: Tokenizer) -> tuple[_Block, _Block]:
    """Split a block after its first k tokens; byte counts come from decoding the head, exact
    for ordinary text (BPE tokens ending mid-character may be off by a byte or two)."""
    head_bytes = min(len(tok.decode(block.tokens[:k]).encode("utf-8")), block.nbytes)
    return _Block(block.tokens[:k], head_bytes), _Block(block.tokens[k:], block.nbytes - head_bytes)


def _truncate(blocks: Iterable[_Block], max_tokens: int, tok: Tokenizer) -> Iterator[_Block]:
    total = 0
    for block in blocks:
        if total + len(block.tokens) >= max_tokens:
            yield _cut(block, max_tokens - total, tok)[0]
            return
        total += len(block.tokens)
        yield block


def _assign_splits(blocks: Iterable[_Block], val_fraction: float, seed: int,
                   tok: Tokenizer) -> Iterator[tuple[str, _Block]]:
    """Pair each block with its split (see the module docstring for the rule)."""
    if val_fraction == 1:  # everything held out, e.g. to evaluate a trained model on a file
        yield from (("val", block) for block in blocks)
        return
    has_val = False
    for index, (block, last) in enumerate(mark_last(blocks)):
        if last and not has_val and val_fraction > 0 and (index > 0 or len(block.tokens) > 1):
            if index > 0:
                yield "val", block
            else:  # a single block: its head trains, its tail validates
                k = min(max(round(len(block.tokens) * (1 - val_fraction)), 1), len(block.tokens) - 1)
                head, tail = _cut(block, k, tok)
                yield "train", head
                yield "val", tail
            return
        to_val = index > 0 and _hash_fraction(seed, index) < val_fraction
        has_val = has_val or to_val
        yield ("val" if to_val else "train"), block


def _hash_fraction(seed: int, index: int) -> float:
    """A number in [0, 1) that depends only on (seed, index), stable across runs and platforms."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _SplitWriter:
    """Appends token blocks to `.<name>.bin.tmp-PID`; `commit` renames it to `<name>.bin`."""

    def __init__(self, path: Path, eos_id: int):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # hidden, this process's own
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit() or discard()
        self.eos_id = eos_id
        self.stats = {"file": path.name, "tokens": 0, "bytes": 0, "documents": 0}

    def write(self, block: _Block) -> None:
        block.tokens.tofile(self.file)
        self.stats["tokens"] += len(block.tokens)
        self.stats["bytes"] += block.nbytes
        self.stats["documents"] += int(np.count_nonzero(block.tokens == self.eos_id))

    def commit(self) -> dict[str, Any]:
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.stats

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _split_writers(out_dir: Path, eos_id: int) -> Iterator[dict[str, _SplitWriter]]:
    writers = {name: _SplitWriter(out_dir / f"{name}.bin", eos_id) for name in SPLITS}
    try:
        yield writers
    finally:
        for writer in writers.values():
            writer.discard()  # after a commit there is nothing left to remove


def _check_output_dir(out_dir: Path) -> None:
    """Files named like ours are overwritten only in a prepared dataset (an lmzoo meta.json);
    in any other folder the run writes beside what is there, or refuses."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LmzooError(f"output path {out_dir} is a file; choose a directory")
    check_tokenizer_output(out_dir)
    clashes = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if not clashes or _is_dataset_meta(out_dir / META_FILE):
        return
    raise LmzooError(f"{out_dir} holds {', '.join(clashes)} but no lmzoo {META_FILE}; lmzoo will not overwrite "
                     "files it did not write: choose another --out")


def _is_dataset_meta(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _with_progress(pieces: Iterable[Piece], desc: str, inputs: Inputs, enabled: bool) -> Iterator[Piece]:
    """Pass pieces through, advancing a bytes progress bar when enabled."""
    total = _text_size(inputs) if enabled else None
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled) as bar:
        for piece in pieces:
            if enabled:
                bar.update(len(piece.text.encode("utf-8")))
            yield piece


def _text_size(inputs: Inputs) -> int | None:
    """Total bytes when the inputs are uncompressed text files (the bar's 100%), else None."""
    if callable(inputs):
        return None
    files = list_files(inputs)
    if any(f.suffix.lower() in (".gz", ".bz2", ".jsonl") for f in files):
        return None
    return sum(f.stat().st_size for f in files)
