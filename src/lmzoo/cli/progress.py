"""Progress of a long CLI step on stderr: a tqdm bar on a terminal, a plain line now and then elsewhere.

A log file or a CI job gets no bar (tqdm's carriage returns make one line of thousands), yet a
long `eval` or `generate --context-file` should still show it is alive: it gets one line every
`interval` seconds.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class Progress:
    """`update(done)` with the running count; `close()` at the end (a context manager does it)."""

    def __init__(self, desc: str, unit: str, total: int | None = None, interval: float = LOG_INTERVAL_S,
                 file=None):
        self.desc, self.unit, self.total, self.interval = desc, unit, total, interval
        self.file = file or sys.stderr
        self.started = self.last_line = time.perf_counter()
        self.done = 0
        on_terminal = hasattr(self.file, "isatty") and self.file.isatty()
        self.bar = (tqdm(desc=desc, unit=unit, total=total, unit_scale=True, dynamic_ncols=True, file=self.file)
                    if on_terminal else None)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.perf_counter()
        if self.bar is None and now - self.last_line >= self.interval:
            self.last_line = now
            print(f"lmzoo: {self.desc}: {self.line()}", file=self.file, flush=True)

    def line(self) -> str:
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        of_total = f" of {self.total:,}" if self.total else ""
        return f"{self.done:,}{of_total} {self.unit} ({rate:,.1f} {self.unit}/s)"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
