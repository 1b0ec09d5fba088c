"""Load test of `lmzoo serve`: N concurrent streaming clients for T seconds, on loopback only.

For each architecture a server is started as its own process (`lmzoo --threads K serve`, a fresh
model of the given size saved to a temporary directory, unless --model names a saved one), one per
`--engine-threads` value given (the server's default split when none is: all K threads but one for
the engine, the other for the HTTP front end); then, for each client count N, N clients each send
streaming completions back to back for T seconds (requests still running at T finish; nothing
starts after). The servers and client counts are measured in --rounds interleaved rounds (1, 8 on
each server, then again, ...): this machine's speed drifts by tens of percent from minute to minute,
so the 8-vs-1 ratio is taken within each round and the table gives the median of the rounds'
ratios and of their other figures. Every token arrives as its own chunk
(`lmzoo_token_stats: true`), so inter-token latency is measured per token. Reported: requests/s,
aggregate tokens/s, p50/p99 time to first token and inter-token latency, errors, and the server's
RSS after warm-up, at the end, its peak, and its growth over each half of a run (sampled every
second: growth that stops in the second half is allocator pools filling, growth that goes on is
a leak).

    python benchmarks/serve_load.py                          # the goals in docs/benchmarks.md
    python benchmarks/serve_load.py --engine-threads 1 2     # the server's split against all threads for the engine
    python benchmarks/serve_load.py --archs transformer --size nano --clients 4 --seconds 3 --no-write
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package)

import lmzoo  # noqa: E402
from lmzoo.tokenizers import get_tokenizer  # noqa: E402

NAME = "serve-load"
MAX_CLIENTS, MAX_SECONDS = 256, 600  # bounds: the test stops by itself
PROMPT = "The history of the city begins with"


@dataclass
class Settings:
    archs: list[str] = field(default_factory=lambda: ["transformer", "efficia-1"])
    size: str = "micro"
    model: str | None = None  # a saved model instead of fresh ones (then archs is ignored)
    clients: list[int] = field(default_factory=lambda: [1, 8])
    seconds: float = 20.0
    long_clients: int = 32   # the endurance run after the others (0: none)
    long_seconds: float = 60.0
    rounds: int = 3          # interleaved repetitions of the `clients` runs
    max_tokens: int = 32
    threads: int = 2
    max_batch: int = 32
    engine_threads: list[int] = field(default_factory=list)  # one server per value; empty: the server's default

    def __post_init__(self) -> None:
        if not all(1 <= n <= MAX_CLIENTS for n in [*self.clients, self.long_clients or 1]):
            raise SystemExit(f"client counts must be between 1 and {MAX_CLIENTS}")
        if not 0 < self.seconds <= MAX_SECONDS or not 0 <= self.long_seconds <= MAX_SECONDS:
            raise SystemExit(f"durations must be between 0 and {MAX_SECONDS} seconds")
        if not 1 <= self.rounds <= 10:
            raise SystemExit("rounds must be between 1 and 10")
        if any(n < 1 for n in self.engine_threads):
            raise SystemExit("engine threads must be >= 1")


@dataclass
class Request:
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    engine_threads: int  # as the server reported it


def start_server(model_dir: Path, settings: Settings, engine_threads: int | None = None) -> Served:
    command = [sys.executable, "-m", "lmzoo.cli.main", "--threads", str(settings.threads), "serve", str(model_dir),
               "--port", "0", "--max-batch", str(settings.max_batch), "--max-queue", str(4 * MAX_CLIENTS),
               "--max-tokens", str(settings.max_tokens)]
    if engine_threads is not None:
        command += ["--engine-threads", str(engine_threads)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # stdout: access log
    for line in proc.stderr:
        found = re.search(r"engine on (\d+) CPU thread.*(http://[\d.]+:\d+)", line)
        if "serving" in line and found:
            # The server logs each request to stderr: drain it so the pipe never fills and blocks it.
            threading.Thread(target=drain, args=(proc.stderr,), daemon=True).start()
            return Served(proc, found.group(2), int(found.group(1)))
    raise RuntimeError(f"the server did not start (exit status {proc.wait()})")


def drain(stream) -> None:
    for _ in stream:
        pass


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """The server's RSS once a second while a load runs, to tell growth that levels off (allocator
    pools filling up) from growth that goes on (a leak)."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, interval
        self.trace: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.trace.append(round(rss_mb(self.pid), 1))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict:
        """MB gained over the first and over the second half of the run."""
        if len(self.trace) < 4:
            return {"rss_growth_first_half_mb": None, "rss_growth_second_half_mb": None}
        first, middle, last = self.trace[0], self.trace[len(self.trace) // 2], self.trace[-1]
        return {"rss_growth_first_half_mb": round(middle - first, 1),
                "rss_growth_second_half_mb": round(last - middle, 1)}


async def one_request(client: httpx.AsyncClient, url: str, max_tokens: int) -> Request:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 1.0, "stream": True,
            "lmzoo_token_stats": True}
    result, started = Request(), time.perf_counter()
    last = started
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"]["message"]
                elif "lmzoo" in chunk:  # one per token
                    now = time.perf_counter()
                    if result.tokens == 0:
                        result.ttft = now - started
                    else:
                        result.gaps.append(now - last)
                    last, result.tokens = now, result.tokens + 1
    except httpx.HTTPError as err:
        result.error = f"{type(err).__name__}: {err}"
    return result


