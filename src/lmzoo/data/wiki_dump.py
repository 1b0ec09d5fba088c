"""MediaWiki XML dumps -> plain-text articles in JSONL shards, resumable, in constant memory.

Pages stream out of a `.xml`/`.xml.bz2` dump with `mwxml` (files of bare `<page>` elements get
a minimal `<mediawiki><siteinfo>` envelope on the fly); `mwparserfromhell` turns wikitext
into text (`wikitext.py` says what is kept and removed). Redirects, non-article namespaces
(ns != 0) and articles shorter than `min_chars` after cleaning are skipped and counted.

Output: `wiki-NNNNN.jsonl` shards of `{"title", "id", "url", "text"}` lines, `summary.json`
and `progress.json`. The open shard is `wiki-NNNNN.jsonl.partial` until it is full or the
run ends without an error (a failed or interrupted run leaves it `.partial`). progress.json
is written before the first page and then, every CHECKPOINT_PAGES pages, replaced atomically
with the pages done and the bytes of the open shard they wrote; a rerun truncates that shard
to those bytes (dropping what a crash left half written) and skips the pages done, so its
shards are byte for byte those of an uninterrupted run. A directory holding shards or a
summary.json without progress.json is not a run to resume and is refused.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import os
import re
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import quote
from xml.etree.ElementTree import ParseError

from tqdm import tqdm

from lmzoo.data.sources import expand_paths, visible
from lmzoo.data.wikitext import LANG_CODE, MEDIA_NAMESPACES, Site, clean_wikitext
from lmzoo.errors import LmzooError
from lmzoo.io import read_format_json, write_json_atomic
from lmzoo.locking import output_lock

PROGRESS_FILE, SUMMARY_FILE = "progress.json", "summary.json"
PROGRESS_FORMAT, PROGRESS_VERSION = "lmzoo-wiki-progress", 1
SHARD_BYTES = 256 << 20
CHECKPOINT_PAGES = 1000
SKIP_REASONS = ("redirect", "namespace", "too_short")
INSTALL_HINT = "pip install 'lmzoo[wiki]'"

DUMP_SUFFIXES = (".xml", ".bz2", ".gz")  # in a directory, of names holding ".xml" (…articles1.xml-p1p297012.bz2)
SHARD_NAME = re.compile(r"^wiki-(\d{5,})\.jsonl(?:\.partial)?$")
ROOT_TAG = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml.*?\?>\s*)?(?:<!--.*?-->\s*)*<([A-Za-z_][\w:.-]*)",
                      re.DOTALL)
REDIRECT = re.compile(r"^\s*#(?:redirect|weiterleitung)\b", re.IGNORECASE)


# --- reading ----------------------------------------------------------------------------

class PageFields(NamedTuple):
    """What cleaning needs of a page (picklable for worker processes, unlike mwxml's Page)."""

    namespace: int
    redirect: bool
    title: str
    id: int
    wikitext: str


class _ChainedReader:
    """Byte streams read one after another; all that XML parsing needs of a file."""

    def __init__(self, parts: list[bytes | IO[bytes]]):
        self._parts = [io.BytesIO(p) if isinstance(p, bytes) else p for p in parts]

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            data = self._parts[0].read(size if size >= 0 else 1 << 20)
            if data:
                return data
            self._parts.pop(0).close()
        return b""

    def close(self) -> None:
        for part in self._parts:
            part.close()


def _open_dump(path: Path, lang: str) -> _ChainedReader:
    """The dump as XML bytes; a file of bare <page> elements gets a <mediawiki> envelope."""
    with open(path, "rb") as f:
        magic = f.read(3)
    f = (bz2.open if magic == b"BZh" else gzip.open if magic[:2] == b"\x1f\x8b" else open)(path, "rb")
    head = f.read(1 << 16)
    match = ROOT_TAG.match(head)
    root = match.group(1).decode() if match else ""
    if root == "mediawiki":
        return _ChainedReader([head, f])
    if root == "page":
        start = (f'<mediawiki xml:lang="{lang}"><siteinfo><dbname>{lang}wiki</dbname>'
                 f"<base>https://{lang}.wikipedia.org/wiki/</base></siteinfo>\n").encode()
        return _ChainedReader([start, head[match.start(1) - 1:], f, b"\n</mediawiki>\n"])
    f.close()
    found = f"<{root}>" if root else "no XML" if head.strip() else "an empty file"
    raise LmzooError(f"{path} is not a MediaWiki XML dump (found {found}); pass a pages-articles "
                     ".xml or .xml.bz2 file, or files of <page> elements")


def _iter_pages(path: Path, lang: str, skip: int) -> Iterator[tuple[PageFields, Site]]:
    """The pages of one dump after the first `skip`; read and XML errors become LmzooErrors."""
    import mwxml

    try:
        with contextlib.closing(_open_dump(path, lang)) as reader:
            dump = mwxml.Dump.from_file(reader)
            site = _site(dump.site_info)
            for i, page in enumerate(dump.pages):
                if i >= skip:
                    text = None
                    for revision in page:  # a pages-articles dump has one revision; keep the newest
                        text = revision.text
                    yield PageFields(page.namespace, bool(page.redirect), page.title, page.id, text or ""), site
    except (OSError, EOFError) as err:
        raise _read_error(path, err) from None
    except (ParseError, mwxml.errors.MalformedXML) as err:
        raise LmzooError(f"{path}: malformed XML ({str(err).splitlines()[0][:200]}); the dump is "
                         "truncated or corrupt, download it again") from None


def _check_dumps(files: list[Path], lang: str) -> None:
    """Fail on a wrong or unreadable file before anything is written."""
    for path in files:
        try:
            _open_dump(path, lang).close()
        except (OSError, EOFError) as err:
            raise _read_error(path, err) from None


def _read_error(path: Path, err: Exception) -> LmzooError:
    # bz2 and gzip report corrupt or truncated data as OSError or EOFError
    return LmzooError(f"cannot read {path} ({err}); the file is corrupt or incomplete, download it again")


def _site(info: Any) -> Site:
    names = {ns.id: (ns.name or "").lower() for ns in info.namespaces or []}
    return Site(base_url=info.base.rsplit("/", 1)[0] + "/" if info.base else "",
                media_prefixes=MEDIA_NAMESPACES | {names[i] for i in (-2, 6, 14) if i in names},
                namespace_names=set(names.values()))


def list_dump_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The dump files named by `paths`; a directory means its *.xml[*.bz2|*.gz] files, sorted."""
    files = expand_paths(paths, _is_dump_file, "*.xml or *.xml.bz2 files", "dump")
    if not files:
        raise LmzooError("no dump given; pass a .xml or .xml.bz2 file or a directory of them")
    return files


def _is_dump_file(path: Path, root: Path) -> bool:
    return visible(path, root) and ".xml" in path.name.lower() and path.name.lower().endswith(DUMP_SUFFIXES)


# --- writing, resumably -----------------------------------------------------------------

@dataclass
class _Progress:
    """Everything a rerun needs; the counts cover all runs into one output directory."""

    file_index: int = 0  # the input file being read
    pages_in_file: int = 0  # pages of that file already handled
    shard_index: int = 0  # the open shard
    shard_bytes: int = 0  # bytes of the open shard written for the handled pages
    pages: int = 0
    articles: int = 0
    text_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    complete: bool = False


def _shard_path(out_dir: Path, index: int, partial: bool = False) -> Path:
    return out_dir / f"wiki-{index:05d}.jsonl{'.partial' if partial else ''}"


class _ShardWriter:
    """Appends JSON lines to the open shard, giving it its final name when it is full."""

    def __init__(self, out_dir: Path, index: int, nbytes: int, limit: int):
        self.out_dir, self.index, self.limit = out_dir, index, limit
        self._reopen(nbytes)

    def _reopen(self, nbytes: int) -> None:
        """Open shard `index` truncated to `nbytes`; later shards are debris of a crash."""
        for path in self.out_dir.iterdir():
            match = SHARD_NAME.match(path.name)
            if match and int(match.group(1)) > self.index:
                path.unlink()
        partial, final = _shard_path(self.out_dir, self.index, True), _shard_path(self.out_dir, self.index)
        if final.exists() and not partial.exists():
            os.replace(final, partial)  # the last run ended (or crashed) after naming it final
        size = partial.stat().st_size if partial.exists() else 0
        if size < nbytes:
            raise LmzooError(f"{partial} is shorter than {PROGRESS_FILE} says ({size} < {nbytes} bytes); "
                             "delete the output directory and start again")
        self.file = open(partial, "a+b")  # noqa: SIM115  open as long as the writer
        self.file.truncate(nbytes)
        self.bytes = nbytes

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        if self.bytes and self.bytes + len(line) > self.limit:
            self.finish()
            self.index += 1
            self._reopen(0)
        self.file.write(line)
        self.bytes += len(line)

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish(self, final: bool = True) -> None:
        """Close the open shard, under its final name if `final` (else it stays `.partial`, as
        after a failed run); an empty one is deleted."""
        self.sync()
        self.file.close()
        partial = _shard_path(self.out_dir, self.index, True)
        if not self.bytes:
            partial.unlink()
        elif final:
            os.replace(partial, _shard_path(self.out_dir, self.index))


def extract_wiki_dump(dumps: Iterable[str | os.PathLike] | str | os.PathLike, out_dir: str | os.PathLike, *,
                      min_chars: int = 200, max_articles: int | None = None, lang: str = "de",
                      workers: int = 1, shard_bytes: int = SHARD_BYTES, progress: bool = False) -> dict[str, Any]:
    """Write the articles of MediaWiki XML `dumps` as JSONL shards to `out_dir`; return the summary.

    A rerun into the same `out_dir` resumes where the last one stopped. `max_articles` caps
    the articles in the output (all runs together). `lang` names the wiki of dumps without a
    <siteinfo> (bare <page> files), for URLs. `workers` > 1 cleans pages in that many processes.
    """
    _require_libraries()
    if not LANG_CODE.match(lang):
        raise LmzooError(f"lang must be a Wikipedia language code such as de or en, got {lang!r}")
    if min_chars < 0 or (max_articles is not None and max_articles < 1) or workers < 1 or shard_bytes < 1:
        raise LmzooError("min_chars must be >= 0; max_articles, workers and shard_bytes must be positive")
    files = list_dump_files([dumps] if isinstance(dumps, (str, os.PathLike)) else dumps)
    _check_dumps(files, lang)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LmzooError(f"output path {out_dir} is a file; choose a directory")
    run = {"inputs": [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in files],
           "min_chars": min_chars, "lang": lang, "shard_bytes": shard_bytes}
    with output_lock(out_dir):  # one writer per directory: two runs would write the same shards
        out_dir.mkdir(parents=True, exist_ok=True)
        state = _load_progress(out_dir, run)
        if not state.complete and (max_articles is None or state.articles < max_articles):
            _extract(files, out_dir, run, state, max_articles, workers, progress)
        return _write_summary(out_dir, run, state)


def _require_libraries() -> None:
    try:
        import mwparserfromhell  # noqa: F401
        import mwxml  # noqa: F401
    except ImportError as err:
        raise LmzooError(f"reading Wikipedia dumps needs {err.name}; {INSTALL_HINT}") from None


def _load_progress(out_dir: Path, run: dict[str, Any]) -> _Progress:
    path = out_dir / PROGRESS_FILE
    if not path.exists():
        theirs = sorted(p.name for p in out_dir.iterdir() if SHARD_NAME.match(p.name) or p.name == SUMMARY_FILE)
        if theirs:
            raise LmzooError(f"{out_dir} holds {', '.join(theirs[:3])} but no {PROGRESS_FILE}, so not a wiki-dump "
                             "run to resume; lmzoo will not overwrite them: choose a new or empty directory")
        state = _Progress()
        _save_progress(out_dir, run, state)  # first: a run killed at once can be resumed, and the folder is ours
        return state
    fix = "delete the output directory and start again"
    data = read_format_json(path, PROGRESS_FORMAT, PROGRESS_VERSION, "wiki-dump progress file", fix)
    if data.get("run") != run:
        raise LmzooError(f"{out_dir} holds the output of a different wiki-dump run (other inputs or "
                         "settings); use a new --out directory or delete this one")
    try:
        return _Progress(**data["progress"])
    except (KeyError, TypeError):
        raise LmzooError(f"corrupt {path}; {fix}") from None


def _save_progress(out_dir: Path, run: dict[str, Any], state: _Progress) -> None:
    write_json_atomic(out_dir / PROGRESS_FILE, {"format": PROGRESS_FORMAT, "format_version": PROGRESS_VERSION,
                                                "run": run, "progress": asdict(state)})


def _extract(files: list[Path], out_dir: Path, run: dict[str, Any], state: _Progress,
             max_articles: int | None, workers: int, progress: bool) -> None:
    writer = _ShardWriter(out_dir, state.shard_index, state.shard_bytes, run["shard_bytes"])
    bar = tqdm(desc="wiki-dump", unit="page", disable=not progress, dynamic_ncols=True)
    try:
        _extract_pages(files, out_dir, run, state, max_articles, workers, writer, bar)
    except BaseException:
        writer.finish(final=False)  # every handled page is kept; the unfinished shard keeps its temp name
        raise
    else:
        writer.finish()
    finally:
        bar.close()
        _save_progress(out_dir, run, state)


def _extract_pages(files: list[Path], out_dir: Path, run: dict[str, Any], state: _Progress,
                   max_articles: int | None, workers: int, writer: _ShardWriter, bar: tqdm) -> None:
    for file_index in range(state.file_index, len(files)):
        pages = _iter_pages(files[file_index], run["lang"], state.pages_in_file)
        with contextlib.closing(_outcomes(pages, run["min_chars"], workers)) as outcomes:
            for outcome in outcomes:
                if isinstance(outcome, dict):
                    writer.write(outcome)
                _commit_page(state, outcome, writer)
                bar.update()
                if state.pages % CHECKPOINT_PAGES == 0:
                    writer.sync()
                    _save_progress(out_dir, run, state)
                    bar.set_postfix(articles=state.articles, refresh=False)
                if max_articles is not None and state.articles >= max_articles:
                    return
        state.file_index, state.pages_in_file = file_index + 1, 0
    state.complete = True


def _outcomes(pages: Iterable[tuple[PageFields, Site]], min_chars: int,
              workers: int) -> Iterator[dict[str, Any] | str]:
    """`_article` of each page, in dump order. With workers > 1, cleaning (most of the time)
    runs in a process pool at most 4 pages per worker ahead, so memory stays bounded."""
    if workers == 1:
        yield from (_article(page, site, min_chars) for page, site in pages)
        return
    pending: deque[Future | str] = deque()
    # Workers ignore Ctrl-C: the main process handles it, saving what is done.
    with ProcessPoolExecutor(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        try:
            for page, site in pages:
                reason = _skip_reason(page)  # cheap: skipped pages need no worker
                pending.append(reason or pool.submit(_article, page, site, min_chars))
                while len(pending) > 4 * workers or (pending and isinstance(pending[0], str)):
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
        finally:
            pool.shutdown(cancel_futures=True)


def _result(item: Future | str) -> dict[str, Any] | str:
    return item if isinstance(item, str) else item.result()


def _commit_page(state: _Progress, outcome: dict[str, Any] | str, writer: _ShardWriter) -> None:
    """Count one handled page; together, so a checkpoint never has a page without its line."""
    state.pages += 1
    state.pages_in_file += 1
    if isinstance(outcome, dict):
        state.articles += 1
        state.text_bytes += len(outcome["text"].encode("utf-8"))
    else:
        state.skipped[outcome] += 1
    state.shard_index, state.shard_bytes = writer.index, writer.bytes


def _skip_reason(page: PageFields) -> str | None:
    if page.namespace != 0:
        return "namespace"
    if page.redirect or REDIRECT.match(page.wikitext):
        return "redirect"
    return None


def _article(page: PageFields, site: Site, min_chars: int) -> dict[str, Any] | str:
    """The page's JSONL record, or the reason it is skipped."""
    reason = _skip_reason(page)
    if reason:
        return reason
    text = clean_wikitext(page.wikitext, site)
    if len(text) < min_chars:
        return "too_short"
    url = site.base_url + quote(page.title.replace(" ", "_"), safe="/:(),'!*_-.") if site.base_url else None
    return {"title": page.title, "id": page.id, "url": url, "text": text}


def _write_summary(out_dir: Path, run: dict[str, Any], state: _Progress) -> dict[str, Any]:
    if state.complete and state.pages == 0:
        names = ", ".join(Path(i["path"]).name for i in run["inputs"])
        raise LmzooError(f"no <page> elements in {names}; pass a MediaWiki pages-articles dump")
    summary = {"out": str(out_dir), "shards": sorted(p.name for p in out_dir.glob("wiki-*.jsonl")),
               "articles": state.articles, "text_bytes": state.text_bytes, "pages": state.pages,
               "skipped": dict(state.skipped), "complete": state.complete,
               "inputs": [i["path"] for i in run["inputs"]], "min_chars": run["min_chars"]}
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary
