"""Extractive question/answer pairs from articles, written by an LLM API, resumably.

Each article (JSONL lines with `title`, `text` and optionally `url`, as `wiki-fetch` and
`wiki-dump` write them) is split into sections: a heading is a one-line paragraph of at most
12 words without final punctuation (how both collectors leave headings), and a section's
paragraphs are packed into pieces of at most `section_chars` characters (a longer paragraph
stays whole). Pieces shorter than `min_section_chars` are skipped: too little to ask about.

Each piece goes to the LLM in one request that asks for up to `max_pairs` pairs as JSON whose
answers are short spans copied from the text. Providers: `anthropic` (the Messages API, POST
{base}/v1/messages) and `openai` (POST {base}/v1/chat/completions, which OpenAI-compatible
servers such as vLLM or llama.cpp also serve). Models wrap JSON in prose or ```json fences, so
the first JSON value holding question/answer objects is taken from anywhere in the reply.
A pair is kept only if its answer occurs in the piece (ignoring case and runs of whitespace);
it is written as the text's own span, so every answer is extractive by construction.

Output: `{"question", "answer", "title", "section", "section_index", "source_url"}` lines
(`section` is the heading, "" for the lead). Resuming: `OUT.progress` records each finished
piece as `(title, section_index)` after its pairs are flushed to OUT; a rerun checks both
files are qa-pairs output, cuts OUT back to the finished pieces (what a crash left of an
unfinished one, a torn line included) and skips them, so no piece is asked about twice and
no pair is written twice. Files that are not qa-pairs output are refused, never changed.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmzoo.data.http import HttpStatusError, PoliteSession, user_agent
from lmzoo.data.sources import expand_paths, iter_jsonl, visible
from lmzoo.errors import LmzooError
from lmzoo.io import read_own_jsonl
from lmzoo.locking import output_lock

PROGRESS_FORMAT, PROGRESS_VERSION = "lmzoo-qa-progress", 1
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires a cap; 10 short pairs need a few hundred tokens


@dataclass(frozen=True)
class Provider:
    env: str  # where the API key is looked up by default
    base_url: str
    path: str


PROVIDERS = {"anthropic": Provider("ANTHROPIC_API_KEY", "https://api.anthropic.com", "/v1/messages"),
             "openai": Provider("OPENAI_API_KEY", "https://api.openai.com", "/v1/chat/completions")}

SYSTEM = "You write extractive question-answer pairs for reading-comprehension training data."
PROMPT = """Write up to {n} question/answer pairs about the text below.
- Copy each answer exactly from the text: a short span (a name, number, date or phrase of at most
  about ten words), not a whole sentence.
- Each question must be answerable from the text alone and understandable without it (name the
  subject instead of writing "the text"), in the language of the text.
- Ask about different facts.
Reply with JSON only, in this form: {{"pairs": [{{"question": "...", "answer": "..."}}]}}

Article: {title}
Section: {section}
<text>
{text}
</text>"""

FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.DOTALL)
HEADING_END = tuple('.!?:;,…"\'»«“”„')
ANSWER_TRIM = " \t\n\"'„“”»«"


# --- sections ---------------------------------------------------------------------------

def _is_heading(paragraph: str) -> bool:
    return ("\n" not in paragraph and len(paragraph) <= 100 and len(paragraph.split()) <= 12
            and not paragraph.endswith(HEADING_END))


def split_sections(text: str, section_chars: int = 4000, min_section_chars: int = 150) -> list[tuple[str, str]]:
    """`(heading, text)` pieces of an article in order; the lead's heading is ""."""
    groups: list[tuple[str, list[str]]] = [("", [])]
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        if _is_heading(paragraph):
            groups.append((paragraph, []))
        else:
            groups[-1][1].append(paragraph)
    pieces: list[tuple[str, str]] = []
    for heading, paragraphs in groups:
        current: list[str] = []
        for paragraph in paragraphs:
            if current and len("\n\n".join([*current, paragraph])) > section_chars:
                pieces.append((heading, "\n\n".join(current)))
                current = []
            current.append(paragraph)
        if current:
            pieces.append((heading, "\n\n".join(current)))
    return [(h, t) for h, t in pieces if len(t) >= min_section_chars]


# --- replies ----------------------------------------------------------------------------

def parse_pairs(reply: str) -> list[dict[str, str]] | None:
    """The question/answer objects in a model's reply, or None if it holds none in JSON.

    Fenced blocks are tried first, then the whole reply; in each, the first JSON value that
    starts at a `{` or `[` and holds `{"question", "answer"}` objects wins.
    """
    decoder = json.JSONDecoder()
    for text in [m.group(1) for m in FENCE.finditer(reply)] + [reply]:
        for start, char in enumerate(text):
            if char not in "[{":
                continue
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            pairs = _pairs_in(value)
            if pairs is not None:
                return pairs
    return None


def _pairs_in(value: Any) -> list[dict[str, str]] | None:
    """Pairs in `[{...}]`, `{"pairs": [...]}` (any key) or a single `{"question", "answer"}`."""
    if isinstance(value, dict):
        if "question" in value and "answer" in value:
            return _pairs_in([value])
        for item in value.values():
            if isinstance(item, list):
                pairs = _pairs_in(item)
                if pairs is not None:
                    return pairs
        return None
    if isinstance(value, list):
        pairs = [{"question": str(v["question"]), "answer": str(v["answer"])} for v in value
                 if isinstance(v, dict) and v.get("question") and v.get("answer") is not None]
        return pairs if pairs or not value else None
    return None


def find_span(answer: str, text: str) -> str | None:
    """`answer` as it is written in `text` (ignoring case and runs of whitespace), or None.

    A trailing period and surrounding quotes of the answer are ignored; the span comes back
    with its whitespace collapsed.
    """
    needle = " ".join(answer.strip(ANSWER_TRIM).rstrip(".").split()).casefold()
    if not needle:
        return None
    folded, origin = [], []  # folded text, and for each of its characters the index in `text`
    for i, char in enumerate(text):
        if char.isspace():
            if folded and folded[-1] != " ":
                folded.append(" ")
                origin.append(i)
            continue
        for c in char.casefold():
            folded.append(c)
            origin.append(i)
    start = "".join(folded).find(needle)
    if start < 0:
        return None
    return " ".join(text[origin[start]:origin[start + len(needle) - 1] + 1].split())


# --- the APIs ---------------------------------------------------------------------------

class QaClient:
    """Sends one prompt to a provider's API and returns the reply's text."""

    def __init__(self, provider: str, model: str, *, api_key: str, base_url: str | None = None,
                 max_tokens: int | None = None, http: PoliteSession | None = None, key_env: str = ""):
        if max_tokens is not None and max_tokens < 1:
            raise LmzooError(f"--max-tokens must be >= 1 (or left out), got {max_tokens}")
        self.provider, self.model, self.max_tokens = provider, model, max_tokens
        self.key_env = key_env or PROVIDERS[provider].env
        base = (base_url or PROVIDERS[provider].base_url).rstrip("/")
        path = PROVIDERS[provider].path
        self.url = base + (path[3:] if base.endswith("/v1") else path)  # ".../v1" as base works too
        self.http = http or PoliteSession(user_agent("qa-pairs"), rate=2.0)
        if provider == "anthropic":
            self.headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        else:
            self.headers = {"Authorization": f"Bearer {api_key}"}
        self.usage = {"input_tokens": 0, "output_tokens": 0}

    def ask(self, prompt: str) -> str:
        if self.provider == "anthropic":
            body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens or DEFAULT_MAX_TOKENS,
                                    "system": SYSTEM, "messages": [{"role": "user", "content": prompt}]}
        else:
            body = {"model": self.model, "messages": [{"role": "system", "content": SYSTEM},
                                                      {"role": "user", "content": prompt}]}
            if self.max_tokens:
                body["max_tokens"] = self.max_tokens
        try:
            data = self.http.post_json(self.url, body, headers=self.headers)
        except HttpStatusError as err:
            raise self._status_error(err) from None
        try:
            if self.provider == "anthropic":
                text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
                usage = (data.get("usage") or {}).get("input_tokens"), (data.get("usage") or {}).get("output_tokens")
            else:
                text = data["choices"][0]["message"]["content"] or ""
                usage = (data.get("usage") or {}).get("prompt_tokens"), (data.get("usage") or {}).get(
                    "completion_tokens")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LmzooError(f"{self.url} answered without a {self.provider} reply ({str(data)[:100]}); check "
                             "--provider and --base-url") from None
        self.usage["input_tokens"] += usage[0] or 0
        self.usage["output_tokens"] += usage[1] or 0
        return text

    def _status_error(self, err: HttpStatusError) -> LmzooError:
        what = f"the {self.provider} API at {self.url} answered HTTP {err.status} ({err.detail})"
        if err.status in (401, 403):
            return LmzooError(f"{what}: the key in {self.key_env} was refused; check it")
        if err.status == 404:
            return LmzooError(f"{what}; check --base-url and --model")
        return LmzooError(f"{what}; check --model and --max-tokens")