async def load(url: str, clients: int, seconds: float, max_tokens: int) -> tuple[list[Request], float]:
    results: list[Request] = []

    async def client_loop(client):
        while time.perf_counter() < deadline:
            results.append(await one_request(client, url, max_tokens))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:
        started = time.perf_counter()
        deadline = started + seconds  # from the same clock reading: a run lasts at least `seconds`
        await asyncio.wait_for(asyncio.gather(*(client_loop(client) for _ in range(clients))),
                               timeout=seconds + 120)
        return results, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarise(results: list[Request], elapsed: float) -> dict:
    done = [r for r in results if r.error is None]
    ttfts = [r.ttft for r in done if r.ttft is not None]
    gaps = [g for r in done for g in r.gaps]
    tokens = sum(r.tokens for r in done)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {"requests": len(done), "errors": len(results) - len(done),
            "error_examples": sorted({r.error for r in results if r.error})[:3],
            "seconds": round(elapsed, 2), "requests_per_s": round(len(done) / elapsed, 3),
            "tokens": tokens, "tokens_per_s": round(tokens / elapsed, 1),
            "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
            "itl_p50_ms": ms(percentile(gaps, 50)), "itl_p99_ms": ms(percentile(gaps, 99))}


def run_arch(model_dir: Path, settings: Settings, log=print) -> list[dict]:
    servers = []
    rows = []
    try:
        for threads in settings.engine_threads or [None]:
            servers.append(start_server(model_dir, settings, threads))
            asyncio.run(load(servers[-1].url, 2, 1.0, 4))  # warm-up: first forwards, allocator
        runs = [(server, n, settings.seconds, r) for r in range(settings.rounds) for server in servers
                for n in settings.clients]
        if settings.long_clients:  # the endurance run, on the first server
            runs.append((servers[0], settings.long_clients, settings.long_seconds, None))
        for server, clients, seconds, round_ in runs:
            pid = server.proc.pid
            rss_before = rss_mb(pid)
            with RssSampler(pid) as sampler:
                results, elapsed = asyncio.run(load(server.url, clients, seconds, settings.max_tokens))
            row = {"engine_threads": server.engine_threads, "clients": clients, "round": round_,
                   **summarise(results, elapsed), "rss_before_mb": round(rss_before, 1),
                   "rss_after_mb": round(rss_mb(pid), 1), "peak_rss_mb": round(rss_mb(pid, "VmHWM"), 1),
                   "rss_trace_mb": sampler.trace, **sampler.growth()}
            log(json.dumps({k: v for k, v in row.items() if k != "rss_trace_mb"}))
            rows.append(row)
    finally:
        for server in servers:
            server.proc.terminate()
            server.proc.wait(30)
    return rows


