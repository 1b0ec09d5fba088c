"""The text of a stream of generated tokens, released piece by piece as it becomes final.

Two things hold text back: an incomplete UTF-8 character (byte tokenizers produce a character
over several tokens; the decoder shows it as U+FFFD until it is complete) and a tail that may be
the start of a stop string (released once it cannot be, cut off if it is).
"""
from __future__ import annotations

from collections.abc import Sequence

INCOMPLETE = "\ufffd"


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.ids: list[int] = []
        self.released = 0  # characters of the decoded text handed out so far
        self.stopped = False  # a stop string was generated; the text ends before it

    def push(self, token: int) -> str:
        """Add a token; return the text that became final (maybe empty)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            return self._release(text, cut)
        end = len(text) - self._held_tail(text)
        if text.endswith(INCOMPLETE):
            end = min(end, len(text) - 1)
        return self._release(text, end)

    def finish(self) -> str:
        """The rest of the text at the end (an incomplete character stays U+FFFD)."""
        if self.stopped:
            return ""
        return self._release(self.tokenizer.decode(self.ids), None)

    def _release(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else max(end, self.released)
        piece, self.released = text[self.released:end], end
        return piece

    def _stop_at(self, text: str) -> int | None:
        # A stop string may begin up to its length before the released part (it was held back).
        start = max(self.released - max((len(s) for s in self.stop), default=0), 0)
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held_tail(self, text: str) -> int:
        """Length of the longest end of `text` that a stop string starts with."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest
