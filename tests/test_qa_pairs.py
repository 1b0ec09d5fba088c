"""Q&A pairs from articles via an LLM API: sections, reply parsing, the extractive filter,
both providers, resume, key and HTTP errors, the CLI.

A local ThreadingHTTPServer answers like the Anthropic Messages API and an OpenAI-compatible
chat completions endpoint; no test needs the internet or a key.
"""
from __future__ import annotations

import json
import re

import pytest
from local_http import JsonServer

from lmzoo.cli.main import main
from lmzoo.data.http import PoliteSession
from lmzoo.data.qa_pairs import QaClient, find_span, generate_qa_pairs, parse_pairs, split_sections
from lmzoo.errors import LmzooError

FILL = "Die Stadt hat viele Museen, Theater und Parks, die jedes Jahr Besucher anziehen. " * 2
ARTICLES = [
    {"title": "Berlin", "url": "https://de.wikipedia.org/wiki/Berlin", "category": None, "lang": "de",
     "text": f"Berlin ist die Hauptstadt der Bundesrepublik Deutschland.\n\n{FILL}\n\nGeschichte\n\n"
             f"Die erste urkundliche Erwähnung stammt aus dem Jahr 1237. {FILL}"},
    {"title": "Ulm", "url": "https://de.wikipedia.org/wiki/Ulm", "category": None, "lang": "de",
     "text": f"Ulm liegt an der Donau in Baden-Württemberg. {FILL}"},
]


class FakeLLM:
    """Answers /v1/messages (Anthropic) and /v1/chat/completions (OpenAI) from the prompt's text."""

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.server = JsonServer(lambda r: (*self.answer(r["path"], r["headers"], r["body"]), {}))
        self.url = self.server.url

    @property
    def requests(self):
        return self.server.requests

    def close(self):
        self.server.close()

    def answer(self, path, headers, body):
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "boom"}}
        if path == "/v1/messages":
            if headers.get("x-api-key") != "sk-ant-test" or headers.get("anthropic-version") != "2023-06-01":
                return 401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            prompt = body["messages"][0]["content"]
            reply = "Here are the pairs:\n```json\n" + json.dumps({"pairs": self.pairs(prompt)}) + "\n```\nDone."
            return 200, {"id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
                         "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 100, "output_tokens": 20}}
        assert path == "/v1/chat/completions"
        if headers.get("Authorization") != "Bearer sk-openai-test":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        prompt = body["messages"][-1]["content"]
        reply = "Sure! " + json.dumps(self.pairs(prompt)) + " Hope this helps."  # a bare list wrapped in prose
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 90, "completion_tokens": 30, "total_tokens": 120}}

    @staticmethod
    def pairs(prompt):
        text = re.search(r"<text>\n(.*)\n</text>", prompt, re.DOTALL).group(1)
        first = text.split(".")[0]  # "Berlin ist die Hauptstadt ..." -> answer its last two words, other case
        words = first.split()
        return [{"question": f"Was steht in {words[0]}?", "answer": "  " + " ".join(words[-2:]).upper() + "."},
                {"question": "Was erfindet das Modell?", "answer": "etwas, das nicht im Text steht"},
                {"question": f"Was steht in {words[0]}?", "answer": words[0]}]


@pytest.fixture
def llm():
    srv = FakeLLM()
    yield srv
    srv.close()


@pytest.fixture
def articles(tmp_path):
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ARTICLES), encoding="utf-8")
    return path


def client(srv, provider="anthropic", key="sk-ant-test"):
    http = PoliteSession("lmzoo-test/1", rate=1000, backoff=0.001, retries=2, timeout=5)
    return QaClient(provider, "test-model", api_key=key, base_url=srv.url, http=http)


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_sections():
    text = "Kopf eins.\n\nKopf zwei.\n\nGeschichte\n\nAlt.\n\nNeu ist das.\n\nLeer\n\nZu kurz"
    assert split_sections(text, section_chars=1000, min_section_chars=1) == [
        ("", "Kopf eins.\n\nKopf zwei."), ("Geschichte", "Alt.\n\nNeu ist das.")]
    assert split_sections(text, section_chars=12, min_section_chars=1)[:2] == [("", "Kopf eins."), ("", "Kopf zwei.")]
    assert split_sections(text, section_chars=1000, min_section_chars=20) == [("", "Kopf eins.\n\nKopf zwei.")]


