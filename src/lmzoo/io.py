"""Crash-safe file writing: a reader sees the old version or the new one, never half of one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    An existing `path` is moved aside first and deleted only after the new one is in place,
    so a crash at any point leaves either the old or the new directory intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a saved model is meant to be shared
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_format_json(path: Path, fmt: str, version: int, what: str, fix: str) -> dict[str, Any]:
    """Read a JSON file stamped `{"format": fmt, "format_version": <= version}`, or raise a
    one-line LmzooError that names the file and ends with `fix`."""
    from lmzoo.errors import LmzooError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LmzooError(f"corrupt {what} {path} ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise LmzooError(f"{path} is not an lmzoo {what} (no \"format\": \"{fmt}\"); {fix}")
    if data.get("format_version", 0) > version:
        raise LmzooError(f"{path} was written by a newer lmzoo (format {data['format_version']}); upgrade lmzoo")
    return data