def api_key(provider: str, env: str | None = None) -> tuple[str, str]:
    """`(key, variable)` from the environment; a one-line error naming the variable if unset."""
    if provider not in PROVIDERS:
        raise LmzooError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    env = env or PROVIDERS[provider].env
    key = os.environ.get(env, "").strip()
    if not key:
        raise LmzooError(f"the {provider} API key is not set: export {env}=... (or name another variable with "
                         "--api-key-env)")
    return key, env


# --- articles in, pairs out, resumably ---------------------------------------------------

def list_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    return expand_paths(paths, lambda p, root: visible(p, root) and p.suffix == ".jsonl", "*.jsonl files", "articles")


def _iter_articles(files: list[Path], limit: int | None) -> Iterator[dict[str, Any]]:
    """The first `limit` articles with distinct titles (all if None)."""
    seen: set[str] = set()
    for path in files:
        for where, record in iter_jsonl(path):
            if not isinstance(record.get("title"), str) or not isinstance(record.get("text"), str):
                raise LmzooError(f"{where} is not an article (JSON with \"title\" and \"text\"); pass the "
                                 "output of lmzoo data wiki-fetch or wiki-dump")
            if record["title"] in seen:
                continue
            if limit is not None and len(seen) >= limit:
                return
            seen.add(record["title"])
            yield record


def _is_progress_line(record: dict[str, Any]) -> bool:
    return "format" in record or ("title" in record and "section_index" in record)


def _is_pair(record: dict[str, Any]) -> bool:
    return all(key in record for key in ("question", "answer", "title", "section_index"))


def _piece(record: dict[str, Any]) -> tuple[Any, Any]:
    return record.get("title"), record.get("section_index")


def _resume(out: Path, progress: Path, run: dict[str, Any]) -> tuple[set[tuple[str, int]], int]:
    """The finished pieces and the pairs in `out`, after cutting `out` back to those pieces.

    Both files are checked to be qa-pairs output before anything is cut: what is cut can only
    be the pairs of the one piece a crash interrupted (or a torn line)."""
    lines = read_own_jsonl(progress, _is_progress_line, (b'{"format": ', b'{"title": '), "qa-pairs progress file")
    if not lines:
        if out.exists() and out.stat().st_size:
            raise LmzooError(f"{out} exists but {progress} does not; use another --out (or delete {out})")
        progress.write_text(json.dumps({"format": PROGRESS_FORMAT, "format_version": PROGRESS_VERSION,
                                        "run": run}) + "\n", encoding="utf-8")
        return set(), 0
    header = lines[0][1]
    if header.get("format") != PROGRESS_FORMAT or header.get("format_version", 0) > PROGRESS_VERSION:
        raise LmzooError(f"{progress} is not a qa-pairs progress file; use another --out")
    if header.get("run") != run:
        raise LmzooError(f"{out} was written with other section settings ({header.get('run')}); use the same "
                         "--section-chars and --min-section-chars, or another --out")
    done = {_piece(r) for _, r in lines[1:]}
    if done and not out.exists():
        raise LmzooError(f"{progress} lists finished sections but {out} is gone; delete {progress} to start again")
    pairs = read_own_jsonl(out, _is_pair, (b'{"question": ',), "qa-pairs output file")
    finished = 0
    while finished < len(pairs) and _piece(pairs[finished][1]) in done:
        finished += 1
    unfinished = {_piece(record) for _, record in pairs[finished:]}
    if len(unfinished) > 1 or unfinished & done:
        raise LmzooError(f"{out} does not match {progress} (its pairs do not follow the finished sections "
                         "it lists); use another --out")
    if out.exists():
        with open(out, "r+b") as f:
            f.truncate(pairs[finished - 1][0] if finished else 0)
    return done, finished