def test_parse_pairs_robustly():
    pair = {"question": "Wer?", "answer": "Er."}
    assert parse_pairs('```json\n{"pairs": [{"question": "Wer?", "answer": "Er."}]}\n```') == [pair]
    assert parse_pairs('Gern: [{"question": "Wer?", "answer": "Er."}] – viel Erfolg {!}') == [pair]
    assert parse_pairs('{"question": "Wer?", "answer": "Er."}') == [pair]
    assert parse_pairs('Note {x} then ```\n{"qa": [{"question": "Wer?", "answer": "Er."}]}```') == [pair]
    assert parse_pairs('{"pairs": []}') == []
    assert parse_pairs("I cannot help with that.") is None
    assert parse_pairs('{"pairs": [{"question": "Wer?", "answer": "Er.') is None  # cut off at max_tokens


def test_find_span_is_extractive():
    text = "Die erste urkundliche\n  Erwähnung stammt aus dem Jahr 1237. Die Straße ist lang."
    assert find_span("URKUNDLICHE erwähnung", text) == "urkundliche Erwähnung"
    assert find_span('"dem Jahr 1237."', text) == "dem Jahr 1237"
    assert find_span("STRASSE", text) == "Straße"
    assert find_span("Jahr 1238", text) is None
    assert find_span("  ", text) is None


@pytest.mark.parametrize("provider, key", [("anthropic", "sk-ant-test"), ("openai", "sk-openai-test")])
def test_both_providers_end_to_end(llm, articles, tmp_path, provider, key):
    out = tmp_path / "qa.jsonl"
    summary = generate_qa_pairs(articles, out, client(llm, provider, key), max_pairs=5, min_section_chars=50)
    rows = read(out)
    assert [(r["title"], r["section"], r["section_index"]) for r in rows] == [
        ("Berlin", "", 0), ("Berlin", "Geschichte", 1), ("Ulm", "", 0)]
    first = rows[0]
    assert set(first) == {"question", "answer", "title", "section", "section_index", "source_url"}
    assert first["answer"] == "Bundesrepublik Deutschland"  # the text's own span, not the model's casing
    assert first["source_url"] == "https://de.wikipedia.org/wiki/Berlin"
    assert rows[1]["answer"] == "Jahr 1237"
    # per section: one pair invented (dropped), one repeating a question (dropped)
    assert summary["dropped"] == {"not_in_text": 3, "duplicates": 3, "over_limit": 0}
    assert summary["pairs"] == 3 and summary["sections"] == 3 and summary["requests"] == 3
    assert summary["usage"]["input_tokens"] > 0
    sent = llm.requests[0]
    assert sent["body"]["model"] == "test-model"
    assert "Bundesrepublik Deutschland" in json.dumps(sent["body"], ensure_ascii=False)
    if provider == "anthropic":
        assert sent["path"] == "/v1/messages" and sent["body"]["max_tokens"] == 1024
    else:
        assert sent["path"] == "/v1/chat/completions" and "max_tokens" not in sent["body"]


def test_base_url_with_v1_and_limit(llm, articles, tmp_path):
    qa = client(llm, "openai", "sk-openai-test")
    qa2 = QaClient("openai", "m", api_key="sk-openai-test", base_url=llm.url + "/v1/", http=qa.http)
    assert qa2.url == llm.url + "/v1/chat/completions"
    summary = generate_qa_pairs(articles, tmp_path / "qa.jsonl", qa2, limit=1, min_section_chars=50)
    assert summary["sections"] == 2 and {r["title"] for r in read(tmp_path / "qa.jsonl")} == {"Berlin"}


