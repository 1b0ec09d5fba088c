"""`lmzoo serve`: the OpenAI-compatible server, tested with the official `openai` client and httpx
against servers started here on free loopback ports (nano models, a few tokens each)."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import lmzoo
from lmzoo.cli.main import main
from lmzoo.cli.serve_commands import engine_threads
from lmzoo.generation import generate_text
from lmzoo.tokenizers import get_tokenizer

openai = pytest.importorskip("openai")  # the serve extra and openai are in the dev extra
httpx = pytest.importorskip("httpx")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from lmzoo.serving.app import ServerOptions, create_app  # noqa: E402
from lmzoo.serving.requests import Limits  # noqa: E402
from lmzoo.serving.runner import ServerThread  # noqa: E402
from lmzoo.serving.text import TextStream  # noqa: E402

NAME = "nano"
LIMITS = Limits(max_tokens=64, default_max_tokens=8, max_prompt_tokens=40, max_body_bytes=4096)


def make_model(arch="complexity"):
    torch.manual_seed(0)
    return lmzoo.create_model(arch, "nano", vocab_size=259).eval(), get_tokenizer("bytes")


@pytest.fixture(scope="module")
def served():
    model, tok = make_model()
    app = create_app(model, tok, ServerOptions(NAME, LIMITS, max_batch=4, max_queue=8))
    with ServerThread(app) as server:
        server.model, server.tokenizer, server.app = model, tok, app
        server.client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        yield server


def solo(server, prompt, n, **options):
    """What `generate_text` makes of the prompt alone (the reference for the server's greedy text)."""
    return generate_text(server.model, server.tokenizer, prompt, n, temperature=0.0, **options)[0]


def test_completions_match_generate_and_count_usage(served):
    result = served.client.completions.create(model=NAME, prompt="Hello there", max_tokens=6, temperature=0)
    choice = result.choices[0]
    assert choice.text == solo(served, "Hello there", 6)
    assert choice.finish_reason == "length" and result.object == "text_completion" and result.model == NAME
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (11, 6, 17)


def test_streamed_chunks_join_to_the_same_text(served):
    chunks = list(served.client.completions.create(model=NAME, prompt="Hello there", max_tokens=6, temperature=0,
                                                   stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == solo(served, "Hello there", 6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_chat_uses_the_chat_template_streamed_or_not(served):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    whole = served.client.chat.completions.create(model=NAME, messages=messages, max_tokens=5, temperature=0)
    expected = solo(served, "System: Be brief.\nUser: Hi\nAssistant:", 5, stop_strings=("\nUser:", "\nSystem:"))
    assert whole.choices[0].message.content == expected.strip()
    assert whole.choices[0].message.role == "assistant" and whole.usage.prompt_tokens == 37
    chunks = list(served.client.chat.completions.create(model=NAME, messages=messages, max_tokens=5, temperature=0,
                                                        stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).rstrip() == expected.strip()
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_seed_repeats_a_sample_and_stop_strings_cut_it(served):
    def sample(**extra):
        return served.client.completions.create(model=NAME, prompt="abc", max_tokens=8, temperature=1.0,
                                                top_p=0.9, seed=7, extra_body={"top_k": 50}, **extra).choices[0]
    first, again = sample(), sample()
    assert first.text == again.text and len(first.text) > 3
    stop = first.text[2:4]  # cut where the same sample reaches these characters
    cut = sample(stop=[stop, "never generated"])
    assert cut.text == first.text[: first.text.find(stop)] and cut.finish_reason == "stop"


def test_concurrent_requests_share_decoding_steps_and_each_gets_its_own_text(served):
    prompts = ["The cat", "A long prompt that is longer", "x", "Dogs ran far"]
    sampled = {"temperature": 1.0, "seed": 5}  # the last prompt is sampled with its own generator
    results = {}

    def ask(prompt):
        options = sampled if prompt == prompts[-1] else {"temperature": 0}
        results[prompt] = served.client.completions.create(model=NAME, prompt=prompt, max_tokens=12,
                                                           **options).choices[0].text

    ask(prompts[-1])
    sampled_alone = results.pop(prompts[-1])

    steps_before = metric(served, "lmzoo_decode_steps_total")
    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = metric(served, "lmzoo_decode_steps_total") - steps_before
    assert steps < 4 * 11, "rows were not decoded together"  # one by one: 11 steps each after the prefill
    for prompt in prompts[:-1]:
        assert results[prompt] == solo(served, prompt, 12)
    assert results[prompts[-1]] == sampled_alone


def test_token_stats_come_with_each_chunk_when_asked(served, monkeypatch):
    decoder, asked = served.app.state.engine.decoder, []
    for name in ("prefill", "step"):  # record whether each model call gathered statistics
        real = getattr(decoder, name)
        monkeypatch.setattr(decoder, name, lambda *a, real=real, **o: asked.append(o["token_stats"]) or real(*a, **o))
    body = {"model": NAME, "prompt": "Hi", "max_tokens": 3, "temperature": 0, "stream": True,
            "lmzoo_token_stats": True}
    chunks = sse_chunks(served.url + "/v1/completions", body)
    assert asked == [True, True, True]  # the prefill and two steps
    stats = [c["lmzoo"] for c in chunks if "lmzoo" in c]
    assert len(stats) == 3
    assert stats[0]["input"] == "i" and all(s["ms"] > 0 for s in stats)
    assert all(s["token_stats"]["expert"] in range(4) for s in stats)  # complexity: the expert each input went to
    plain = sse_chunks(served.url + "/v1/completions", {**body, "lmzoo_token_stats": False})
    assert not any("lmzoo" in c for c in plain)
    assert asked[3:] == [False, False, False]  # nobody asked: the model gathered none


def test_models_health_and_metrics(served):
    models = served.client.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert httpx.get(served.url + "/health").json() == {"status": "ok", "model": NAME, "active": 0, "waiting": 0}
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(served.url + "/metrics").text)}
    for name in ("lmzoo_requests", "lmzoo_completion_tokens", "lmzoo_queue_length",
                 "lmzoo_time_to_first_token_seconds", "lmzoo_inter_token_latency_seconds"):
        assert name in families
    assert families["lmzoo_time_to_first_token_seconds"].type == "histogram"
    assert metric(served, "lmzoo_completion_tokens_total") > 0


BAD_REQUESTS = [
    ("malformed JSON", b"{not json", 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("prompt type", {"prompt": 5}, 400, "prompt"),
    ("max_tokens as text", {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens"),
    ("max_tokens fraction", {"prompt": "a", "max_tokens": 1.5}, 400, "max_tokens"),
    ("max_tokens over the cap", {"prompt": "a", "max_tokens": 65}, 400, "max_tokens"),
    ("temperature as bool", {"prompt": "a", "temperature": True}, 400, "temperature"),
    ("top_p out of range", {"prompt": "a", "top_p": 0}, 400, "top_p"),
    ("n above 1", {"prompt": "a", "n": 2}, 400, "n"),
    ("too many stops", {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("empty stop", {"prompt": "a", "stop": ""}, 400, "stop"),
    ("long stop", {"prompt": "a", "stop": "x" * 201}, 400, "stop"),
    ("stream as text", {"prompt": "a", "stream": "yes"}, 400, "stream"),
    ("unknown model", {"prompt": "a", "model": "gpt-4"}, 404, "model"),
    ("prompt too long", {"prompt": "a" * 41}, 400, "prompt"),
    ("lone surrogate", b'{"prompt": "\\ud800"}', 400, "prompt"),
    ("body too large", {"prompt": "a" * 5000}, 413, None),
]


@pytest.mark.parametrize("case,body,status,param", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_openai_shaped_errors(served, case, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(served.url + "/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param and error["message"]


def test_bad_chat_messages_and_unknown_routes(served):
    response = httpx.post(served.url + "/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})
    assert response.status_code == 400 and "role" in response.json()["error"]["message"]
    response = httpx.get(served.url + "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        served.client.completions.create(model=NAME, prompt="a", max_tokens=0)


def test_a_full_queue_gets_429_with_retry_after_and_a_gone_client_frees_its_row():
    model, tok = make_model("transformer")
    long = Limits(max_tokens=5000)  # a stream that lasts while the test runs
    app = create_app(model, tok, ServerOptions(NAME, long, max_batch=1, max_queue=0))
    with ServerThread(app) as server:
        body = {"prompt": "Hi", "max_tokens": 5000, "temperature": 0, "stream": True}
        with httpx.Client() as client, client.stream("POST", server.url + "/v1/completions", json=body) as stream:
            lines = stream.iter_lines()  # kept: dropping the iterator would close the stream
            next(lines)  # the first chunk: the row is being decoded
            busy = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
            assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
            assert busy.json()["error"]["type"] == "rate_limit_error"
        # The client went away mid-stream: its row goes long before its tokens are done.
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(server.url + "/health").json()["active"] == 0
        assert metric(server, "lmzoo_completion_tokens_total") == 0  # it never finished
        answer = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert answer.status_code == 200


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(served, monkeypatch):
    decoder = served.app.state.engine.decoder
    real_step = decoder.step

    def broken_once(tokens, **options):
        monkeypatch.setattr(decoder, "step", real_step)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(decoder, "step", broken_once)
    failed = httpx.post(served.url + "/v1/completions", json={"prompt": "a", "max_tokens": 3})
    assert failed.status_code == 500 and "out of memory" in failed.json()["error"]["message"]
    assert httpx.get(served.url + "/health").json()["active"] == 0
    assert served.client.completions.create(model=NAME, prompt="a", max_tokens=3).usage.completion_tokens == 3


def long_stream_server():
    model, tok = make_model("transformer")
    return ServerThread(create_app(model, tok, ServerOptions(NAME, Limits(max_tokens=5000), max_batch=4)))


def test_rows_keep_decoding_while_a_prompt_is_prefilled_and_a_failed_prefill_fails_only_its_request(monkeypatch):
    with long_stream_server() as server:
        decoder = server.server.config.app.state.engine.decoder
        real_prefill, entered, release = decoder.prefill, threading.Event(), threading.Event()
        threads = []

        def slow_then_broken(prompts, **options):
            threads.append(threading.current_thread().name)
            entered.set()
            release.wait(10)
            raise RuntimeError("prefill exploded")

        body = {"prompt": "Hi", "max_tokens": 5000, "temperature": 0, "stream": True}
        with httpx.Client() as client, client.stream("POST", server.url + "/v1/completions", json=body) as stream:
            lines = (line for line in stream.iter_lines() if line.startswith("data: {"))
            next(lines)  # the long request is being decoded
            monkeypatch.setattr(decoder, "prefill", slow_then_broken)
            failing = threading.Thread(target=lambda: threads.append(httpx.post(
                server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)))
            failing.start()
            assert entered.wait(10)
            for _ in range(20):  # tokens keep coming while the other prompt sits in its prefill
                next(lines)
            release.set()
            failing.join(30)
            monkeypatch.setattr(decoder, "prefill", real_prefill)
            after = [json.loads(next(lines)[6:]) for _ in range(5)]  # and after it failed: text, no error
            assert all("error" not in chunk and chunk["choices"][0]["finish_reason"] is None for chunk in after)
            assert httpx.get(server.url + "/health").json()["active"] == 1
        assert threads[0] == "lmzoo-prefill"
        assert threads[1].status_code == 500 and "prefill exploded" in threads[1].json()["error"]["message"]
        answer = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 2


def test_a_client_gone_during_its_prefill_gets_no_row(monkeypatch):
    with long_stream_server() as server:
        engine = server.server.config.app.state.engine
        real_prefill, entered, release = engine.decoder.prefill, threading.Event(), threading.Event()

        def held(prompts, **options):
            entered.set()
            release.wait(10)
            return real_prefill(prompts, **options)

        real_cancel, cancelled = engine.cancel, threading.Event()

        def cancel(job):
            real_cancel(job)
            cancelled.set()

        monkeypatch.setattr(engine.decoder, "prefill", held)
        monkeypatch.setattr(engine, "cancel", cancel)
        body = {"prompt": "Hi", "max_tokens": 5000, "stream": True}
        with httpx.Client() as client, client.stream("POST", server.url + "/v1/completions", json=body):
            assert entered.wait(10)
        assert cancelled.wait(10)  # the stream closed while its prompt was in the prefill
        release.set()
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(server.url + "/health").json()["active"] == 0
        assert metric(server, "lmzoo_decode_steps_total") == 0  # it was never stepped


def test_cli_serves_a_saved_model_with_an_api_key(tmp_path):
    model, tok = make_model("transformer")
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    env = {**os.environ, "LMZOO_API_KEY": "sekrit", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "lmzoo.cli.main", "--threads", "1", "serve", str(tmp_path / "m"),
                             "--port", "0", "--max-tokens", "16"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = [""]
        while "serving" not in lines[-1]:  # lines before it: warnings of the libraries, if any
            lines.append(proc.stderr.readline())
            assert lines[-1], f"the server exited before it started: {''.join(lines)}"
        line = lines[-1]
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        assert "API key required" in line and "engine on 1 CPU thread(s)" in line
        denied = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "a"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=url + "/v1", api_key="sekrit", max_retries=0)
        assert client.completions.create(model="m", prompt="a", max_tokens=3).usage.completion_tokens == 3
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert "<title>lmzoo playground</title>" in httpx.get(url + "/").text
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops the server
        assert proc.wait(timeout=30) == 0
    assert "server stopped" in proc.stderr.read()


@pytest.mark.parametrize("argv,message", [
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--max-queue", "-1"], "--max-queue must be >= 0"),
    (["--default-max-tokens", "600"], "over --max-tokens"),
    (["--port", "70000"], "--port must be between"),
    (["--engine-threads", "0"], "--engine-threads must be >= 1"),
])
def test_cli_refuses_bad_flags(tmp_path, capsys, argv, message):
    assert main(["serve", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_engine_leaves_one_cpu_thread_to_the_http_front_end_unless_told():
    assert [engine_threads(None, n) for n in (1, 2, 16)] == [1, 1, 15]
    assert engine_threads(2, 2) == 2 and engine_threads(4, 1) == 4


def test_text_stream_holds_back_partial_characters_and_stop_strings():
    tok = get_tokenizer("bytes")
    stream = TextStream(tok, stop=("\nUser:",))
    pieces = [stream.push(t) for t in tok.encode("é ok\nUs")]
    assert pieces[:2] == ["", "é"]  # two bytes, one character
    assert "".join(pieces) == "é ok"  # "\nUs" may start the stop string: held
    assert [stream.push(t) for t in tok.encode("er: more")][:3] == ["", "", ""] and stream.stopped
    assert stream.finish() == ""
    other = TextStream(tok, stop=("\nUser:",))
    assert "".join(other.push(t) for t in tok.encode("a\nUx")) == "a\nUx"  # not a stop after all
    assert other.finish() == "" and not other.stopped


def metric(server, name):
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def sse_chunks(url, body):
    """The JSON chunks of a stream (its `data:` lines), checking that it ends with [DONE]."""
    with httpx.stream("POST", url, json=body) as response:
        data = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_rows_sampled_together_keep_their_own_filters_and_seeds():
    from lmzoo.serving.engine import Job, Row, sample_rows
    from lmzoo.serving.requests import Sampling

    def row(seed=None, **sampling):
        job = Job([1], Sampling(**{"max_tokens": 4, **sampling}), emit=lambda event: None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return Row(job, TextStream(get_tokenizer("bytes"), []), generator, 1, 0.0)

    logits = torch.randn(6, 259, generator=torch.Generator().manual_seed(0))
    top = logits[:, :256].argmax(-1).tolist()
    rows = [row(temperature=1.0, top_k=1), row(temperature=1.0, top_k=1), row(temperature=0.0),
            row(temperature=1.0), row(seed=3, temperature=1.0), row(temperature=2.0, top_k=1)]
    tokens = sample_rows(logits, rows, vocab=256)
    assert [tokens[i] for i in (0, 1, 2, 5)] == [top[i] for i in (0, 1, 2, 5)]  # top-k 1 and greedy, per row
    assert all(t < 256 for t in tokens)  # ids past the tokenizer's vocabulary are never drawn
    alone = sample_rows(logits[4:5], [row(seed=3, temperature=1.0)], vocab=256)
    assert tokens[4] == alone[0]  # a seeded row draws on its own: its batch-mates do not change it
