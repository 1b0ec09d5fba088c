"""Reading prepared token files: memory-mapped, validated, and sampled statelessly.

`get_batch` is a pure function of (seed, step, rank, world_size): the windows for a step are
drawn from a generator seeded with (seed, step), so resuming needs nothing but the step and
N ranks with batch B see exactly the windows of one process with batch N*B.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmzoo.errors import LmzooError
from lmzoo.io import read_format_json
from lmzoo.tokenizers import Tokenizer, load_tokenizer

META_FILE = "meta.json"
FORMAT = "lmzoo.dataset"
FORMAT_VERSION = 1
DTYPES = ("uint16", "uint32")
INCOMPLETE = "incomplete"  # set in meta.json while `prepare` swaps in new files
REQUIRED_KEYS = ("dtype", "vocab_size", "eos_id", "tokenizer", "splits")
MAX_CHUNK = 1 << 24  # tokens per read when scanning a whole split


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """Load and sanity-check `<directory>/meta.json`."""
    directory = Path(directory)
    rerun = "run `lmzoo data prepare` on your text to create it"
    if not directory.is_dir():
        raise LmzooError(f"dataset directory not found: {directory}; {rerun}")
    path = directory / META_FILE
    if not path.is_file():
        raise LmzooError(f"{directory} has no {META_FILE} (not a prepared dataset, or preparation was interrupted); {rerun}")
    meta = read_format_json(path, FORMAT, FORMAT_VERSION, "dataset description", "re-run `lmzoo data prepare`")
    if meta.get(INCOMPLETE):
        raise LmzooError(f"{directory} is incomplete (preparation was interrupted while writing it); {rerun}")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing or meta["dtype"] not in DTYPES:
        raise LmzooError(f"{path} is damaged (missing {missing or 'nothing'}, dtype {meta.get('dtype')}); "
                         "re-run `lmzoo data prepare`")
    _check_meta_values(meta, path)
    return meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta_values(meta: dict[str, Any], path: Path) -> None:
    """Types and ranges of meta.json's values, before any of them sizes an allocation."""
    def damaged(what: str) -> LmzooError:
        return LmzooError(f"{path} is damaged ({what}); re-run `lmzoo data prepare`")

    vocab, eos = meta["vocab_size"], meta["eos_id"]
    id_limit = 1 << (8 * np.dtype(meta["dtype"]).itemsize)
    if not _is_int(vocab) or not 2 <= vocab <= id_limit:
        raise damaged(f"vocab_size {vocab!r} is not an integer in [2, {id_limit:,}] for dtype {meta['dtype']}")
    if not _is_int(eos) or not 0 <= eos < vocab:
        raise damaged(f"eos_id {eos!r} is not an id below vocab_size {vocab}")
    if not isinstance(meta["splits"], dict) or not meta["splits"]:
        raise damaged("'splits' is not a mapping of split names")
    for name, info in meta["splits"].items():
        if not isinstance(info, dict):
            raise damaged(f"split '{name}' is not a mapping")
        counts = [info.get(key) for key in ("tokens", "bytes", "documents")]
        if not all(_is_int(n) and n >= 0 for n in counts):
            raise damaged(f"split '{name}' has tokens/bytes/documents {counts}, not counts >= 0")
        if counts[0] and not counts[1]:
            raise damaged(f"split '{name}' has {counts[0]} tokens but 0 bytes of text")
        file = info.get("file")
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise damaged(f"split '{name}' names the file {file!r}, not a file name inside the dataset folder")


