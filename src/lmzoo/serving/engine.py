"""The decoding loop: two background threads serve every request together (continuous batching).

Request handlers `submit` a `Job` and read its events. The prefill thread takes waiting jobs while
rows are free and runs their prompts through the model (`BatchDecoder.prefill`, one call per
prompt length); the decode thread owns the `BatchDecoder`'s rows. Each turn of its loop drops
cancelled requests (a client that went away frees its row before the next step), joins the
prompts prefilled meanwhile to the batch and samples their first tokens, then feeds every row its
last sampled token in one `step` and samples the next one per row, with that request's own
parameters (and generator, for a `seed`). A prefill thus runs beside the decode steps (on another
core: the model's ops release the GIL) instead of stopping every other request while it runs.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmzoo.batching import BatchDecoder, Prefilled, RowOutput
from lmzoo.generation import filter_top_k_top_p
from lmzoo.serving.errors import ApiError
from lmzoo.serving.metrics import Metrics
from lmzoo.serving.requests import Sampling
from lmzoo.serving.text import TextStream

log = logging.getLogger("lmzoo.serve")


@dataclass
class Token:
    """One generated token: the text it made final, and (when asked) what the model did on the
    token it read to produce it (`input`, its statistics, and the time since the last token)."""

    text: str
    token: int
    input: int
    ms: float
    stats: dict[str, list] | None = None


@dataclass
class Done:
    finish_reason: str  # "stop" (end of text or a stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    text: str = ""  # the text held back until the end (a partial stop string, an incomplete character)


@dataclass
class Failed:
    message: str


@dataclass(eq=False)  # a job is itself: found in the queue by identity
class Job:
    prompt_ids: list[int]
    sampling: Sampling
    emit: Callable[[Token | Done | Failed], None]  # called from the engine thread
    token_stats: bool = False
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class Row:
    """An admitted job's decoding progress."""

    job: Job
    text: TextStream
    generator: torch.Generator | None
    input: int  # the token the row read last (the prompt's last, then each sampled one)
    last_time: float
    pending: int | None = None  # sampled and sent, to be fed at the next step
    generated: int = 0