def test_max_pairs_per_section(llm, articles, tmp_path):
    def many(prompt):
        return [{"question": "Welche Stadt?", "answer": "Berlin"}, {"question": "Welches Land?",
                                                                    "answer": "Deutschland"}]
    llm.pairs = many
    summary = generate_qa_pairs(articles, tmp_path / "qa.jsonl", client(llm), max_pairs=1, limit=1,
                                min_section_chars=50)
    assert summary["pairs"] == 1 and summary["dropped"]["over_limit"] == 1  # the lead only: Geschichte lacks both


def test_resume_after_interruption(articles, tmp_path):
    out = tmp_path / "qa.jsonl"
    broken = FakeLLM(fail_after=2)  # the third request fails: a crash after two sections
    try:
        with pytest.raises(LmzooError, match="HTTP 400"):
            generate_qa_pairs(articles, out, client(broken), min_section_chars=50)
    finally:
        broken.close()
    assert len(read(out)) == 2
    with open(out, "a", encoding="utf-8") as f:  # what a hard kill may leave: a pair of an unfinished
        f.write(json.dumps({"question": "?", "answer": "Ulm", "title": "Ulm", "section": "", "section_index": 0,
                            "source_url": None}) + "\n")
        f.write('{"question": "Wo lie')  # section and a torn line
    srv = FakeLLM()
    try:
        summary = generate_qa_pairs(articles, out, client(srv), min_section_chars=50)
        assert len(srv.requests) == 1  # only the unfinished section is asked again
    finally:
        srv.close()
    rows = read(out)
    keys = [(r["title"], r["section_index"], r["question"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3 and summary["pairs"] == 3 and summary["new_pairs"] == 1
    assert "?" not in [r["question"] for r in rows]


def test_changed_section_settings_are_refused(llm, articles, tmp_path):
    out = tmp_path / "qa.jsonl"
    generate_qa_pairs(articles, out, client(llm), limit=1, min_section_chars=50)
    with pytest.raises(LmzooError, match="other section settings"):
        generate_qa_pairs(articles, out, client(llm), min_section_chars=10)


def test_unparseable_reply_is_counted(llm, articles, tmp_path):
    llm.answer = lambda path, headers, body: (200, {"type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "I'd rather not."}], "usage": {"input_tokens": 1, "output_tokens": 1}})
    summary = generate_qa_pairs(articles, tmp_path / "qa.jsonl", client(llm), min_section_chars=50)
    assert summary["unparseable_replies"] == 3 and summary["pairs"] == 0 and summary["sections"] == 3


def test_refused_key_names_the_variable(llm, articles, tmp_path):
    with pytest.raises(LmzooError, match="HTTP 401 .*invalid x-api-key.*ANTHROPIC_API_KEY"):
        generate_qa_pairs(articles, tmp_path / "qa.jsonl", client(llm, key="wrong"))


def test_cli_both_providers_and_missing_key(llm, articles, tmp_path, monkeypatch, capsys):
    out = tmp_path / "qa.jsonl"
    base = ["data", "qa-pairs", str(articles), "--model", "test-model", "--base-url", llm.url, "--rate", "1000",
            "--backoff", "0.001", "--min-section-chars", "50"]
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main([*base, "--provider", "anthropic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ANTHROPIC_API_KEY" in err and err.count("\n") == 1 and err.startswith("lmzoo: error:")
    assert not out.exists()

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert main([*base, "--provider", "anthropic", "--out", str(out), "--max-pairs-per-section", "2"]) == 0
    assert '"pairs": 3' in capsys.readouterr().out and len(read(out)) == 3

    monkeypatch.setenv("MY_KEY", "sk-openai-test")
    out2 = tmp_path / "qa-openai.jsonl"
    assert main([*base, "--provider", "openai", "--api-key-env", "MY_KEY", "--out", str(out2), "--limit", "1"]) == 0
    assert len(read(out2)) == 2
    assert llm.requests[-1]["headers"]["User-Agent"].startswith("lmzoo/")