def run(settings: Settings, log=print) -> dict:
    common.set_threads(settings.threads)
    data = {**common.run_info(), "settings": asdict(settings), "archs": {}}
    if settings.model:
        model = lmzoo.load(settings.model)
        data["archs"][model.config.arch] = run_arch(Path(settings.model), settings, log)
        return data
    for arch in settings.archs:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            model = lmzoo.create_model(arch, settings.size, vocab_size=get_tokenizer("bytes").vocab_size)
            model.save_pretrained(Path(tmp) / arch, tokenizer=get_tokenizer("bytes"))
            data["archs"][arch] = run_arch(Path(tmp) / arch, settings, log)
    return data


def combine(rounds: list[dict]) -> dict:
    """One table row from the rounds of one client count: medians of the rates and latencies,
    errors and seconds summed, memory from the first round's start to the last round's end."""
    out = {}
    for key in ("requests_per_s", "tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"):
        values = [r[key] for r in rounds]
        out[key] = None if None in values else statistics.median(values)  # None: a round with no tokens
    return {**out, "clients": rounds[0]["clients"], "rounds": len(rounds),
            "seconds": sum(r["seconds"] for r in rounds), "errors": sum(r["errors"] for r in rounds),
            "rss_before_mb": rounds[0]["rss_before_mb"], "rss_after_mb": rounds[-1]["rss_after_mb"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
            "rss_growth_first_half_mb": rounds[-1]["rss_growth_first_half_mb"],
            "rss_growth_second_half_mb": rounds[-1]["rss_growth_second_half_mb"]}


def ratios_to_one_client(runs: list[dict], clients: int) -> list[float]:
    """tokens/s of `clients` over one client's, within each round."""
    by_round = {(r["round"], r["clients"]): r["tokens_per_s"] for r in runs if r.get("round") is not None}
    rounds = sorted({rnd for rnd, _ in by_round})
    return [by_round[(rnd, clients)] / by_round[(rnd, 1)] for rnd in rounds
            if (rnd, 1) in by_round and (rnd, clients) in by_round and by_round[(rnd, 1)] > 0]


def by_engine_threads(runs: list[dict], threads: int) -> dict[int, list[dict]]:
    """An architecture's runs per server, by its engine threads (results from before servers
    split their threads gave the engine all of them)."""
    out: dict[int, list[dict]] = {}
    for r in runs:
        out.setdefault(r.get("engine_threads", threads), []).append(r)
    return out


def table_rows(runs: list[dict]) -> list[tuple[dict, list[float], bool]]:
    """One server's table rows: (row, its ratios to one client, whether it is the endurance run).
    Rounds are combined per client count; the endurance run is set against the median single client."""
    timed = [r for r in runs if r.get("round") is not None]
    counts = list(dict.fromkeys(r["clients"] for r in timed))
    table = [(combine([r for r in timed if r["clients"] == n]), ratios_to_one_client(runs, n), False)
             for n in counts]
    single = next((row["tokens_per_s"] for row, _, _ in table if row["clients"] == 1), None)
    return table + [(r, [r["tokens_per_s"] / single] if single else [], True)
                    for r in runs if r.get("round") is None]


def halves(row: dict) -> str:
    first, second = row.get("rss_growth_first_half_mb"), row.get("rss_growth_second_half_mb")
    return "-" if first is None else f"{first:+.0f} / {second:+.0f}"


def render_markdown(data: dict) -> str:
    s = data["settings"]
    lines = [f"## Serving under load (`lmzoo serve`, {s['size'] if not s['model'] else s['model']}, "
             f"{s['threads']} threads)", "", common.command_header(data), "",
             f"Streaming completions of {s['max_tokens']} tokens, sampled, back to back per client over loopback; "
             f"server `--max-batch {s['max_batch']}`, a fresh untrained model (bytes tokenizer). Tokens/s counts "
             "every streamed token of every client; TTFT includes queueing. The client counts "
             f"{', '.join(map(str, s['clients']))} ran in {s['rounds']} interleaved round(s) of {s['seconds']:g} s: "
             "rates and latencies are the medians of the rounds, \"vs 1 client\" the median of the ratios taken "
             "within each round (each round's ratios in brackets); the endurance run ran once, after them, on the "
             "first server. \"engine threads\": the decoding engine's torch threads out of the "
             f"{s['threads']} the server was given (`lmzoo --threads {s['threads']} serve --engine-threads N`; "
             "the rest are the HTTP front end's); several servers per architecture ran in the same rounds. "
             f"Load average before the run: {data['load_average_before'][0]:.1f} (figures from a busy machine "
             "are not comparable).", ""]
    rows, speedups = [], []
    for arch, runs in data["archs"].items():
        for threads, served in by_engine_threads(runs, s["threads"]).items():
            label = f"{arch} {threads} engine thread(s)"
            for r, ratios, endurance in table_rows(served):
                ratio = "-"
                if ratios:
                    each = " / ".join(f"{x:.2f}" for x in ratios)
                    ratio = f"{statistics.median(ratios):.2f}x" + (f" ({each})" if len(ratios) > 1 else "")
                rows.append([arch, threads, r["clients"], round(r["seconds"], 1), r["requests_per_s"],
                             r["tokens_per_s"], ratio, r["ttft_p50_ms"], r["ttft_p99_ms"], r["itl_p50_ms"],
                             r["itl_p99_ms"], r["errors"],
                             f"{r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} ({r['peak_rss_mb']:.0f})",
                             halves(r)])
                if r["clients"] == 8 and ratios and not endurance:
                    speedups.append(f"{label} {statistics.median(ratios):.2f}x")
    lines.append(common.markdown_table(
        ["arch", "engine threads", "clients", "s", "req/s", "tokens/s", "vs 1 client", "TTFT p50 ms", "TTFT p99 ms",
         "ITL p50 ms", "ITL p99 ms", "errors", "server RSS MB before → after (peak)", "RSS growth MB, 1st / 2nd half"],
        rows))
    if speedups:
        lines += ["", f"Goal: 8 clients ≥ 3x one client's tokens/s; measured (median of rounds): {', '.join(speedups)}."]
    return "\n".join(lines)


def parse_args(argv=None) -> tuple[Settings, argparse.Namespace]:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=d.archs)
    p.add_argument("--size", default=d.size)
    p.add_argument("--model", default=None, help="a saved model directory instead of fresh models")
    p.add_argument("--clients", nargs="+", type=int, default=d.clients)
    p.add_argument("--seconds", type=float, default=d.seconds)
    p.add_argument("--long-clients", type=int, default=d.long_clients, help="endurance run's clients (0: none)")
    p.add_argument("--long-seconds", type=float, default=d.long_seconds)
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved repetitions of the --clients runs")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--max-batch", type=int, default=d.max_batch)
    p.add_argument("--engine-threads", type=int, nargs="+", default=[],
                   help="one server per value, measured in the same rounds (default: the server's own split)")
    p.add_argument("--no-write", action="store_true", help="print only; leave results/ and docs/ alone")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: rewrite the docs section from a results file")
    a = p.parse_args(argv)
    settings = Settings(a.archs, a.size, a.model, a.clients, a.seconds, a.long_clients, a.long_seconds,
                        a.rounds, a.max_tokens, a.threads, a.max_batch, a.engine_threads)
    return settings, a


def main(argv=None) -> dict:
    settings, args = parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        markdown = render_markdown(data)
        print(markdown)
        print(f"wrote {common.update_doc_section(f'{NAME}-cpu', markdown)}")
        return data
    data = run(settings)
    common.publish(NAME, data, render_markdown(data), write=not args.no_write)
    return data


if __name__ == "__main__":
    main()
