"""The FastAPI application: OpenAI's /v1 endpoints over the engine, /health, /metrics, the playground.

Every refusal is a 4xx JSON body in OpenAI's error shape. Streams are server-sent events of
OpenAI's chunk objects ending with `data: [DONE]`; a request with `"lmzoo_token_stats": true`
gets, in each chunk, an `lmzoo` field with what the model did on the token it read (the
playground draws it).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException

from lmzoo.chat import STOP_STRINGS
from lmzoo.errors import LmzooError
from lmzoo.generation import check_prompts
from lmzoo.serving.engine import Done, Engine, Failed, Job, Token
from lmzoo.serving.errors import ApiError, error_body
from lmzoo.serving.metrics import Metrics
from lmzoo.serving.requests import GenerationRequest, Limits, chat_request, completion_request, parse_json

STATIC = Path(__file__).parent / "static"
ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/")


@dataclass(frozen=True)
class ServerOptions:
    name: str                       # the model id clients pass as `model`
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 8              # rows decoded together
    max_queue: int = 64             # requests waiting beyond those; more get 429
    api_key: str | None = None      # Bearer token required on /v1 when set
    cors_origins: tuple[str, ...] = ()


def create_app(model, tokenizer, options: ServerOptions) -> FastAPI:
    metrics = Metrics()
    engine = Engine(model.eval(), tokenizer, options.max_batch, options.max_queue, metrics)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lmzoo", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(CountRequests, metrics=metrics)
    server = Server(model, tokenizer, options, engine)
    add_error_handlers(app)

    app.post("/v1/completions")(server.completions)
    app.post("/v1/chat/completions")(server.chat_completions)
    app.get("/v1/models")(server.models)
    app.get("/health")(lambda: {"status": "ok", "model": options.name, **engine.load()})
    app.get("/metrics")(lambda: Response(metrics.render(), media_type="text/plain; version=0.0.4"))
    app.get("/")(lambda: FileResponse(STATIC / "index.html"))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(f"{request.method} {request.url.path}: {err.detail}", kind),
                            status_code=err.status_code, headers=err.headers)


class CountRequests:
    """ASGI middleware counting responses by endpoint and status (plain ASGI: streams pass through as they are)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


