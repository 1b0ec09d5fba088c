"""Reading text out of files, directories and JSONL, streamed in pieces.

Inputs are a path, a list of paths, or a zero-argument function returning documents (str).
A plain text file is one document, read in ~1 MiB pieces cut after a newline, so a
multi-GB file never sits in memory. Each JSONL line is one document (its `text_field`).
Directories are walked recursively in sorted order for determinism. `.gz` and `.bz2`
files are decompressed on the fly. Problems with the input raise a one-line LmzooError.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple, TypeVar, Union

from lmzoo.errors import LmzooError

PathLike = Union[str, os.PathLike]
Inputs = Union[PathLike, Iterable[PathLike], Callable[[], Iterable[str]]]

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
OPENERS = {".gz": gzip.open, ".bz2": bz2.open}
PIECE_BYTES = 1 << 20

T = TypeVar("T")


class Piece(NamedTuple):
    """A stretch of text; `doc_end` marks the last piece of a document."""

    text: str
    doc_end: bool


def iter_pieces(inputs: Inputs, text_field: str = "text") -> Iterator[Piece]:
    """Stream every input as pieces; raises LmzooError if the inputs hold no text at all."""
    found = False
    for piece in _iter_inputs(inputs, text_field):
        found = found or bool(piece.text)
        yield piece
    if not found:
        raise LmzooError(f"no text found in {', '.join(describe_inputs(inputs))}; pass non-empty files")


def iter_documents(inputs: Inputs, text_field: str = "text") -> Iterator[str]:
    """Whole documents as strings. A big text file becomes one big string: stream with
    `iter_pieces` instead when files may not fit in memory."""
    parts: list[str] = []
    for text, doc_end in iter_pieces(inputs, text_field):
        parts.append(text)
        if doc_end:
            yield "".join(parts)
            parts = []


def describe_inputs(inputs: Inputs) -> list[str]:
    """Names of the inputs, for metadata and error messages."""
    if callable(inputs):
        return [f"<{_callable_name(inputs)}>"]
    return [str(path) for path in _as_path_list(inputs)]


def list_files(inputs: Iterable[PathLike] | PathLike) -> list[Path]:
    """Expand directories (recursively, sorted) into the readable files they contain."""
    names = ", ".join(f"*{s}" for s in TEXT_SUFFIXES + JSONL_SUFFIXES)
    return expand_paths(_as_path_list(inputs), _is_data_file, f"{names} files (optionally .gz/.bz2)", "input")


def expand_paths(paths: Iterable[PathLike], accept: Callable[[Path, Path], bool], kind: str,
                 what: str) -> list[Path]:
    """The files `paths` name: a file as given, a directory as the files under it (recursively,
    sorted) for which `accept(file, directory)` holds. `kind` and `what` word the errors."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and accept(p, path))
            if not found:
                raise LmzooError(f"no {kind} under {path}; point at the {what} files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise LmzooError(f"{what} not found: {path}; check the path")
    return files


def visible(path: Path, root: Path) -> bool:
    """No part of `path` below `root` is hidden (a dot file or folder, e.g. lmzoo's temp files)."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _as_path_list(inputs: Iterable[PathLike] | PathLike) -> list[Path]:
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not paths:
        raise LmzooError("no inputs given; pass at least one file or directory")
    return [Path(p) for p in paths]


def _is_data_file(path: Path, root: Path) -> bool:
    # .git, editor backups and other hidden files are not data
    return visible(path, root) and _base_suffix(path) in TEXT_SUFFIXES + JSONL_SUFFIXES


def _base_suffix(path: Path) -> str:
    """".txt" for notes.txt and notes.txt.gz."""
    suffixes = path.suffixes
    if suffixes and suffixes[-1] in OPENERS:
        suffixes = suffixes[:-1]
    return suffixes[-1].lower() if suffixes else ""


def _iter_inputs(inputs: Inputs, text_field: str) -> Iterator[Piece]:
    if callable(inputs):
        yield from _iter_callable(inputs)
        return
    for path in list_files(inputs):
        if _base_suffix(path) in JSONL_SUFFIXES:
            yield from _iter_jsonl(path, text_field)
        else:
            yield from (Piece(text, last) for text, last in mark_last(_iter_text_file(path)))


def _iter_callable(make_documents: Callable[[], Iterable[str]]) -> Iterator[Piece]:
    for i, document in enumerate(make_documents()):
        if not isinstance(document, str):
            raise LmzooError(f"document {i} from {_callable_name(make_documents)} is "
                             f"{type(document).__name__}, not str; yield strings")
        if document:
            yield Piece(document, True)


def _callable_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _open_binary(path: Path) -> IO[bytes]:
    return OPENERS.get(path.suffix.lower(), open)(path, "rb")


def _iter_text_file(path: Path) -> Iterator[str]:
    """The file's text in pieces of about PIECE_BYTES, each ending after a newline when the
    piece has one. Decoding is incremental so a bad byte is reported with its offset."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes handed to the decoder so far
    carry = ""
    with _open_binary(path) as f:
        while True:
            chunk = _read_chunk(f, path)
            buffered = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                text = carry + decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                raise LmzooError(
                    f"{path} is not UTF-8 text (invalid byte at offset {offset - buffered + err.start}); "
                    "convert it, e.g. iconv -f latin1 -t utf-8"
                ) from None
            if offset == 0:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not content
            offset += len(chunk)
            if not chunk:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1 or len(text)
            carry = text[cut:]
            yield text[:cut]


def _read_chunk(f: IO[bytes], path: Path) -> bytes:
    try:
        return f.read(PIECE_BYTES)
    except (OSError, EOFError) as err:  # gzip/bz2 report corrupt or truncated data this way
        raise LmzooError(f"cannot read {path} ({err}); check that the file is complete") from None


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each non-blank line of a JSONL file (.gz/.bz2 too); `where` is
    "path:line". Bad UTF-8, invalid JSON or a line that is not an object is a one-line error."""
    with _open_binary(path) as lines:
        # Decoding line by line (not through a text wrapper) pins errors to the right line.
        for lineno, raw in enumerate(lines, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise LmzooError(f"{path} is not UTF-8 text (line {lineno}); re-save it as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LmzooError(f"{where}: invalid JSON ({err.msg}); fix or remove the line") from None
            if not isinstance(record, dict):
                raise LmzooError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
            yield where, record


def record_text(record: dict, where: str, text_field: str) -> str:
    """The string in `record[text_field]`, or a one-line error naming the line and the fields."""
    if text_field not in record:
        fields = ", ".join(map(str, record)) or "none"
        raise LmzooError(f"{where}: no '{text_field}' field (fields: {fields}); choose one with --text-field")
    text = record[text_field]
    if not isinstance(text, str):
        raise LmzooError(f"{where}: field '{text_field}' is {type(text).__name__}, not a string; pick a text field")
    return text


def _iter_jsonl(path: Path, text_field: str) -> Iterator[Piece]:
    for where, record in iter_jsonl(path):
        text = record_text(record, where, text_field)
        if text:
            yield Piece(text, True)


def mark_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Pair each item with whether it is the last one (needs a one-item lookahead)."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True
