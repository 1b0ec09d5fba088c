"""Verbs that collect data online: `data wiki-fetch`, `data qa-pairs`.

They live under `lmzoo data` (users look for them next to `data wiki-dump`) but in their own
module, so the online code and its `requests` dependency stay apart from `data_commands`.
"""
from __future__ import annotations

import argparse
import json

from lmzoo.paths import check_output_file

DEFAULT_RATE = {"wiki-fetch": 1.0, "qa-pairs": 2.0}


def _data_group(verbs: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `lmzoo data` sub-command group; `data_commands.register` must have run first
    (main.build_parser registers it before this module)."""
    try:
        parser = verbs.choices["data"]
    except KeyError:
        raise RuntimeError("collect_commands.register needs the `data` verb: register data_commands first") from None
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _add_http_options(p: argparse.ArgumentParser, tool: str) -> None:
    g = p.add_argument_group("HTTP")
    g.add_argument("--contact", default=None,
                   help="an e-mail or URL put into the User-Agent, as Wikimedia's policy asks (recommended)")
    g.add_argument("--user-agent", default=None, help="the whole User-Agent header instead (default: lmzoo/VERSION "
                   f"({tool}; contact: CONTACT) python-requests/VERSION)")
    g.add_argument("--rate", type=float, default=DEFAULT_RATE[tool],
                   help=f"at most this many requests per second (default {DEFAULT_RATE[tool]:g})")
    g.add_argument("--retries", type=int, default=5, help="retries on 429, 5xx and connection errors (default 5)")
    g.add_argument("--backoff", type=float, default=1.0,
                   help="first retry wait in seconds, doubled each retry; Retry-After is honoured (default 1)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer (default 60)")


def _session(args, tool: str):
    from lmzoo.data.http import PoliteSession, user_agent

    check_output_file(args.out)
    return PoliteSession(args.user_agent or user_agent(tool, args.contact), rate=args.rate, retries=args.retries,
                         backoff=args.backoff, timeout=args.timeout)


def register(verbs) -> None:
    data = _data_group(verbs)
    p = data.add_parser("wiki-fetch", help="most-viewed and category articles via the Wikipedia APIs -> JSONL "
                        "(resumable; needs internet)")
    p.add_argument("--lang", default="de", help="the Wikipedia's language code (default de)")
    p.add_argument("--top", type=int, required=True, metavar="N",
                   help="the N most-viewed articles; with --category, N per category")
    p.add_argument("--category", action="append", default=[], metavar="NAME",
                   help="take the most-viewed articles of this category (repeatable; 'Physik' or 'Kategorie:Physik')")
    p.add_argument("--category-depth", type=int, default=0,
                   help="also take members of subcategories this many levels down (default 0)")
    p.add_argument("--month", default=None, metavar="YYYY-MM",
                   help="pageviews month of the top list (default: last month)")
    p.add_argument("--min-chars", type=int, default=200, help="skip articles shorter than this (default 200)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="output file; rerunning into it resumes")
    p.add_argument("--api-url", default=None, help="MediaWiki API (default https://LANG.wikipedia.org/w/api.php)")
    p.add_argument("--pageviews-url", default=None, help="Wikimedia REST API (default https://wikimedia.org/api/rest_v1)")
    _add_http_options(p, "wiki-fetch")
    p.set_defaults(run=run_wiki_fetch)

    p = data.add_parser("qa-pairs", help="extractive question/answer pairs from articles via an LLM API "
                        "(resumable; needs internet)")
    p.add_argument("inputs", nargs="+", metavar="ARTICLES", help="JSONL articles (title, text, url), or directories")
    p.add_argument("--provider", required=True, choices=["anthropic", "openai"],
                   help="anthropic (Messages API) or openai (any OpenAI-compatible chat completions server)")
    p.add_argument("--model", required=True, help="the model name, as the provider spells it")
    p.add_argument("--out", required=True, metavar="QA.jsonl", help="output file; rerunning into it resumes")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the key (default ANTHROPIC_API_KEY / OPENAI_API_KEY)")
    p.add_argument("--base-url", default=None,
                   help="API root (default https://api.anthropic.com / https://api.openai.com; a trailing /v1 is fine)")
    p.add_argument("--max-pairs-per-section", type=int, default=5, help="pairs asked for per section (default 5)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N articles")
    p.add_argument("--section-chars", type=int, default=4000, help="longest section sent at once (default 4000)")
    p.add_argument("--min-section-chars", type=int, default=150, help="skip shorter sections (default 150)")
    p.add_argument("--max-tokens", type=int, default=None, help="reply token cap (default 1024 for anthropic, "
                   "none sent for openai)")
    _add_http_options(p, "qa-pairs")
    p.set_defaults(run=run_qa_pairs)


def run_wiki_fetch(args) -> None:
    from lmzoo.data.http import check_url
    from lmzoo.data.wiki_fetch import PAGEVIEWS_URL, fetch_wiki_articles

    for flag, url in (("--api-url", args.api_url), ("--pageviews-url", args.pageviews_url)):
        if url is not None:
            check_url(url, flag)
    summary = fetch_wiki_articles(args.out, lang=args.lang, top=args.top, categories=args.category,
                                  category_depth=args.category_depth, month=args.month, min_chars=args.min_chars,
                                  api_url=args.api_url, pageviews_url=args.pageviews_url or PAGEVIEWS_URL,
                                  http=_session(args, "wiki-fetch"), progress=True)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"next: lmzoo data prepare {args.out} --out DATA_DIR, or lmzoo data qa-pairs {args.out} --provider ...")


def run_qa_pairs(args) -> None:
    from lmzoo.data.qa_pairs import QaClient, api_key, generate_qa_pairs

    key, env = api_key(args.provider, args.api_key_env)  # before anything else: the likeliest mistake
    if args.base_url is not None:
        from lmzoo.data.http import check_url
        check_url(args.base_url, "--base-url")
    client = QaClient(args.provider, args.model, api_key=key, base_url=args.base_url, max_tokens=args.max_tokens,
                      http=_session(args, "qa-pairs"), key_env=env)
    summary = generate_qa_pairs(args.inputs, args.out, client, max_pairs=args.max_pairs_per_section,
                                limit=args.limit, section_chars=args.section_chars,
                                min_section_chars=args.min_section_chars, progress=True)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