class Mailbox:
    """Events from the engine thread to the request handlers' queues on the event loop. A step
    makes one event per active request; the first schedules one delivery and the rest join it, so
    the loop wakes once per step, not once per request (and takes the GIL from the engine once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue, object]] = []

    def post(self, queue: asyncio.Queue, event) -> None:  # from the engine thread
        with self._lock:
            self._items.append((queue, event))
            if len(self._items) > 1:
                return  # a delivery is already scheduled and will take this one too
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the event loop closed: the server is shutting down
            pass

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, event in items:
            queue.put_nowait(event)


class Server:
    """The /v1 handlers, sharing the model, its tokenizer, the options and the engine."""

    def __init__(self, model, tokenizer, options: ServerOptions, engine: Engine):
        self.model, self.tokenizer, self.options, self.engine = model, tokenizer, options, engine
        self.created = int(time.time())
        self._mailbox: Mailbox | None = None

    def mailbox(self) -> Mailbox:
        loop = asyncio.get_running_loop()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = Mailbox(loop)
        return self._mailbox

    async def completions(self, request: Request):
        body = await self.read_body(request)
        return await self.answer(request, completion_request(body, self.options.limits), chat=False)

    async def chat_completions(self, request: Request):
        body = await self.read_body(request)
        return await self.answer(request, chat_request(body, self.options.limits, STOP_STRINGS), chat=True)

    async def models(self, request: Request):
        self.check_key(request)
        config = self.model.config
        return {"object": "list", "data": [{
            "id": self.options.name, "object": "model", "created": self.created, "owned_by": "lmzoo",
            "lmzoo": {"architecture": config.arch, "config": config.to_dict()}}]}

    # ---- one request --------------------------------------------------------------------------
    async def read_body(self, request: Request) -> dict:
        """The JSON body, read up to the size limit (a client cannot make the server buffer more)."""
        self.check_key(request)
        limit = self.options.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ApiError(413, f"the request body is over the server's limit of {limit:,} bytes; send less")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"the request body is over the server's limit of {limit:,} bytes; send less")
        return parse_json(bytes(raw))

    def check_key(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(401, "missing or wrong API key; send the header Authorization: Bearer KEY",
                           code="invalid_api_key")

    def encode(self, req: GenerationRequest) -> list[int]:
        if req.model is not None and req.model != self.options.name:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves '{self.options.name}'",
                           "model", "model_not_found")
        try:
            check_prompts([req.prompt])
        except LmzooError as e:
            raise ApiError(400, str(e), "prompt") from None
        ids = self.tokenizer.encode(req.prompt) or [self.tokenizer.eos_id]
        limit = self.options.limits.max_prompt_tokens
        if len(ids) > limit:
            raise ApiError(400, f"the prompt is {len(ids):,} tokens, over the server's limit of {limit:,}; "
                                "shorten it", "prompt", "context_length_exceeded")
        return ids

    async def answer(self, request: Request, req: GenerationRequest, chat: bool):
        ids = self.encode(req)
        mailbox, events = self.mailbox(), asyncio.Queue()
        job = Job(ids, req.sampling, lambda event: mailbox.post(events, event),
                  token_stats=req.token_stats and req.stream)
        self.engine.submit(job)
        reply = Reply(self.tokenizer, self.options.name, chat, req)
        if req.stream:
            return EventSourceResponse(self.stream(job, events, reply), sep="\n", ping=3600)
        return await self.collect(request, job, events, reply)

    async def stream(self, job: Job, events: asyncio.Queue, reply: "Reply"):
        try:
            while True:
                event = await events.get()
                for chunk in reply.chunks(event):
                    yield {"data": json.dumps(chunk, separators=(",", ":"))}
                if isinstance(event, (Done, Failed)):
                    yield {"data": "[DONE]"}
                    return
        finally:  # also when the client went away: its row is freed before the next step
            self.engine.cancel(job)

    async def collect(self, request: Request, job: Job, events: asyncio.Queue, reply: "Reply"):
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return Response(status_code=499)
                    continue
                if isinstance(event, Failed):
                    return JSONResponse(error_body(event.message, "server_error"), status_code=500)
                reply.add(event)
                if isinstance(event, Done):
                    return reply.whole(event)
        finally:
            self.engine.cancel(job)


class Reply:
    """OpenAI's response objects for one request: chunks of a stream, or the whole answer."""

    def __init__(self, tokenizer, model: str, chat: bool, req: GenerationRequest):
        self.tokenizer, self.model, self.chat, self.req = tokenizer, model, chat, req
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.text: list[str] = []
        self.started = False  # chat: the reply's leading whitespace is dropped

    def add(self, event: Token | Done) -> str:
        piece = event.text
        if self.chat and not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        self.text.append(piece)
        return piece

    def whole(self, done: Done) -> dict:
        text = "".join(self.text)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text.rstrip()},
                      "finish_reason": done.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": done.finish_reason}
        return {**self.head("chat.completion" if self.chat else "text_completion"), "choices": [choice],
                "usage": usage(done)}

    def chunks(self, event) -> list[dict]:
        if isinstance(event, Failed):
            return [error_body(event.message, "server_error")]
        out = []
        if self.chat and not self.text:
            out.append(self.chunk({"role": "assistant", "content": ""}))
        piece = self.add(event)
        if isinstance(event, Token):
            extension = self.extension(event)
            if piece or extension:
                out.append(self.chunk(piece, lmzoo=extension))
            return out
        out.append(self.chunk(piece, finish_reason=event.finish_reason))
        if self.req.include_usage:
            out.append({**self.head(), "choices": [], "usage": usage(event)})
        return out

    def chunk(self, piece, finish_reason: str | None = None, lmzoo: dict | None = None) -> dict:
        if self.chat:
            delta = piece if isinstance(piece, dict) else ({"content": piece} if piece or not finish_reason else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self.head(), "choices": [choice]}
        if lmzoo:
            chunk["lmzoo"] = lmzoo
        return chunk

    def head(self, kind: str | None = None) -> dict:
        kind = kind or ("chat.completion.chunk" if self.chat else "text_completion")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def extension(self, token: Token) -> dict | None:
        if token.stats is None:
            return None
        decode = self.tokenizer.decode
        return {"token": decode([token.token]), "input": decode([token.input]), "ms": round(token.ms, 3),
                "token_stats": token.stats}


def usage(done: Done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}
