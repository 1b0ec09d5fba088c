"""How hard a training window is: the difficulty scorers behind `--curriculum`.

A *window* is one of the train split's non-overlapping, aligned runs of `seq_len` tokens
(window i = tokens [i*seq_len, (i+1)*seq_len)). A scorer gives each window one float, higher
meaning harder:

  stages          the Spike-Walze seed's sentence-length stage, 0..3 for A..D (below)
  length          mean words per sentence
  compression     zlib-compressed size / UTF-8 size: repetitive text compresses well, so it is easy
  reference-loss  mean next-token loss of a small saved lmzoo model (batched forward, no grad)

The text scorers read the window decoded with the dataset's tokenizer; documents inside a
window (cut at eos) are joined by a blank line, which always ends a sentence.

Seed stage of one sentence: A < 12 words, B 12-24, C 25-44 or >= 45 with a comma, D >= 45
without a comma. A window's stage is the upper median of its sentences' stages, where the
first and last sentence (cut by the window's edges, so shorter than they really are) are left
out when at least one other sentence remains. The median, rather than the hardest or the mean,
keeps one outlier sentence from deciding a window of many; taking the upper of two middle
values leans towards the harder stage, which makes up for the truncated edge sentences. A
window inside one long sentence gets the stage of its visible part (a lower bound).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lmzoo.data.sentences import count_words, split_sentences
from lmzoo.errors import LmzooError

STAGE_NAMES = ("A", "B", "C", "D")
N_STAGES = len(STAGE_NAMES)
TEXT_CHUNK = 1024  # windows read and decoded per memmap gather
SUBSET_STREAM = 0x5C0E  # keeps the subset's random stream apart from the batches'


# ---- text scorers ----------------------------------------------------------------------------
def sentence_stage(words: int, has_comma: bool) -> int:
    """The seed's stage (0..3 = A..D) of one sentence of `words` words."""
    if words < 12:
        return 0
    if words < 25:
        return 1
    return 2 if words < 45 or has_comma else 3


def _inner_sentences(text: str, lang: str) -> list[str]:
    sentences = split_sentences(text, lang=lang)
    return sentences[1:-1] if len(sentences) >= 3 else sentences


