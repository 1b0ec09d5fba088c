"""Crash-safe file writing: a reader sees the old version or the new one, never half of one.

Also the rules that keep lmzoo from destroying what it did not write: an existing output is
replaced only when it is recognisably lmzoo's own output of the same kind, temp files are
removed only when the process that made them is dead, and a torn last line is cut off an
append-only JSONL file only after every line has been checked to be the writer's own.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lmzoo.errors import LmzooError

_TEMP_PID = re.compile(r"\.tmp-(\d+)-")  # atomic_directory's temp names carry their writer's pid
MAX_OWN_FILE_BYTES = 1 << 28  # a report lmzoo wrote is smaller; a bigger file is not read to find out


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left after a failed write; this process's own temp name
    _fsync_dir(path.parent)


def check_replaceable(path: str | Path, is_own: Callable[[Path], bool], what: str) -> None:
    """Raise unless `path` is absent, an empty directory, or a directory that `is_own` recognises
    as lmzoo's own `what` -- the only things lmzoo may replace."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise LmzooError(f"{path} exists and is not a directory; lmzoo will not replace it: choose another path")
    if next(path.iterdir(), None) is None or is_own(path):
        return
    raise LmzooError(f"{path} is not empty and not an lmzoo {what}; lmzoo replaces only its own output of that "
                     "kind: choose a new or empty directory")


def check_own_file(path: str | Path, is_own: Callable[[str], bool], what: str) -> None:
    """Raise unless `path` is absent or a file whose text `is_own` recognises as an earlier `what`."""
    path = Path(path)
    if path.is_dir():
        raise LmzooError(f"{path} is a directory; name a file")
    if not path.exists():
        return
    try:
        ours = path.stat().st_size < MAX_OWN_FILE_BYTES and is_own(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise LmzooError(f"{path} exists and is not an lmzoo {what}; lmzoo will not overwrite it: "
                         "choose another path")


def replace_own_file(path: str | Path, text: str, is_own: Callable[[str], bool], what: str) -> None:
    """Write `text` to `path` in one rename; an existing file must pass `check_own_file`."""
    check_own_file(path, is_own, what)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def is_json_with(*keys: str) -> Callable[[str], bool]:
    """For `check_own_file`: a JSON object holding `keys` (a report lmzoo wrote)."""
    def check(text: str) -> bool:
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(text)
            return isinstance(data, dict) and all(key in data for key in keys)
        return False
    return check


def is_jsonl_with(*keys: str) -> Callable[[str], bool]:
    """For `check_own_file`: JSON lines, each an object holding `keys`."""
    line_is_own = is_json_with(*keys)

    def check(text: str) -> bool:
        return all(line_is_own(line) for line in text.splitlines() if line.strip())
    return check


@contextlib.contextmanager
def atomic_directory(path: str | Path, is_own: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    An existing `path` must pass `check_replaceable` (checked before and again just before the
    swap). It is moved aside first and deleted only after the new one is in place, so a crash
    at any point leaves either the old or the new directory intact.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()  # replace what the link points to, keep the link
    check_replaceable(path, is_own, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a saved model is meant to be shared
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        check_replaceable(path, is_own, what)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def holds_only(path: Path, names: Iterable[str], required: str | None = None) -> bool:
    """True when every entry of directory `path` is a file named in `names` (and `required` is one)."""
    entries = list(path.iterdir())
    allowed = set(names)
    return (all(p.name in allowed and p.is_file() and not p.is_symlink() for p in entries)
            and (required is None or (path / required).is_file()))


def _pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def remove_dead_temps(root: str | Path, pattern: str) -> list[Path]:
    """Delete the `atomic_directory` temp directories matching `pattern` under `root` whose writer
    process is dead; a live writer's, and any whose writer is unknown, are left alone."""
    removed = []
    root = Path(root)
    for path in sorted(root.glob(pattern)) if root.is_dir() else ():
        match = _TEMP_PID.search(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _pid_is_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read_own_jsonl(path: Path, is_own: Callable[[dict[str, Any]], bool], starts: tuple[bytes, ...],
                   what: str) -> list[tuple[int, dict[str, Any]]]:
    """`(end offset, record)` of each line of an append-only JSONL file lmzoo writes, `[]` if absent.

    Every complete line must be a JSON object passing `is_own`, else a one-line LmzooError says
    the file is not a `what`. Only then is a torn last line (a crash mid-write) cut off the file,
    and only if it begins like a line of ours (with, or as a piece of, one of `starts`).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    refuse = LmzooError(f"{path} is not a {what}; lmzoo will not change it: choose another --out")
    lines, offset = [], 0
    for raw in data[:end].splitlines(keepends=True):
        offset += len(raw)
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise refuse from None
        if not isinstance(record, dict) or not is_own(record):
            raise refuse
        lines.append((offset, record))
    torn = data[end:]
    if torn:
        if not any(torn.startswith(s) or s.startswith(torn) for s in starts):
            raise refuse
        with open(path, "r+b") as f:
            f.truncate(end)
    return lines


def read_format_json(path: Path, fmt: str, version: int, what: str, fix: str) -> dict[str, Any]:
    """Read a JSON file stamped `{"format": fmt, "format_version": <= version}`, or raise a
    one-line LmzooError that names the file and ends with `fix`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LmzooError(f"corrupt {what} {path} ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise LmzooError(f"{path} is not an lmzoo {what} (no \"format\": \"{fmt}\"); {fix}")
    if data.get("format_version", 0) > version:
        raise LmzooError(f"{path} was written by a newer lmzoo (format {data['format_version']}); upgrade lmzoo")
    return data
