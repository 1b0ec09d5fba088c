"""Request bodies of /v1/completions and /v1/chat/completions, checked before anything runs.

Every value comes from the network, so each is type-checked strictly (a bool is not a number,
1.5 is not a token count) and range-checked against the server's limits; a bad one is an
`ApiError` 400 that names the parameter. Fields the server does not use are ignored, as OpenAI's
clients send some (e.g. `user`) by default.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lmzoo.chat import format_chat
from lmzoo.errors import LmzooError
from lmzoo.serving.errors import ApiError

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 200  # each token checks the text's end against every stop string: keep that cheap


@dataclass(frozen=True)
class Limits:
    """What the server accepts; set from `lmzoo serve`'s flags."""

    max_tokens: int = 512         # cap on max_tokens of one request
    default_max_tokens: int = 128  # when a request does not say
    max_prompt_tokens: int = 2048
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: the prompt text and how to continue it."""

    model: str | None
    prompt: str
    sampling: Sampling
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts
    token_stats: bool    # extension: per-token statistics in each stream chunk (the playground)


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON; send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def completion_request(body: dict, limits: Limits) -> GenerationRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:  # OpenAI's clients may wrap one prompt in a list
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", "prompt")
    return _generation_request(body, prompt, limits, extra_stop=())


def chat_request(body: dict, limits: Limits, stop_strings: tuple[str, ...]) -> GenerationRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of {role, content} objects", "messages")
    try:
        prompt = format_chat(messages)
    except LmzooError as e:
        raise ApiError(400, str(e), "messages") from None
    return _generation_request(body, prompt, limits, extra_stop=stop_strings)


def _generation_request(body: dict, prompt: str, limits: Limits, extra_stop: tuple[str, ...]) -> GenerationRequest:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    n = _integer(body, "n", 1)
    if n != 1:
        raise ApiError(400, f"n must be 1 (one choice per request), got {n}", "n")
    stream = _boolean(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    include_usage = _boolean(options or {}, "include_usage", False, "stream_options.include_usage")
    if include_usage and not stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options")
    return GenerationRequest(model, prompt, _sampling(body, limits, extra_stop), stream, include_usage,
                             _boolean(body, "lmzoo_token_stats", False))


def _sampling(body: dict, limits: Limits, extra_stop: tuple[str, ...]) -> Sampling:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, name, limits.default_max_tokens)
    if not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"{name} must be between 1 and {limits.max_tokens} (the server's cap), got {max_tokens}",
                       name)
    temperature = _number(body, "temperature", 1.0)
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be between 0 and 2 (0 = greedy), got {temperature}", "temperature")
    top_p = _number(body, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    top_k = _integer(body, "top_k", None)
    if top_k is not None and top_k < 0:
        raise ApiError(400, f"top_k must be >= 0 (0 = off), got {top_k}", "top_k")
    seed = _integer(body, "seed", None)
    if seed is not None and not 0 <= seed < 2**63:
        raise ApiError(400, f"seed must be between 0 and 2**63 - 1, got {seed}", "seed")
    return Sampling(max_tokens, temperature, top_p, top_k or None, _stop(body) + extra_stop, seed)


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", "stop")
    if max(len(s) for s in stops) > MAX_STOP_CHARS:
        raise ApiError(400, f"a stop string may have at most {MAX_STOP_CHARS} characters", "stop")
    return tuple(stops)


def _integer(body: dict, name: str, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {_show(value)}", name)
    return value


def _number(body: dict, name: str, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number, got {_show(value)}", name)
    return float(value)


def _boolean(body: dict, name: str, default: bool, shown: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{shown or name} must be true or false, got {_show(value)}", shown or name)
    return value


def _show(value) -> str:
    """A received value for an error message, cut short (it may be huge)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
