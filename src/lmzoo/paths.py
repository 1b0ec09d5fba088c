"""Checks of user-given paths before any work starts: one-line errors instead of a traceback
(or an output written over something else) halfway through a run."""
from __future__ import annotations

import os
from pathlib import Path

from lmzoo.errors import LmzooError


def _blocking_parent(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` if it is not a directory (nothing can be created under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A directory to create or fill: refuse an existing file or a path under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LmzooError(f"{flag} {path} is an existing file, not a directory; choose a directory path")
    blocker = _blocking_parent(path)
    if blocker is not None:
        raise LmzooError(f"{flag} {path} lies under {blocker}, which is a file; choose a directory path")
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A file to write: refuse a directory or a path under a file."""
    path = Path(path)
    if path.is_dir():
        raise LmzooError(f"{flag} {path} is a directory; pass a file path")
    blocker = _blocking_parent(path)
    if blocker is not None:
        raise LmzooError(f"{flag} {path} lies under {blocker}, which is a file; choose another path")
    return path


def check_input_file(path: str | os.PathLike, flag: str) -> Path:
    """A file to read: it must exist and not be a directory."""
    path = Path(path)
    if path.is_dir():
        raise LmzooError(f"{flag} {path} is a directory; pass a file")
    if not path.is_file():
        raise LmzooError(f"{flag} {path} does not exist; check the path")
    return path


def read_utf8(path: str | os.PathLike, flag: str) -> str:
    """The text of a UTF-8 file given by `flag`, or a one-line error naming what is wrong."""
    path = check_input_file(path, flag)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LmzooError(f"{flag} {path} is not UTF-8 text (bad byte at offset {err.start}); convert it, "
                         "e.g. iconv -f latin1 -t utf-8") from None
