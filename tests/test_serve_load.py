"""The load test of `lmzoo serve` (benchmarks/serve_load.py): a short run here, the 32 x 60 s one in test-all."""
import asyncio
import os
import time

import pytest
import torch

import lmzoo
from lmzoo.tokenizers import get_tokenizer

pytest.importorskip("httpx")  # the serve extra and httpx are in the dev extra
from lmzoo.serving.app import ServerOptions, create_app  # noqa: E402
from lmzoo.serving.requests import Limits  # noqa: E402
from lmzoo.serving.runner import ServerThread  # noqa: E402

from benchmark_scripts import load  # noqa: E402


@pytest.fixture(scope="module")
def serve_load():
    return load("serve_load")


def test_four_clients_for_three_seconds_stream_without_errors(serve_load):
    torch.manual_seed(0)
    model = lmzoo.create_model("transformer", "nano", vocab_size=259)
    app = create_app(model, get_tokenizer("bytes"), ServerOptions("nano", Limits(max_tokens=8), max_batch=4))
    with ServerThread(app) as server:
        results, elapsed = asyncio.run(serve_load.load(server.url, clients=4, seconds=3.0, max_tokens=8))
    summary = serve_load.summarise(results, elapsed)
    assert summary["errors"] == 0 and summary["requests"] >= 4
    assert summary["tokens"] == sum(r.tokens for r in results) and 0 < summary["tokens"] <= 8 * summary["requests"]
    assert 0 < summary["ttft_p50_ms"] <= summary["ttft_p99_ms"] and summary["itl_p50_ms"] > 0
    assert 3.0 <= elapsed < 60


def test_report_and_bounds(serve_load):
    with pytest.raises(SystemExit, match="client counts"):
        serve_load.Settings(clients=[0])
    with pytest.raises(SystemExit, match="durations"):
        serve_load.Settings(seconds=10_000)
    assert serve_load.percentile([3.0, 1.0, 2.0], 50) == 2.0 and serve_load.percentile([], 99) is None
    with serve_load.RssSampler(os.getpid(), interval=0.02) as sampler:
        time.sleep(0.3)
    assert len(sampler.trace) >= 4 and all(mb > 0 for mb in sampler.trace)
    growth = sampler.growth()
    assert growth["rss_growth_first_half_mb"] + growth["rss_growth_second_half_mb"] == pytest.approx(
        sampler.trace[-1] - sampler.trace[0], abs=0.2)


def synthetic_row(clients, round_, tokens_per_s, **extra):
    return {"clients": clients, "round": round_, "requests": 1, "errors": 0, "seconds": 5.0,
            "requests_per_s": 1.0, "tokens_per_s": tokens_per_s, "ttft_p50_ms": 10.0, "ttft_p99_ms": 20.0,
            "itl_p50_ms": 5.0, "itl_p99_ms": 9.0, "rss_before_mb": 100.0, "rss_after_mb": 101.0,
            "peak_rss_mb": 102.0, "rss_growth_first_half_mb": 0.0, "rss_growth_second_half_mb": 0.0, **extra}


def report(serve_load, runs: list[dict]) -> str:
    data = {"settings": {**vars(serve_load.Settings(clients=[1, 8], seconds=5)), "model": None},
            "archs": {"transformer": runs}, "load_average_before": [0.1, 0.1, 0.1]}
    data.update({"command": "x", "date": "d", "machine": {}, "threads": 2})
    return serve_load.render_markdown(data)


def test_rounds_give_the_median_of_ratios_taken_within_each_round(serve_load):
    row = synthetic_row
    # The machine slows down in round 1: raw tokens/s would mix rounds, ratios within a round do not.
    runs = [row(1, 0, 100.0), row(8, 0, 320.0), row(1, 1, 50.0), row(8, 1, 140.0), row(1, 2, 90.0),
            row(8, 2, 300.0), row(32, None, 400.0)]
    assert serve_load.ratios_to_one_client(runs, 8) == pytest.approx([3.2, 2.8, 300 / 90])
    markdown = report(serve_load, runs)  # rows from before servers split threads: the engine had all 2
    assert "| transformer | 2 | 8 | 15.0 | 1.0 | 300.0 | 3.20x (3.20 / 2.80 / 3.33) |" in markdown
    assert "| transformer | 2 | 32 | 5.0 | 1.0 | 400.0 | 4.44x |" in markdown  # vs the median single client
    assert "measured (median of rounds): transformer 2 engine thread(s) 3.20x" in markdown


def test_servers_with_different_engine_threads_are_reported_apart(serve_load):
    runs = [synthetic_row(1, 0, 100.0, engine_threads=1), synthetic_row(8, 0, 350.0, engine_threads=1),
            synthetic_row(1, 0, 80.0, engine_threads=2), synthetic_row(8, 0, 200.0, engine_threads=2),
            synthetic_row(32, None, 500.0, engine_threads=1)]
    markdown = report(serve_load, runs)
    assert "| transformer | 1 | 8 | 5.0 | 1.0 | 350.0 | 3.50x |" in markdown
    assert "| transformer | 2 | 8 | 5.0 | 1.0 | 200.0 | 2.50x |" in markdown
    assert "| transformer | 1 | 32 | 5.0 | 1.0 | 500.0 | 5.00x |" in markdown  # against its own server's one client
    assert "transformer 1 engine thread(s) 3.50x, transformer 2 engine thread(s) 2.50x" in markdown
    with pytest.raises(SystemExit, match="engine threads"):
        serve_load.Settings(engine_threads=[0])


@pytest.mark.slow
def test_thirty_two_clients_for_a_minute_without_errors_and_with_bounded_memory(serve_load):
    settings = serve_load.Settings(archs=["transformer"], size="nano", clients=[1], seconds=5, long_clients=32,
                                   long_seconds=60, rounds=1, max_tokens=16)
    data = serve_load.run(settings, log=lambda _: None)
    single, crowd = data["archs"]["transformer"]
    assert single["round"] == 0 and crowd["round"] is None
    assert crowd["clients"] == 32 and crowd["errors"] == 0 and crowd["requests"] >= 32
    assert crowd["rss_after_mb"] - crowd["rss_before_mb"] < 100  # no growth with the requests served
    assert crowd["rss_growth_second_half_mb"] < 20  # and what growth there is levels off
    assert crowd["engine_threads"] == 1  # the server's default: 2 threads, one kept by the HTTP front end
    assert "| transformer | 1 | 32 |" in serve_load.render_markdown(data)
