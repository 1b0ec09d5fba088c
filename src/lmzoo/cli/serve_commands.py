"""The `serve` verb: an OpenAI-compatible HTTP server for a model (the `serve` extra; see docs/serving.md)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from lmzoo.errors import LmzooError

DEFAULT_MAX_TOKENS = 128


def register(verbs) -> None:
    p = verbs.add_parser("serve", help="serve a model over HTTP: OpenAI-compatible /v1 API, metrics and a playground")
    p.add_argument("model", help="model directory (save_pretrained output, a checkpoint, or a training run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--name", default=None, help="the model id clients pass as `model` (default: the directory name)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default: 8)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting beyond --max-batch; more are refused with 429 (default: 64)")
    p.add_argument("--max-tokens", type=int, default=512, help="cap on a request's max_tokens (default: 512)")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help="max_tokens of a request that does not say (default: 128, or --max-tokens if lower)")
    p.add_argument("--max-prompt-tokens", type=int, default=2048, help="longest prompt in tokens (default: 2048)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: 1 MiB)")
    p.add_argument("--api-key", default=None,
                   help="require `Authorization: Bearer KEY` on /v1 (default: $LMZOO_API_KEY; unset: no key)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default: none)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--engine-threads", type=int, default=None,
                   help="CPU threads the decoding engine computes with (default: all the CPU threads, from --threads "
                        "or torch's choice, but one, which the HTTP front end keeps; at least 1)")
    p.set_defaults(run=run_serve)


def engine_threads(requested: int | None, available: int) -> int:
    """The engine's torch threads: as asked, or all but one of the `available` threads. The event
    loop that parses requests and writes streams needs a core of its own: sharing every core with the
    engine's parallel regions stalls both (each region waits for its slowest thread, and a thread
    that yields its core to the loop is the slowest; measured in docs/serving.md)."""
    if requested is not None:
        if requested < 1:
            raise LmzooError(f"--engine-threads must be >= 1, got {requested}")
        return requested
    return max(1, available - 1)


def server_options(args):
    from lmzoo.serving.app import ServerOptions
    from lmzoo.serving.requests import Limits

    if args.default_max_tokens is None:
        args.default_max_tokens = min(DEFAULT_MAX_TOKENS, args.max_tokens)
    for flag in ("max_batch", "max_tokens", "default_max_tokens", "max_prompt_tokens", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise LmzooError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.max_queue < 0:
        raise LmzooError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.default_max_tokens > args.max_tokens:
        raise LmzooError(f"--default-max-tokens ({args.default_max_tokens}) is over --max-tokens ({args.max_tokens}); "
                         "lower it or raise the cap")
    if not 0 <= args.port <= 65535:
        raise LmzooError(f"--port must be between 0 and 65535, got {args.port}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("LMZOO_API_KEY") or None
    limits = Limits(args.max_tokens, args.default_max_tokens, args.max_prompt_tokens, args.max_body_bytes)
    name = args.name or Path(args.model).resolve().name
    return ServerOptions(name, limits, args.max_batch, args.max_queue, api_key, tuple(args.cors_origin))


def run_serve(args) -> None:
    try:
        from lmzoo.serving.app import create_app
        from lmzoo.serving.runner import bind, make_server
    except ImportError as err:
        raise LmzooError(f"lmzoo serve needs the serve extra ({err.name} is missing); "
                         "install it with pip install 'lmzoo[serve]'") from None
    from lmzoo.cli.model_commands import load_model_and_tokenizer
    from lmzoo.devices import resolve_device

    options = server_options(args)
    threads = engine_threads(args.engine_threads, torch.get_num_threads())
    sock = bind(args.host, args.port)  # before loading: a port in use fails at once
    model, tokenizer = load_model_and_tokenizer(args.model, resolve_device(args.device))
    torch.set_num_threads(threads)
    host, port = sock.getsockname()[:2]
    print(f"lmzoo: serving '{options.name}' ({model.config.arch}, engine on {threads} CPU thread(s)) "
          f"on http://{host}:{port} (playground at /, API at /v1{', API key required' if options.api_key else ''})", file=sys.stderr)
    try:
        make_server(create_app(model, tokenizer, options)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C: the usual way to stop
        pass
    print("lmzoo: server stopped", file=sys.stderr)
