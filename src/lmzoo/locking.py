"""One writer per output: an exclusive lock on every file or directory an lmzoo verb writes.

The lock of an output `runs/x` is the hidden file `runs/.x.lock` beside it (beside, not inside,
because some outputs are directories replaced in one rename). It is held with `fcntl.flock`,
which the kernel releases when the holder exits, killed or not: a lock file left by a dead
process blocks nobody, and the next run simply takes it. The holder writes its pid into the
file, so a refused run can name the process it waits for. The file is removed on release.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from lmzoo.errors import LmzooError

_PID_LINE = re.compile(rb"^\d*\n?$")  # what lmzoo writes into a lock file (empty while being written)
_held: set[Path] = set()  # lock files this process holds: nested locks on one output are free


def lock_path(output: str | os.PathLike) -> Path:
    output = Path(output).resolve()
    if not output.name:
        raise LmzooError(f"cannot write an output at {output}; name a file or directory below it")
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, flag: str = "--out") -> Iterator[None]:
    """Hold the lock of `output` for the block; raise a one-line LmzooError naming the holder's
    pid when another live process holds it. `flag` is how the error names the option."""
    path = lock_path(output)
    if path in _held:
        yield
        return
    fd = _acquire(path, f"{flag} {output}")
    if fd is None:  # a file system without flock: proceed unlocked, as warned
        yield
        return
    _held.add(path)
    try:
        yield
    finally:
        _held.discard(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before closing: a process that opened it meanwhile sees a stale inode (below)
        os.close(fd)


def _acquire(path: Path, what: str) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LmzooError(f"{what} is in use by another lmzoo process ({holder}); wait for it to finish "
                             "or choose another output") from None
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            print(f"lmzoo: warning: cannot lock {path} ({err.strerror}); make sure no other run writes {what}",
                  file=sys.stderr)
            return None
        # The previous holder unlinks the file on release; a lock won on that unlinked inode
        # would not exclude the next process, which creates a new file. Try again on the new one.
        if _same_file(fd, path):
            break
        os.close(fd)
    content = os.pread(fd, 64, 0)
    if not _PID_LINE.match(content):
        os.close(fd)
        raise LmzooError(f"{path} exists and is not an lmzoo lock file; move it away or choose another output")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read_pid(fd: int) -> str:
    pid = os.pread(fd, 64, 0).strip()
    return f"pid {pid.decode()}" if pid.isdigit() else "pid unknown"