class Engine:
    def __init__(self, model, tokenizer, max_batch: int, max_queue: int, metrics: Metrics):
        self.model, self.tokenizer, self.metrics = model, tokenizer, metrics
        self.max_batch, self.max_queue = max_batch, max_queue
        # The model must stay in eval mode: two threads run it, and train()/eval() would race.
        self.decoder = BatchDecoder(model.eval(), max_rows=max_batch)
        self._rows: dict[int, Row] = {}
        self._waiting: deque[Job] = deque()
        self._ready: list[tuple[list[Job], Prefilled | Exception]] = []  # prefilled, to join between steps
        self._taken = 0  # jobs taken from the queue and not yet finished: rows, prefilling or ready
        self._wake = threading.Condition()  # both threads wait on it; every change notifies both
        self._stopping = False
        self._threads = [threading.Thread(target=self._decode_loop, name="lmzoo-decode", daemon=True),
                         threading.Thread(target=self._prefill_loop, name="lmzoo-prefill", daemon=True)]

    # ---- called from request handlers -----------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it with 429 when the queue is full."""
        with self._wake:
            free_rows = self.max_batch - self._taken
            if len(self._waiting) >= self.max_queue + free_rows:
                self.metrics.rejected.inc()
                raise ApiError(429, f"the server is busy ({len(self._waiting)} requests waiting); retry shortly",
                               code="queue_full", kind="rate_limit_error", headers={"Retry-After": "1"})
            self._waiting.append(job)
            self.metrics.queue_length.set(len(self._waiting))
            self._wake.notify_all()

    def cancel(self, job: Job) -> None:
        """Stop a job (its client went away); its row is freed before the next step."""
        with self._wake:
            job.cancelled = True
            if job in self._waiting:  # still queued: it leaves the queue now
                self._waiting.remove(job)
            self._wake.notify_all()

    def load(self) -> dict[str, int]:
        return {"active": self._taken, "waiting": len(self._waiting)}

    # ---- the prefill thread -----------------------------------------------------------------
    def _prefill_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not (self._waiting and self._taken < self.max_batch):
                    self._wake.wait()
                if self._stopping:
                    return
                jobs = self._take_waiting()
            if not jobs:
                continue
            try:
                prefilled = self.decoder.prefill([job.prompt_ids for job in jobs],
                                                 token_stats=any(job.token_stats for job in jobs))
            except Exception as err:  # noqa: BLE001 - these requests fail, the server goes on
                log.exception("prefill failed")
                prefilled = err
            with self._wake:
                self._ready.append((jobs, prefilled))
                self._wake.notify_all()

    def _take_waiting(self) -> list[Job]:
        """Waiting jobs for the free rows (cancelled ones are dropped); called holding the lock."""
        jobs = []
        while self._waiting and self._taken < self.max_batch:
            job = self._waiting.popleft()
            if not job.cancelled:
                jobs.append(job)
                self._taken += 1
        self.metrics.queue_length.set(len(self._waiting))
        return jobs

    # ---- the decode thread --------------------------------------------------------------------
    def _decode_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._rows and not self._ready:
                    self._wake.wait()
                if self._stopping:
                    return
                ready, self._ready = self._ready, []
            self._drop_cancelled()
            for jobs, prefilled in ready:
                if isinstance(prefilled, Exception):  # only these requests fail; the batch goes on
                    self._fail(jobs, prefilled)
                else:
                    self._guarded(lambda: self._admit(jobs, prefilled), jobs)
            if self._rows:
                self._guarded(self._step)
            self.metrics.observe_load(len(self._rows), len(self._waiting), self.decoder.nbytes())

    def _drop_cancelled(self) -> None:
        for handle in [h for h, row in self._rows.items() if row.job.cancelled]:
            self._remove(handle)

    def _guarded(self, work: Callable[[], None], admitting: list[Job] = ()) -> None:
        """Run `work`; if it fails, fail every affected request (the server stays up)."""
        try:
            work()
        except Exception as err:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("decoding failed")
            in_rows = {id(row.job) for row in self._rows.values()}
            jobs = [row.job for row in self._rows.values()]
            for handle in list(self._rows):
                self._remove(handle)
            self._fail([job for job in admitting if id(job) not in in_rows], err)  # those with no row yet
            for job in jobs:
                job.emit(Failed(f"decoding failed: {type(err).__name__}: {err}"))

    def _fail(self, jobs: list[Job], err: Exception) -> None:
        """Fail jobs that hold no row (their prefill or admission failed) and free their places."""
        self._release(len(jobs))
        for job in jobs:
            job.emit(Failed(f"decoding failed: {type(err).__name__}: {err}"))

    def _admit(self, jobs: list[Job], prefilled: Prefilled) -> None:
        """Join prompts prefilled on the prefill thread to the batch and sample their first tokens."""
        handles = self.decoder.join(prefilled)
        outputs = {}
        for job, handle, out in zip(jobs, handles, prefilled.outputs):
            self.metrics.prompt_tokens.inc(len(job.prompt_ids))
            if job.cancelled:  # its client went away during the prefill
                self.decoder.remove(handle)
                self._release(1)
                continue
            seed = job.sampling.seed
            generator = torch.Generator(device=self.model.device).manual_seed(seed) if seed is not None else None
            self._rows[handle] = Row(job, TextStream(self.tokenizer, job.sampling.stop), generator,
                                     job.prompt_ids[-1], job.submitted)
            outputs[handle] = out
        self._advance(outputs)

    def _step(self) -> None:
        rows = self._rows.values()  # statistics only when some request asked for them
        outputs = self.decoder.step({h: row.pending for h, row in self._rows.items()},
                                    token_stats=any(row.job.token_stats for row in rows))
        self.metrics.steps.inc()
        self._advance(outputs)

    def _advance(self, outputs: dict[int, RowOutput]) -> None:
        """Sample each row's next token from its logits, send it, and end rows that are done."""
        handles = list(outputs)
        if not handles:
            return
        tokens = sample_rows(torch.stack([outputs[h].logits for h in handles]),
                             [self._rows[h] for h in handles], self.tokenizer.vocab_size)
        now = time.perf_counter()
        for handle, token in zip(handles, tokens):
            row = self._rows[handle]
            self._send(row, token, outputs[handle], now)
            finish = self._finish_reason(row, token)
            if finish is None:
                row.pending, row.input = token, token
                continue
            row.job.emit(Done(finish, len(row.job.prompt_ids), row.generated, row.text.finish()))
            self.metrics.completion_tokens.inc(row.generated)
            self._remove(handle)

    def _send(self, row: Row, token: int, output: RowOutput, now: float) -> None:
        first = row.generated == 0
        (self.metrics.time_to_first_token if first else self.metrics.inter_token_latency).observe(now - row.last_time)
        ms = (now - row.last_time) * 1000
        row.last_time = now
        row.generated += 1
        text = "" if token == self.tokenizer.eos_id else row.text.push(token)
        stats = None
        if row.job.token_stats:
            stats = {name: json_value(value) for name, value in output.token_stats.items()}
        row.job.emit(Token(text, token, row.input, ms, stats))

    def _finish_reason(self, row: Row, token: int) -> str | None:
        if token == self.tokenizer.eos_id or row.text.stopped:
            return "stop"
        if row.generated >= row.job.sampling.max_tokens:
            return "length"
        return None

    def _remove(self, handle: int) -> None:
        self.decoder.remove(handle)
        del self._rows[handle]
        self._release(1)

    def _release(self, count: int) -> None:
        """Rows freed: the prefill thread may take more jobs."""
        if count:
            with self._wake:
                self._taken -= count
                self._wake.notify_all()


def sample_rows(logits: torch.Tensor, rows: list[Row], vocab: int) -> list[int]:
    """One token per row from logits [R, V]: greedy rows in one argmax; sampled rows with the same
    temperature, top-k and top-p in one draw, except a row with its own generator (a `seed`),
    which draws alone so its tokens depend on nothing but its seed. Ids the tokenizer cannot
    decode are never drawn."""
    logits = logits.float()
    if vocab < logits.shape[-1]:
        logits[:, vocab:] = float("-inf")
    tokens = logits.argmax(dim=-1)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        s = row.job.sampling
        if s.temperature > 0:
            key = (s.temperature, s.top_k, s.top_p) if row.generator is None else ("seeded", i)
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        first = rows[members[0]]
        s, index = first.job.sampling, torch.tensor(members)
        scaled = filter_top_k_top_p(logits[index] / s.temperature, s.top_k, s.top_p)
        tokens[index] = torch.multinomial(scaled.softmax(dim=-1), 1, generator=first.generator).squeeze(1)
    return tokens.tolist()


def json_value(value: torch.Tensor):
    """A statistic as JSON numbers (floats to 4 decimals: enough to draw, a quarter of the bytes)."""
    if value.is_floating_point():
        value = value.float().round(decimals=4)
    return value.tolist()