def stage_of_text(text: str, lang: str = "de") -> float:
    """Upper median of the stages of the text's sentences (see the module docstring); 0 if none."""
    stages = sorted(sentence_stage(count_words(s), "," in s) for s in _inner_sentences(text, lang))
    return float(stages[len(stages) // 2]) if stages else 0.0


def mean_sentence_words(text: str, lang: str = "de") -> float:
    sentences = _inner_sentences(text, lang)
    return sum(map(count_words, sentences)) / len(sentences) if sentences else 0.0


def compression_ratio(text: str, lang: str = "de") -> float:
    """zlib-compressed bytes per UTF-8 byte (`lang` is unused; all text scorers take it)."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 6)) / max(len(raw), 1)


TEXT_SCORERS: dict[str, Callable[[str, str], float]] = {
    "stages": stage_of_text, "length": mean_sentence_words, "compression": compression_ratio}
SCORERS = (*TEXT_SCORERS, "reference-loss")


def stages_from_scores(scores: np.ndarray, scorer: str) -> np.ndarray:
    """Stage 0..3 per window: the seed stage itself for `stages`, else the score's quartile.

    Quartile edges are score values, so equal scores always share a stage.
    """
    if scorer == "stages":
        return scores.astype(np.int64)
    edges = np.quantile(scores, [0.25, 0.5, 0.75])
    return np.searchsorted(edges, scores, side="left").astype(np.int64)


# ---- windows -----------------------------------------------------------------------------------
def window_count(dataset, seq_len: int) -> int:
    return dataset.tokens // seq_len


def select_windows(n_windows: int, max_windows: int, seed: int) -> np.ndarray:
    """All window ids, or a seeded random subset of `max_windows` of them (sorted); 0 = all."""
    if max_windows <= 0 or n_windows <= max_windows:
        return np.arange(n_windows, dtype=np.int64)
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    return np.sort(rng.choice(n_windows, size=max_windows, replace=False)).astype(np.int64)


def window_tokens(dataset, windows: np.ndarray, seq_len: int) -> np.ndarray:
    """Tokens of the given window ids, [len(windows), seq_len], in one memmap gather."""
    offsets = np.asarray(windows, dtype=np.int64)[:, None] * seq_len + np.arange(seq_len)
    return np.asarray(dataset.data[offsets])


def window_text(ids: np.ndarray, tokenizer) -> str:
    """The window as text, documents (split at eos) separated by a blank line."""
    parts = np.split(ids, np.flatnonzero(ids == tokenizer.eos_id))
    return "\n\n".join(tokenizer.decode(part) for part in parts)


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    # None: shown on a terminal only, like the training bar.
    return tqdm(total=total, desc=desc, unit="window", dynamic_ncols=True, disable=None if progress else True)


def text_scores(dataset, windows: np.ndarray, seq_len: int, scorer: str, lang: str = "de",
                progress: bool = False) -> np.ndarray:
    """Scores of a text scorer, reading and decoding `TEXT_CHUNK` windows at a time."""
    score = TEXT_SCORERS[scorer]
    tokenizer = dataset.tokenizer
    out = np.empty(len(windows), dtype=np.float64)
    with _bar(len(windows), f"scoring windows ({scorer})", progress) as bar:
        for lo in range(0, len(windows), TEXT_CHUNK):
            chunk = window_tokens(dataset, windows[lo:lo + TEXT_CHUNK], seq_len)
            out[lo:lo + len(chunk)] = [score(window_text(ids, tokenizer), lang) for ids in chunk]
            bar.update(len(chunk))
    return out


def row_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each row, [batch]."""
    batch, length = ids.shape
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat, ids[:, 1:].reshape(-1), reduction="none").view(batch, length - 1).mean(1)


@torch.no_grad()
def reference_losses(model: torch.nn.Module, dataset, windows: np.ndarray, seq_len: int, *, batch_size: int,
                     device: torch.device, autocast_dtype: torch.dtype | None = None,
                     progress: bool = False) -> np.ndarray:
    """Per-window loss of `model`: batched forwards, results kept on the device until the end."""
    if seq_len < 2:
        raise LmzooError("reference-loss scoring needs seq_len >= 2 (a window must predict a token)")
    model.eval()
    out = torch.empty(len(windows), device=device)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                else contextlib.nullcontext())
    with _bar(len(windows), "scoring windows (reference-loss)", progress) as bar:
        for lo in range(0, len(windows), batch_size):
            ids = torch.from_numpy(window_tokens(dataset, windows[lo:lo + batch_size], seq_len).astype(np.int64))
            ids = ids.to(device)
            with autocast:
                logits = model(ids).logits
            out[lo:lo + len(ids)] = row_losses(logits, ids)
            bar.update(len(ids))
    return out.double().cpu().numpy()


# ---- the score cache ---------------------------------------------------------------------------
def file_fingerprint(*paths: Path) -> str:
    """Cheap identity of files: name, size and modification time (no read of the contents)."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def data_fingerprint(dataset) -> str:
    meta = hashlib.sha256((dataset.directory / "meta.json").read_bytes()).hexdigest()
    return hashlib.sha256(f"{meta}|{file_fingerprint(dataset.path)}".encode()).hexdigest()[:16]


def cache_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"scores-{key['scorer']}-{digest}.npz"


def read_cached(path: Path, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(windows, scores) from a cache file written for exactly `key`, else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != key:
                return None
            return f["windows"].astype(np.int64), f["scores"].astype(np.float64)
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: score again


def write_cached(path: Path, key: dict, windows: np.ndarray, scores: np.ndarray) -> None:
    """Write atomically (temp file, then rename), so a killed run leaves no half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, key=np.array(json.dumps(key, sort_keys=True)), windows=windows, scores=scores)
    os.replace(tmp, path)
