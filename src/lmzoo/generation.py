"""Text generation for every architecture, on top of the decoding-state API.

The prompt is fed once (prefill), then one token per step with the state carried forward:
no architecture recomputes the prefix.
"""
from __future__ import annotations

import codecs
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch

from lmzoo.batching import prefill
from lmzoo.errors import LmzooError


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style: shrink the logits of tokens already present (divide if > 0, multiply if < 0)."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass *before* it already reaches top_p (the top token always stays).
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits -> [B] token ids; temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_top_k_top_p(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def check_options(temperature: float, top_k, top_p, repetition_penalty: float, max_new_tokens: int,
                  seed: int | None = None, stop_strings: Sequence[str] = ()) -> None:
    """Sampling options, checked before anything runs: a one-line LmzooError for a bad one."""
    for name, value in (("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty)):
        if value is not None and not math.isfinite(value):
            raise LmzooError(f"{name} must be a finite number, got {value}")
    if temperature < 0:
        raise LmzooError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise LmzooError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 0:
        raise LmzooError(f"top_k must be >= 0, got {top_k}")
    if repetition_penalty <= 0:
        raise LmzooError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
    if max_new_tokens < 0:
        raise LmzooError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if seed is not None and not 0 <= seed < 2**63:
        raise LmzooError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    if any(not isinstance(s, str) or not s for s in stop_strings):
        raise LmzooError(f"stop strings must be non-empty text, got {list(stop_strings)!r}; an empty one would "
                         "stop at once")


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int = 64, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             eos_token_id: int | None = None, stop: Callable[[torch.Tensor], bool] | None = None,
             streamer=None, seed: int | None = None, state=None, logits: torch.Tensor | None = None,
             sample_vocab: int | None = None, context_ids: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """Continue `input_ids` [B, L] (all prompts the same length) by up to max_new_tokens.

    Samples that emit `eos_token_id` stop (later positions are filled with it); `stop(ids)`
    may end generation early (used for stop strings). `streamer.put(ids[B])` receives each
    new step's tokens, `streamer.end()` the end. Passing `state` continues from a context
    that was already fed (long-context streaming, see `feed`); with that context's last
    `logits` [B, V] too, `input_ids` may be empty ([B, 0]) to continue the context itself.
    Only ids below `sample_vocab` are sampled (the tokenizer's size when the model's vocabulary is
    larger: ids it cannot decode). `context_ids` (one list per row) are ids the state has already
    seen that the repetition penalty counts as well (prompts prefilled by `lmzoo.batching.prefill`).
    Returns prompt + generated ids.
    """
    check_options(temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed)
    if logits is not None and isinstance(input_ids, torch.Tensor) and input_ids.numel() == 0:
        if state is None:
            raise LmzooError("logits without a state: pass the state that feed() returned with its logits")
        device = model.device
        input_ids, logits = torch.zeros(logits.shape[0], 0, dtype=torch.long, device=device), logits.to(device)
    else:
        input_ids, logits = model.check_input_ids(input_ids), None
    was_training = model.training
    model.eval()
    batch, device = input_ids.shape[0], input_ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    if state is None:
        state = model.init_state()
    if logits is None:
        logits = model(input_ids, state=state, logits_to_keep=1).logits[:, -1]
    unsampled = None  # [V] True for ids never to sample
    if sample_vocab is not None and sample_vocab < logits.shape[-1]:
        unsampled = torch.arange(logits.shape[-1], device=device) >= sample_vocab
    seen = torch.zeros(batch, model.config.vocab_size, dtype=torch.bool, device=device)
    seen.scatter_(1, input_ids, True)
    for row, ids in enumerate(context_ids):
        seen[row, torch.as_tensor(list(ids), dtype=torch.long, device=device)] = True
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out = [input_ids]
    for _ in range(max_new_tokens):
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, repetition_penalty)
        if unsampled is not None:
            logits = logits.masked_fill(unsampled, float("-inf"))
        token = sample_next(logits, temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            token = torch.where(finished, torch.full_like(token, eos_token_id), token)
            finished |= token == eos_token_id
        out.append(token[:, None])
        seen.scatter_(1, token[:, None], True)
        if streamer is not None:
            streamer.put(token)
        if (eos_token_id is not None and bool(finished.all())) or (stop is not None and stop(torch.cat(out, 1))):
            break
        logits = model(token[:, None], state=state).logits[:, -1]
    if streamer is not None:
        streamer.end()
    model.train(was_training)
    return torch.cat(out, dim=1)


class TextStreamer:
    """Prints sample 0's text as it is generated, holding back incomplete UTF-8 sequences.

    With stop strings it prints what the non-streamed result returns: the text before the first
    stop string, holding back a tail that may still grow into one."""

    def __init__(self, tokenizer, file=None, skip_special: bool = True, stop_strings: Sequence[str] = ()):
        self.tokenizer, self.file, self.skip_special = tokenizer, file or sys.stdout, skip_special
        self.stop_strings = list(stop_strings)
        self.ids: list[int] = []
        self.printed = 0
        self.stopped = False

    def put(self, token: torch.Tensor) -> None:
        self.ids.append(int(token.reshape(-1)[0]))
        text = self.tokenizer.decode(self.ids)
        if self.stopped or text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return
        cut = _cut_at_stop(text, self.stop_strings)
        self.stopped = len(cut) < len(text)
        self._write(cut if self.stopped else text[: len(text) - _stop_prefix_length(text, self.stop_strings)])

    def end(self) -> None:
        if not self.stopped:
            self._write(_cut_at_stop(self.tokenizer.decode(self.ids), self.stop_strings))
        self.file.write("\n")
        self.file.flush()

    def _write(self, text: str) -> None:
        self.file.write(text[self.printed:])
        self.file.flush()
        self.printed = max(self.printed, len(text))


def _stop_prefix_length(text: str, stop_strings: Sequence[str]) -> int:
    """The length of the longest end of `text` that begins a stop string (it may still become one)."""
    return max((n for s in stop_strings for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def _stop_on_strings(tokenizer, prompt_len: int, stop_strings: Sequence[str]):
    def stop(ids: torch.Tensor) -> bool:
        return all(any(s in tokenizer.decode(row[prompt_len:].tolist()) for s in stop_strings) for row in ids)
    return stop


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop_strings if s in text]
    return text[: min(cuts)] if cuts else text


def generate_text(model, tokenizer, prompts: str | Sequence[str], max_new_tokens: int = 128,
                  stop_strings: Sequence[str] = (), stream: bool = False, state=None,
                  logits: torch.Tensor | None = None, **options) -> list[str]:
    """Generate continuations for text prompts of any lengths; returns the new text of each.

    All prompts decode as one batch: each length is prefilled on its own and the states joined, so
    rows sit at different positions (`lmzoo.batching.prefill`) and every sample equals its prompt
    decoded alone. An architecture that does not declare `mixed_positions` runs one batch per
    prompt length instead.

    With the `state` (and last `logits`) that `feed` returned, the single prompt continues that
    context: its text follows the fed tokens, and an empty prompt continues the context itself.
    """
    if tokenizer is None:
        raise LmzooError("generate_text needs a tokenizer, got None: pass the one the model's ids come from, e.g. "
                         "lmzoo.tokenizers.get_tokenizer('bytes'), or load a model saved with its tokenizer")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_prompts(prompts)
    check_options(options.get("temperature", 1.0), options.get("top_k"), options.get("top_p"),
                  options.get("repetition_penalty", 1.0), max_new_tokens, options.get("seed"), stop_strings)
    device = next(model.parameters()).device
    options.setdefault("eos_token_id", tokenizer.eos_id)
    options.setdefault("sample_vocab", tokenizer.vocab_size)
    stop = _stop_on_strings(tokenizer, 0, stop_strings) if stop_strings else None
    if state is not None:
        if len(prompts) != 1:
            raise LmzooError(f"a fed context continues one prompt, got {len(prompts)}; generate once per prompt")
        ids = tokenizer.encode(prompts[0])
        if not ids and logits is None:
            raise LmzooError("an empty prompt after a fed context needs the context's last logits; "
                             "pass logits= as returned by feed()")
        stop = _stop_on_strings(tokenizer, len(ids), stop_strings) if stop_strings else None
        out = generate(model, torch.tensor([ids], dtype=torch.long, device=device), max_new_tokens, stop=stop,
                       streamer=TextStreamer(tokenizer, stop_strings=stop_strings) if stream else None, state=state, logits=logits, **options)
        return [_cut_at_stop(tokenizer.decode(out[0, len(ids):].tolist()), stop_strings)]
    encoded = [tokenizer.encode(p) or [tokenizer.eos_id] for p in prompts]
    batches = [list(range(len(prompts)))]
    if not model.mixed_positions:
        lengths = [len(ids) for ids in encoded]
        batches = [[i for i in batches[0] if lengths[i] == n] for n in sorted(set(lengths))]
    results: list[str | None] = [None] * len(prompts)
    for members in batches:
        rows = [encoded[i] for i in members]
        prefilled, first = prefill(model, rows)
        streamer = TextStreamer(tokenizer, stop_strings=stop_strings) if stream and len(prompts) == 1 else None
        out = generate(model, torch.zeros(len(rows), 0, dtype=torch.long, device=device), max_new_tokens,
                       stop=stop, streamer=streamer, state=prefilled, logits=first, context_ids=rows, **options)
        for row, i in zip(out, members):
            results[i] = _cut_at_stop(tokenizer.decode(row.tolist()), stop_strings)
    return results


def check_prompts(prompts: Sequence[str]) -> None:
    """Refuse prompts that are not text, or hold characters UTF-8 cannot encode (undecodable bytes
    from the command line or stdin arrive as lone surrogates)."""
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise LmzooError(f"prompt {i} is a {type(prompt).__name__}, not text")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:
            raise LmzooError(f"prompt {i} is not valid UTF-8 (bad byte at character {err.start}); "
                             "pass UTF-8 text, e.g. convert it with iconv -t utf-8") from None


# ---- long contexts --------------------------------------------------------------------------
def feed(model, ids: Iterable[torch.Tensor] | torch.Tensor, state=None, chunk_size: int = 4096,
         progress: Callable[[int], None] | None = None):
    """Run token ids through the model in chunks of at most `chunk_size`; return (state, logits).

    `ids` is one tensor ([L] or [B, L]) or an iterable of such tensors (e.g.
    `iter_file_token_chunks`), so a huge text never has to be one tensor; the pieces are
    concatenated into the chunks. `state` continues an earlier context (default: a new one).
    `progress(n)` is called after each chunk with the tokens fed so far. The logits [B, V] are
    those of the last position: pass both to `generate`/`generate_text` to continue. Memory
    stays flat only where the architecture's state has a constant size (`model.constant_state`).
    """
    if chunk_size < 1:
        raise LmzooError(f"chunk_size must be >= 1, got {chunk_size}")
    device = model.device
    was_training = model.training
    model.eval()
    fed, logits = 0, None
    try:
        # no_grad, not inference_mode: modules cache tensors on the way (RoPE tables), and
        # inference tensors among them would break a later forward with gradients (training).
        with torch.no_grad():
            for chunk in _chunks(ids, chunk_size):
                if state is None:
                    state = model.init_state()
                logits = model(chunk.to(device), state=state, logits_to_keep=1).logits[:, -1]
                fed += chunk.shape[1]
                if progress is not None:
                    progress(fed)
    finally:
        model.train(was_training)
    if logits is None:
        raise LmzooError("nothing to feed: the ids hold no tokens; pass at least one token")
    return state, logits


def _as_batch(piece) -> torch.Tensor:
    if not isinstance(piece, torch.Tensor):
        raise LmzooError(f"feed() takes a tensor of token ids or an iterable of them, got {type(piece).__name__}")
    if piece.dim() not in (1, 2):
        raise LmzooError(f"token ids must be [length] or [batch, length], got shape {tuple(piece.shape)}")
    return piece if piece.dim() == 2 else piece[None]


def _chunks(ids, chunk_size: int) -> Iterator[torch.Tensor]:
    """[B, <= chunk_size] slices of the pieces in order, full-sized except the last."""
    pending: list[torch.Tensor] = []
    count = 0
    for piece in [ids] if isinstance(ids, torch.Tensor) else ids:
        piece = _as_batch(piece)
        if pending and piece.shape[0] != pending[0].shape[0]:
            raise LmzooError(f"all pieces must have the same batch size, got {pending[0].shape[0]} and "
                             f"{piece.shape[0]}")
        pending.append(piece)
        count += piece.shape[1]
        if count < chunk_size:
            continue
        joined = torch.cat(pending, dim=1) if len(pending) > 1 else pending[0]
        full = count - count % chunk_size
        for start in range(0, full, chunk_size):
            yield joined[:, start:start + chunk_size]
        pending, count = ([joined[:, full:]] if full < count else []), count - full
    if count:
        yield torch.cat(pending, dim=1)


# The last whitespace character followed by a non-space one: a word starts after it. The greedy
# `.*` scans from the end, so finding it costs the length of the last word, not of the text.
_LAST_WORD_START = re.compile(r".*\s(?=\S)", re.DOTALL)


def _safe_cut(text: str, start: int) -> int:
    """Where to cut `text` so that no token spans the cut (0: no safe place at or after `start`).

    Before the whitespace that leads a word (BPE attaches one leading space to the word), but
    after a newline (BPE keeps newlines with what precedes them)."""
    m = _LAST_WORD_START.match(text, start)
    if m is None:
        return 0
    ws = m.end() - 1
    return ws + 1 if text[ws] in "\r\n" else ws


def iter_file_token_chunks(path, tokenizer, chunk_chars: int = 1 << 20) -> Iterator[torch.Tensor]:
    """Token ids of a UTF-8 text file as 1-D LongTensors, reading about `chunk_chars` bytes at a time.

    Each piece is cut at the start of its last word (a line break or a space before a word) and
    the rest carried over, so subword tokenizers see every word whole: the ids equal
    `tokenizer.encode(text)` of the whole file (exactly for the bytes, characters, syllable and
    BPE tokenizers). A leading byte-order mark is dropped. Feed the result with `feed`.
    A missing, empty or directory path raises LmzooError here; bad bytes while iterating.
    """
    path = Path(path)
    if chunk_chars < 1:
        raise LmzooError(f"chunk_chars must be >= 1, got {chunk_chars}")
    if path.is_dir():
        raise LmzooError(f"{path} is a directory; pass a UTF-8 text file")
    if not path.is_file():
        raise LmzooError(f"context file not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise LmzooError(f"{path} is empty; pass a file with text")
    return _file_token_chunks(path, tokenizer, chunk_chars)


def _file_token_chunks(path: Path, tokenizer, chunk_chars: int) -> Iterator[torch.Tensor]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, carry, found = 0, "", False  # offset: bytes handed to the decoder so far
    with path.open("rb") as f:
        while True:
            data = f.read(chunk_chars)
            buffered = len(decoder.getstate()[0])  # bytes of a character split across reads
            try:
                text = carry + decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                raise LmzooError(f"{path} is not UTF-8 text (invalid byte at offset {offset - buffered + err.start}); "
                                 "convert it, e.g. iconv -f latin1 -t utf-8") from None
            if offset == 0:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not content
            offset += len(data)
            # Without a safe cut the text is carried on, unless it grew far past a piece.
            cut = len(text) if not data else _safe_cut(text, max(len(carry) - 1, 0))
            if not cut and len(text) > 8 * chunk_chars:
                cut = len(text)
            carry = text[cut:]
            ids = tokenizer.encode(text[:cut]) if cut else []
            if ids:
                found = True
                yield torch.tensor(ids, dtype=torch.long)
            if not data:
                break
    if not found:
        raise LmzooError(f"{path} holds no text (no tokens); pass a file with text")
