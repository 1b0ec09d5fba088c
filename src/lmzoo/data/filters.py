"""Optional document filters for `prepare_dataset`: metadata prefixes, a blocklist, dropping `<unk>`.

The prefix and the blocklist work on whole documents (one JSONL record, one text file, one
string of a callable input): an article about a blocked topic goes entirely, not paragraph by
paragraph. `<unk>` is checked per paragraph (below). A plain
text file is one document, so filtering it reads it whole into memory; split big files into
JSONL records (or many files) to filter parts of them. In order:

1. `metadata_prefix` (JSONL only): each record's text becomes "[field: value] ... text" for the
   listed fields the record has (in the order given; lists are joined with ", ", runs of
   whitespace in values become one space). Text files and callable inputs have no fields and
   pass unchanged.
2. `blocklist`: a file with one entry per line; blank lines and lines starting with "#" are
   skipped. An entry written `/like this/` is a regular expression searched for anywhere; any
   other entry is a literal term matched as a whole word ("porn" does not match "Sporn" or
   "pornography"; write `/porn\\w*/` for that). Both ignore case. A document (prefix included)
   that matches any entry is dropped.
3. `drop_unk`: works on chunks, as the seed proposed: each paragraph (text between blank lines)
   whose tokens include the tokenizer's `<unk>` is removed, and a document left with no paragraph
   is dropped (needs a kind that has an `<unk>`: char or syllable). This encodes each document
   once more. One rare character thus costs its paragraph, not its article.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lmzoo.data import sources
from lmzoo.data.sources import Inputs, Piece, describe_inputs, iter_pieces
from lmzoo.errors import LmzooError
from lmzoo.paths import read_utf8
from lmzoo.tokenizers import Tokenizer


class DocumentFilters:
    """The filters of one `prepare_dataset` call; `apply` counts what each one dropped in `report`."""

    def __init__(self, *, drop_unk: bool = False, blocklist: str | os.PathLike | None = None,
                 metadata_prefix: Sequence[str] | str | None = None):
        if isinstance(metadata_prefix, str):
            metadata_prefix = [f.strip() for f in metadata_prefix.split(",")]
        self.fields = [f for f in metadata_prefix or () if f]
        if metadata_prefix is not None and not self.fields:
            raise LmzooError("metadata_prefix names no field; pass e.g. --metadata-prefix category,source")
        self.drop_unk = drop_unk
        self.blocklist = Path(blocklist) if blocklist is not None else None
        self.pattern, self.n_terms = load_blocklist(self.blocklist) if self.blocklist else (None, 0)
        self.report: dict[str, Any] = {}
        self._prefixed = 0  # documents that got a prefix, in the latest pass over the inputs

    @property
    def active(self) -> bool:
        return bool(self.fields or self.pattern or self.drop_unk)

    def pieces(self, inputs: Inputs, text_field: str) -> Iterator[Piece]:
        """The input stream, with metadata prefixes when asked for (else `iter_pieces` itself)."""
        if not self.fields:
            return iter_pieces(inputs, text_field)
        return self._prefixed_pieces(inputs, text_field)

    def apply(self, pieces: Iterable[Piece], tokenizer: Tokenizer | None) -> Iterator[Piece]:
        """Whole documents that pass the blocklist and (given a tokenizer) the `<unk>` check.

        Counts start afresh on each call, so a training pass does not add to the final report.
        """
        unk_id = None
        if self.drop_unk and tokenizer is not None:
            unk_id = getattr(tokenizer, "unk_id", None)
            if unk_id is None:
                raise LmzooError(f"--drop-unk needs a tokenizer with an <unk> token (char or syllable); "
                                 f"the {tokenizer.kind} tokenizer never produces one, drop the flag")
        counts = {"documents_in": 0, "blocklist": 0, "drop_unk": 0, "unk_paragraphs": 0}
        self.report = self._describe(counts)
        whole_documents = self.pattern is not None or unk_id is not None
        parts: list[str] = []
        for text, doc_end in pieces:
            if not whole_documents:  # only prefixes: stream the pieces as they come
                counts["documents_in"] += doc_end
                self.report = self._describe(counts)
                yield Piece(text, doc_end)
                continue
            parts.append(text)
            if not doc_end:
                continue
            document, parts = "".join(parts), []
            counts["documents_in"] += 1
            if self.pattern is not None and self.pattern.search(document):
                counts["blocklist"] += 1
            elif unk_id is not None:
                kept, dropped = _without_unk_paragraphs(document, tokenizer, unk_id)
                counts["unk_paragraphs"] += dropped
                if kept:
                    yield Piece(kept, True)
                else:
                    counts["drop_unk"] += 1
            else:
                yield Piece(document, True)
            self.report = self._describe(counts)
        if counts["documents_in"] and not self.report["documents_kept"]:
            raise LmzooError(f"the filters dropped all {counts['documents_in']} documents "
                             f"({self._dropped_text(counts)}); loosen the blocklist or drop --drop-unk")

    def _describe(self, counts: dict[str, int]) -> dict[str, Any]:
        report: dict[str, Any] = {"documents_in": counts["documents_in"],
                                  "documents_kept": counts["documents_in"] - counts["blocklist"] - counts["drop_unk"]}
        if self.fields:
            report["metadata_prefix"] = {"fields": self.fields, "format": "[field: value] ",
                                         "documents_prefixed": self._prefixed}
        if self.pattern is not None:
            report["blocklist"] = {"file": str(self.blocklist), "entries": self.n_terms,
                                   "dropped_documents": counts["blocklist"]}
        if self.drop_unk:
            report["drop_unk"] = {"dropped_documents": counts["drop_unk"],
                                  "dropped_paragraphs": counts["unk_paragraphs"]}
        return report

    @staticmethod
    def _dropped_text(counts: dict[str, int]) -> str:
        return f"blocklist {counts['blocklist']}, drop-unk {counts['drop_unk']}"

    def _prefixed_pieces(self, inputs: Inputs, text_field: str) -> Iterator[Piece]:
        if callable(inputs):
            raise LmzooError("--metadata-prefix needs JSONL files (their records hold the fields); "
                             "the inputs are a function returning strings")
        self._prefixed = 0
        found = False
        for path in sources.list_files(inputs):
            if sources._base_suffix(path) not in sources.JSONL_SUFFIXES:
                for text, last in sources.mark_last(sources._iter_text_file(path)):
                    found = found or bool(text)
                    yield Piece(text, last)
                continue
            for text, record in _iter_records(path, text_field):
                found = True
                prefix = metadata_prefix(record, self.fields)
                self._prefixed += bool(prefix)
                yield Piece(prefix + text, True)
        if not found:
            raise LmzooError(f"no text found in {', '.join(describe_inputs(inputs))}; pass non-empty files")
        if not self._prefixed:
            raise LmzooError(f"no JSONL record has any of the fields {', '.join(self.fields)}; "
                             "check the names given to --metadata-prefix")


def _without_unk_paragraphs(document: str, tokenizer: Tokenizer, unk_id: int) -> tuple[str, int]:
    """The document without its paragraphs that encode to `<unk>`, and how many were removed."""
    paragraphs = re.split(r"(\n\s*\n)", document)  # keep the separators: the text stays as written
    kept, dropped = [], 0
    for i in range(0, len(paragraphs), 2):
        separator = paragraphs[i + 1] if i + 1 < len(paragraphs) else ""
        if unk_id in tokenizer.encode(paragraphs[i]):
            dropped += 1
        else:
            kept.append(paragraphs[i] + separator)
    return "".join(kept).strip("\n") if dropped else document, dropped


def metadata_prefix(record: dict[str, Any], fields: Sequence[str]) -> str:
    """ "[category: Physik] [source: wiki] " for the `fields` that `record` has (None and "" skipped)."""
    tags = []
    for field in fields:
        value = record.get(field)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        if value is None or value == "":
            continue
        tags.append(f"[{field}: {' '.join(str(value).split())}] ")
    return "".join(tags)


def _iter_records(path: Path, text_field: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(text, record) per non-empty JSONL line; malformed lines raise the same errors as `iter_pieces`."""
    for where, record in sources.iter_jsonl(path):
        text = sources.record_text(record, where, text_field)
        if text:
            yield text, record


def load_blocklist(path: Path) -> tuple[re.Pattern[str], int]:
    """One case-insensitive pattern for all entries of the blocklist file, and the number of entries."""
    lines = read_utf8(path, "blocklist").splitlines()
    patterns = []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
            pattern = entry[1:-1]
            try:
                re.compile(pattern)
            except re.error as err:
                raise LmzooError(f"{path}:{lineno}: invalid regular expression ({err}); fix or remove the line")
        else:
            pattern = rf"(?<!\w){re.escape(entry)}(?!\w)"
        patterns.append(f"(?:{pattern})")
    if not patterns:
        raise LmzooError(f"blocklist {path} has no entries; write one term or /regex/ per line")
    return re.compile("|".join(patterns), re.IGNORECASE), len(patterns)