def generate_qa_pairs(inputs: Iterable[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike,
                      client: QaClient, *, max_pairs: int = 5, limit: int | None = None,
                      section_chars: int = 4000, min_section_chars: int = 150,
                      progress: bool = False) -> dict[str, Any]:
    """Append the pairs of every piece of the articles in `inputs` to `out`; return a summary.

    `limit` takes only the first N articles; a rerun (with a larger limit, too) skips the
    pieces already done.
    """
    if max_pairs < 1 or (limit is not None and limit < 1) or section_chars < 1 or min_section_chars < 0:
        raise LmzooError("--max-pairs-per-section, --limit and --section-chars must be at least 1")
    files = list_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    out = Path(out)
    if out.is_dir():
        raise LmzooError(f"--out {out} is a directory; name a .jsonl file")
    with output_lock(out):  # one writer per file: two runs would ask about and append the same pieces
        out.parent.mkdir(parents=True, exist_ok=True)
        progress_path = out.with_name(out.name + ".progress")
        done, pairs_before = _resume(out, progress_path, {"section_chars": section_chars,
                                                          "min_section_chars": min_section_chars})

        def pieces() -> Iterator[tuple[dict[str, Any], int, str, str]]:
            for article in _iter_articles(files, limit):
                for index, (heading, text) in enumerate(split_sections(article["text"], section_chars,
                                                                       min_section_chars)):
                    yield article, index, heading, text

        todo = sum((a["title"], i) not in done for a, i, _, _ in pieces())
        stats = {"new_pairs": 0, "sections_done": 0, "not_in_text": 0, "unparseable_replies": 0, "duplicates": 0,
                 "over_limit": 0}
        requests_before = client.http.requests
        bar = tqdm(total=todo, desc="qa-pairs", unit="section", disable=not progress, dynamic_ncols=True)
        try:
            with open(out, "a", encoding="utf-8") as f, open(progress_path, "a", encoding="utf-8") as p:
                for article, index, heading, text in pieces():
                    if (article["title"], index) in done:
                        continue
                    prompt = PROMPT.format(n=max_pairs, title=article["title"], section=heading or "(introduction)",
                                           text=text)
                    for pair in _keep(parse_pairs(client.ask(prompt)), text, max_pairs, stats):
                        f.write(json.dumps({**pair, "title": article["title"], "section": heading,
                                            "section_index": index, "source_url": article.get("url")},
                                           ensure_ascii=False) + "\n")
                        stats["new_pairs"] += 1
                    f.flush()  # the pairs first, then the mark that the piece is done
                    p.write(json.dumps({"title": article["title"], "section_index": index}, ensure_ascii=False) + "\n")
                    p.flush()
                    done.add((article["title"], index))
                    stats["sections_done"] += 1
                    bar.update()
        finally:
            bar.close()
        return {"out": str(out), "pairs": pairs_before + stats["new_pairs"], "new_pairs": stats["new_pairs"],
                "sections": len(done), "sections_done_now": stats["sections_done"],
                "dropped": {k: stats[k] for k in ("not_in_text", "duplicates", "over_limit")},
                "unparseable_replies": stats["unparseable_replies"], "requests": client.http.requests - requests_before,
                "usage": dict(client.usage)}


def _keep(pairs: list[dict[str, str]] | None, text: str, max_pairs: int,
          stats: dict[str, int]) -> list[dict[str, str]]:
    """The extractive, distinct pairs, at most `max_pairs`; the rest is counted."""
    if pairs is None:
        stats["unparseable_replies"] += 1
        return []
    kept: list[dict[str, str]] = []
    questions: set[str] = set()
    for pair in pairs:
        question = " ".join(pair["question"].split())
        span = find_span(pair["answer"], text)
        if span is None:
            stats["not_in_text"] += 1
        elif not question or question.casefold() in questions:
            stats["duplicates"] += 1
        elif len(kept) >= max_pairs:
            stats["over_limit"] += 1
        else:
            questions.add(question.casefold())
            kept.append({"question": question, "answer": span})
    return kept
