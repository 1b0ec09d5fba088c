"""Text generation for every architecture, on top of the decoding-state API.

The prompt is fed once (prefill), then one token per step with the state carried forward:
no architecture recomputes the prefix.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import torch

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


def _check_options(temperature: float, top_k, top_p, repetition_penalty: float, max_new_tokens: int) -> None:
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


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int = 64, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             eos_token_id: int | None = None, stop: Callable[[torch.Tensor], bool] | None = None,
             streamer=None, seed: int | None = None, state=None) -> torch.Tensor:
    """Continue `input_ids` [B, L] (all prompts the same length) by up to max_new_tokens.

    Samples that emit `eos_token_id` stop (later positions are filled with it); `stop(ids)`
    may end generation early (used for stop strings). `streamer.put(ids[B])` receives each
    new step's tokens, `streamer.end()` the end. Passing `state` continues from a context
    that was already fed (long-context streaming). Returns prompt + generated ids.
    """
    _check_options(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
    input_ids = model.check_input_ids(input_ids)
    was_training = model.training
    model.eval()
    batch, device = input_ids.shape[0], input_ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    if state is None:
        state = model.init_state(batch, device, capacity=input_ids.shape[1] + max_new_tokens)
    logits = model(input_ids, state=state, logits_to_keep=1).logits[:, -1]
    seen = torch.zeros(batch, model.config.vocab_size, dtype=torch.bool, device=device)
    seen.scatter_(1, input_ids, True)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    out = [input_ids]
    for _ in range(max_new_tokens):
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, repetition_penalty)
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
    """Prints sample 0's text as it is generated, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer, file=None, skip_special: bool = True):
        self.tokenizer, self.file, self.skip_special = tokenizer, file or sys.stdout, skip_special
        self.ids: list[int] = []
        self.printed = 0

    def put(self, token: torch.Tensor) -> None:
        self.ids.append(int(token.reshape(-1)[0]))
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return
        self.file.write(text[self.printed:])
        self.file.flush()
        self.printed = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids)
        self.file.write(text[self.printed:] + "\n")
        self.file.flush()


def _stop_on_strings(tokenizer, prompt_len: int, stop_strings: Sequence[str]):
    def stop(ids: torch.Tensor) -> bool:
        return all(any(s in tokenizer.decode(row[prompt_len:].tolist()) for s in stop_strings) for row in ids)
    return stop


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop_strings if s in text]
    return text[: min(cuts)] if cuts else text


def generate_text(model, tokenizer, prompts: str | Sequence[str], max_new_tokens: int = 128,
                  stop_strings: Sequence[str] = (), stream: bool = False, **options) -> list[str]:
    """Generate continuations for text prompts of any lengths; returns the new text of each.

    Prompts are grouped by token length and each group runs as one batch (architectures with
    recurrent state cannot skip padding, so equal lengths keep every sample exact).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    device = next(model.parameters()).device
    encoded = [tokenizer.encode(p) or [tokenizer.eos_id] for p in prompts]
    results: list[str | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    options.setdefault("eos_token_id", tokenizer.eos_id)
    for length, members in groups.items():
        ids = torch.tensor([encoded[i] for i in members], dtype=torch.long, device=device)
        streamer = TextStreamer(tokenizer) if stream and len(prompts) == 1 else None
        stop = _stop_on_strings(tokenizer, length, stop_strings) if stop_strings else None
        out = generate(model, ids, max_new_tokens, stop=stop, streamer=streamer, **options)
        for row, i in zip(out, members):
            results[i] = _cut_at_stop(tokenizer.decode(row[length:].tolist()), stop_strings)
    return results