class TokenDataset:
    """One split ("train" or "val") of a prepared dataset, memory-mapped read-only."""

    def __init__(self, directory: str | os.PathLike, split: str = "train"):
        self.directory = Path(directory)
        self.split = split
        self.meta = read_meta(self.directory)
        splits = self.meta["splits"]
        if split not in splits:
            raise LmzooError(f"{self.directory} has no split '{split}'; choose one of: {', '.join(splits)}")
        info = splits[split]
        self.path = self.directory / info["file"]  # read_meta checked the split's values
        self.tokens = info["tokens"]
        self.bytes = info["bytes"]  # UTF-8 bytes of the text behind the tokens, for bits per byte
        self.documents = info["documents"]
        self.dtype = np.dtype(self.meta["dtype"])
        self._check_file()
        self.data = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.tokens,))

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise LmzooError(f"{self.path} is missing; re-run `lmzoo data prepare` for {self.directory}")
        expected = self.tokens * self.dtype.itemsize
        actual = self.path.stat().st_size
        if actual != expected:
            raise LmzooError(f"{self.path} has {actual} bytes but {META_FILE} promises {expected} "
                             "(truncated or from another run); re-run `lmzoo data prepare`")
        if self.tokens == 0:
            raise LmzooError(f"split '{self.split}' of {self.directory} is empty; "
                             "prepare more text, with a val_fraction strictly between 0 and 1")

    def __len__(self) -> int:
        return self.tokens

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.directory)!r}, split={self.split!r}, tokens={self.tokens}, "
                f"tokenizer={self.meta['tokenizer']!r}, vocab_size={self.vocab_size})")

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def eos_id(self) -> int:
        return self.meta["eos_id"]

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = load_tokenizer(self.directory)
        if tokenizer.vocab_size != self.vocab_size:
            raise LmzooError(f"{self.directory}: tokenizer vocab_size {tokenizer.vocab_size} does not match "
                             f"{META_FILE} ({self.vocab_size}); re-run `lmzoo data prepare`")
        return tokenizer

    def max_id(self) -> int:
        """Largest token id in the split, scanned in chunks so memory stays flat."""
        return max(int(self.data[i:i + MAX_CHUNK].max()) for i in range(0, self.tokens, MAX_CHUNK))

    def bits_per_byte(self, loss: float) -> float:
        """Convert a mean next-token loss (nats per token) on this split into bits per UTF-8 byte."""
        return loss / math.log(2) * self.tokens / self.bytes

    def get_batch(self, step: int, batch_size: int, seq_len: int, *, seed: int, rank: int = 0,
                  world_size: int = 1, device: str | torch.device = "cpu") -> torch.Tensor:
        """Random windows of `seq_len` tokens, shape [batch_size, seq_len], dtype int64.

        Step `step` draws one global batch of batch_size * world_size window starts from a
        generator seeded with (seed, step); rank r takes the r-th slice of it.
        """
        if step < 0 or seed < 0 or batch_size < 1:
            raise LmzooError(f"get_batch needs step >= 0, seed >= 0 and batch_size >= 1 "
                             f"(got {step}, {seed}, {batch_size})")
        if not 0 <= rank < world_size:
            raise LmzooError(f"rank {rank} is outside world_size {world_size}")
        self._check_seq_len(seq_len)
        rng = np.random.default_rng([seed, step])
        starts = rng.integers(0, self.tokens - seq_len + 1, size=batch_size * world_size)
        mine = starts[rank * batch_size:(rank + 1) * batch_size]
        windows = np.stack([self.data[s:s + seq_len] for s in mine])
        return _to_tensor(windows, device)

    def iter_eval_batches(self, batch_size: int, seq_len: int, max_batches: int | None = None,
                          device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """Consecutive, non-overlapping windows from the start of the split, in batches.

        Covers the split except its last partial window (dropped); the final batch may
        hold fewer than batch_size windows.
        """
        if batch_size < 1:
            raise LmzooError(f"batch_size must be >= 1, got {batch_size}")
        self._check_seq_len(seq_len)
        n_windows = self.tokens // seq_len
        for n, first in enumerate(range(0, n_windows, batch_size)):
            if max_batches is not None and n >= max_batches:
                return
            last = min(first + batch_size, n_windows)
            yield _to_tensor(self.data[first * seq_len:last * seq_len].reshape(-1, seq_len), device)

    def _check_seq_len(self, seq_len: int) -> None:
        if seq_len < 1:
            raise LmzooError(f"seq_len must be >= 1, got {seq_len}")
        if seq_len > self.tokens:
            raise LmzooError(f"split '{self.split}' of {self.directory} has only {self.tokens} tokens, "
                             f"fewer than seq_len {seq_len}; use a shorter seq_len or more data")


def _to_tensor(windows: np.ndarray, device: str | torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(windows.astype(np.int64))
    device = torch.device(device)
    if device.type == "cuda":
        # Pinned memory lets the copy overlap with compute.
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
