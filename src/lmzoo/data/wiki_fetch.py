"""Wikipedia articles over the web APIs -> one JSONL file, politely and resumably.

What is collected:
- `top=N` alone: the N most-viewed articles of the wiki, from the Wikimedia pageviews API
  (`/metrics/pageviews/top/{lang}.wikipedia/all-access/{year}/{month}/all-days`, 1000 titles
  a month). Non-articles there (the main page, `Special:`/`Spezial:` pages, `-`, any title
  in another namespace, as the wiki's own siteinfo names them) are skipped; when a month has
  too few articles, earlier months (up to 12) fill the list.
- `categories`: per category, its N most-viewed articles (namespace 0; `category_depth` > 0
  also takes subcategories' members), ranked by the last 30 days of views (the MediaWiki API's
  `prop=pageviews`, 50 titles a request).

The text comes from the MediaWiki API's TextExtracts (`prop=extracts&explaintext=1`): the
server renders the article, so text that templates produce (dates, units, names) is kept,
and nothing beyond `requests` is needed. TextExtracts returns the full text of only one page
per request, so articles are fetched one by one. Reference sections ("Weblinks",
"Einzelnachweise", "See also", ...) and headings left without text are dropped, and headings
become paragraphs of their own, as in `wiki_dump` output. Disambiguation pages, missing
pages and articles shorter than `min_chars` are skipped and counted.

The output file is the state: each article is appended as one line `{"title", "url",
"category", "lang", "text"}` and flushed. A rerun reads it, checks every line is an article,
then cuts a torn last line (a crash mid-write), and skips the titles it holds (after redirects
too), so an interrupted run continues without duplicates. Counts per category cover all runs
into the file. A file that is not wiki-fetch output is refused, never changed.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tqdm import tqdm

from lmzoo.data.http import HttpStatusError, PoliteSession, user_agent
from lmzoo.data.wikitext import DROPPED_SECTIONS, LANG_CODE
from lmzoo.errors import LmzooError
from lmzoo.io import read_own_jsonl
from lmzoo.locking import output_lock

PAGEVIEWS_URL = "https://wikimedia.org/api/rest_v1"
MAX_MONTHS = 12  # how far back the top list may reach for more articles
PAGEVIEW_DAYS = 30  # the window that ranks category members
TITLES_PER_REQUEST = 50  # the MediaWiki API's limit for titles=a|b|c
# Namespace names that are never articles, whatever the wiki's siteinfo says (English and German).
NON_ARTICLE_PREFIXES = {"special", "spezial", "wikipedia", "wp", "user", "benutzer", "talk", "diskussion",
                        "file", "datei", "image", "bild", "media", "medium", "category", "kategorie", "template",
                        "vorlage", "help", "hilfe", "portal", "mediawiki", "module", "modul", "draft"}
MAIN_PAGES = {"main page", "hauptseite"}
SKIP_REASONS = ("non_article", "missing", "disambiguation", "too_short", "duplicate")
HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$")
MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass
class SiteInfo:
    """What filtering titles needs to know about a wiki (from `meta=siteinfo`)."""

    namespaces: set[str] = field(default_factory=lambda: set(NON_ARTICLE_PREFIXES))  # lower case, not ns 0
    category_names: set[str] = field(default_factory=lambda: {"category", "kategorie"})
    main_pages: set[str] = field(default_factory=lambda: set(MAIN_PAGES))
    article_url: str = ""  # "https://de.wikipedia.org/wiki/" for titles without a fullurl


def is_article_title(title: str, site: SiteInfo) -> bool:
    """False for the main page, `-` and titles in another namespace (`Spezial:Suche`)."""
    title = title.replace("_", " ").strip()
    if not title or title == "-" or title.lower() in site.main_pages:
        return False
    prefix, colon, _ = title.partition(":")
    return not (colon and prefix.strip().lower() in site.namespaces)


def fetch_wiki_articles(out: str | os.PathLike, *, lang: str = "de", top: int = 100,
                        categories: Iterable[str] = (), category_depth: int = 0, month: str | None = None,
                        min_chars: int = 200, api_url: str | None = None, pageviews_url: str = PAGEVIEWS_URL,
                        http: PoliteSession | None = None, progress: bool = False) -> dict[str, Any]:
    """Append up to `top` articles (per category, with `categories`) to the JSONL file `out`.

    Returns the summary. `month` ("2024-05") picks the pageviews month of the top list
    (default: last month). `api_url` defaults to `https://{lang}.wikipedia.org/w/api.php`.
    `http` is the session to use (default: one with lmzoo's User-Agent and 1 request/s).
    """
    if not LANG_CODE.match(lang):
        raise LmzooError(f"lang must be a Wikipedia language code such as de or en, got {lang!r}")
    if top < 1 or category_depth < 0 or min_chars < 0:
        raise LmzooError("--top must be at least 1; --category-depth and --min-chars must be >= 0")
    first_month = _parse_month(month)
    categories = [c.strip() for c in categories if c.strip()]
    api_url = api_url or f"https://{lang}.wikipedia.org/w/api.php"
    http = http or PoliteSession(user_agent("wiki-fetch"))
    out = Path(out)
    if out.is_dir():
        raise LmzooError(f"--out {out} is a directory; name a .jsonl file")
    with output_lock(out):  # one writer per file: two runs would fetch and append the same titles
        done = _read_done(out, lang)
        site = _site_info(http, api_url)
        stats = {"new": 0, "requests_before": http.requests, "skipped": dict.fromkeys(SKIP_REASONS, 0)}
        # Category members first: a wrong category name fails before anything is fetched.
        plans: list[tuple[str | None, Iterable[str]]] = []
        for name in categories:
            label = _category_label(name, site)
            if done.per_category.get(label, 0) < top:  # a category finished in an earlier run needs nothing
                plans.append((label, _ranked_members(http, api_url, _category_title(name, site), category_depth)))
        if not categories:
            plans = [(None, _top_titles(http, pageviews_url, f"{lang}.wikipedia", first_month, site, stats["skipped"]))]
        wanted = sum(max(0, top - done.per_category.get(label, 0)) for label, _ in plans)
        out.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=wanted, desc="wiki-fetch", unit="article", disable=not progress, dynamic_ncols=True)
        try:
            with open(out, "a", encoding="utf-8") as f:
                for label, titles in plans:
                    _collect(http, api_url, site, label, titles, top, min_chars, lang, done, stats, f, bar)
        finally:
            bar.close()
        return {"out": str(out), "articles": sum(done.per_category.values()), "new": stats["new"],
                "skipped": stats["skipped"], "requests": http.requests - stats["requests_before"],
                "per_category": {k if k is not None else "(most viewed)": v for k, v in done.per_category.items()}}


# --- the output file ----------------------------------------------------------------------

@dataclass
class _Done:
    titles: set[str] = field(default_factory=set)
    before: set[str] = field(default_factory=set)  # the titles earlier runs wrote
    per_category: dict[str | None, int] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        self.titles.add(record["title"])
        self.per_category[record.get("category")] = self.per_category.get(record.get("category"), 0) + 1


def _read_done(out: Path, lang: str) -> _Done:
    """The articles already in `out`; a torn last line (a crash mid-write) is cut off."""
    done = _Done()
    for _, record in read_own_jsonl(out, _is_article, (b'{"title": ',), "wiki-fetch article file"):
        if record.get("lang") != lang:
            raise LmzooError(f"{out} holds {record.get('lang')!r} articles, not {lang!r}; use another --out")
        done.add(record)
    done.before = set(done.titles)
    return done


def _is_article(record: dict[str, Any]) -> bool:
    return isinstance(record.get("title"), str) and isinstance(record.get("text"), str)


def _collect(http: PoliteSession, api_url: str, site: SiteInfo, label: str | None, titles: Iterable[str],
             top: int, min_chars: int, lang: str, done: _Done, stats: dict[str, Any], f: Any, bar: tqdm) -> None:
    """Append articles of `titles`, in order, until `label` has `top` of them."""
    for title in titles:
        if done.per_category.get(label, 0) >= top:
            return
        if title in done.titles:  # from an earlier run (not counted), or a duplicate in this one
            stats["skipped"]["duplicate"] += title not in done.before
            continue
        article = _fetch_article(http, api_url, title, min_chars, site)
        if isinstance(article, str):
            stats["skipped"][article] += 1
            continue
        if article["title"] in done.titles:  # a redirect to an article we have
            stats["skipped"]["duplicate"] += article["title"] not in done.before
            continue
        record = {"title": article["title"], "url": article["url"], "category": label, "lang": lang,
                  "text": article["text"]}
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        done.add(record)
        stats["new"] += 1
        bar.update()


# --- the APIs -------------------------------------------------------------------------------

def _api(http: PoliteSession, api_url: str, **params: Any) -> dict[str, Any]:
    """One MediaWiki API query (JSON, format version 2); API errors become LmzooErrors."""
    try:
        data = http.get_json(api_url, {"action": "query", "format": "json", "formatversion": "2", **params})
    except HttpStatusError as err:
        raise LmzooError(f"the MediaWiki API at {api_url} answered HTTP {err.status} ({err.detail}); "
                         "check --api-url") from None
    if not isinstance(data, dict) or ("query" not in data and "error" not in data and "batchcomplete" not in data):
        raise LmzooError(f"{api_url} is not a MediaWiki API (no 'query' in its answer); check --api-url")
    if "error" in data:
        error = data["error"]
        raise LmzooError(f"the MediaWiki API at {api_url} refused a query ({error.get('code')}: "
                         f"{error.get('info')}); check the options")
    return data


def _api_pages(http: PoliteSession, api_url: str, **params: Any) -> Iterator[dict[str, Any]]:
    """The results of a query through all its continuations, one answer at a time."""
    cont: dict[str, Any] = {}
    while True:
        data = _api(http, api_url, **params, **cont)
        yield data.get("query", {})
        if "continue" not in data:
            return
        cont = data["continue"]


def _site_info(http: PoliteSession, api_url: str) -> SiteInfo:
    query = _api(http, api_url, meta="siteinfo", siprop="general|namespaces|namespacealiases").get("query", {})
    site = SiteInfo()
    for ns in query.get("namespaces", {}).values():
        names = {ns.get("name", ""), ns.get("canonical", "")}
        if ns.get("id") != 0:
            site.namespaces |= {n.lower() for n in names if n}
        if ns.get("id") == 14:
            site.category_names |= {n.lower() for n in names if n}
    for alias in query.get("namespacealiases", []):
        if alias.get("id") != 0 and alias.get("alias"):
            site.namespaces.add(alias["alias"].lower())
            if alias.get("id") == 14:
                site.category_names.add(alias["alias"].lower())
    general = query.get("general", {})
    if general.get("mainpage"):
        site.main_pages.add(general["mainpage"].lower())
    if general.get("server") and general.get("articlepath"):
        site.article_url = general["server"] + general["articlepath"].replace("$1", "")
    return site


def _parse_month(month: str | None) -> dt.date:
    if month is None:
        first_of_this = dt.date.today().replace(day=1)
        return (first_of_this - dt.timedelta(days=1)).replace(day=1)
    match = MONTH.match(month)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise LmzooError(f"--month must look like 2024-05, got {month!r}")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def _top_titles(http: PoliteSession, pageviews_url: str, project: str, month: dt.date, site: SiteInfo,
                skipped: dict[str, int]) -> Iterator[str]:
    """Article titles by views, most viewed first: `month`, then earlier months for more."""
    seen: set[str] = set()
    found_month = False
    for _ in range(MAX_MONTHS):
        url = f"{pageviews_url.rstrip('/')}/metrics/pageviews/top/{project}/all-access/{month.year}/" \
              f"{month.month:02d}/all-days"
        try:
            data = http.get_json(url)
        except HttpStatusError as err:
            if err.status != 404:  # 404: no data for this month (yet); try the one before
                raise LmzooError(f"the pageviews API answered HTTP {err.status} for {url} ({err.detail}); "
                                 "check --pageviews-url and --lang") from None
        else:
            found_month = True
            items = (data.get("items") or [{}]) if isinstance(data, dict) else [{}]
            for entry in sorted(items[0].get("articles", []), key=lambda a: a.get("rank", 0)):
                title = str(entry.get("article", "")).replace("_", " ")
                if title in seen:
                    continue
                seen.add(title)
                if is_article_title(title, site):
                    yield title
                else:
                    skipped["non_article"] += 1
        month = (month - dt.timedelta(days=1)).replace(day=1)
    if not found_month:
        raise LmzooError(f"the pageviews API has no top list for {project} (HTTP 404 for {MAX_MONTHS} months); "
                         "check --lang, --month and --pageviews-url")


def _category_title(name: str, site: SiteInfo) -> str:
    prefix, colon, _ = name.partition(":")
    return name if colon and prefix.strip().lower() in site.category_names else f"Category:{name}"


def _category_label(name: str, site: SiteInfo) -> str:
    """The category as it goes into the output: its name without the namespace prefix."""
    prefix, colon, rest = name.partition(":")
    return rest.strip() if colon and prefix.strip().lower() in site.category_names else name


def _ranked_members(http: PoliteSession, api_url: str, category: str, depth: int) -> list[str]:
    """The category's articles (and its subcategories' down to `depth`), most viewed first."""
    titles: dict[str, None] = {}
    queue, seen = [(category, 0)], {category}
    while queue:
        cat, level = queue.pop(0)
        namespaces = "0|14" if level < depth else "0"
        for query in _api_pages(http, api_url, list="categorymembers", cmtitle=cat, cmnamespace=namespaces,
                                cmlimit="max", cmprop="title"):
            for member in query.get("categorymembers", []):
                if member.get("ns") == 0:
                    titles.setdefault(member["title"], None)
                elif member.get("ns") == 14 and member["title"] not in seen:
                    seen.add(member["title"])
                    queue.append((member["title"], level + 1))
    if not titles:
        raise LmzooError(f"{category} has no articles on this wiki; check the name (as in the category's "
                         "page title) and --lang")
    views = _views(http, api_url, list(titles))
    return sorted(titles, key=lambda t: -views.get(t, 0))  # stable: ties keep the category's order


def _views(http: PoliteSession, api_url: str, titles: list[str]) -> dict[str, int]:
    """Views of the last PAGEVIEW_DAYS days per title (0 where the wiki has no data)."""
    views: dict[str, int] = {}
    for start in range(0, len(titles), TITLES_PER_REQUEST):
        batch = titles[start:start + TITLES_PER_REQUEST]
        for query in _api_pages(http, api_url, prop="pageviews", pvipdays=PAGEVIEW_DAYS, titles="|".join(batch)):
            for page in query.get("pages", []):
                daily = page.get("pageviews")
                if isinstance(daily, dict):
                    views[page["title"]] = views.get(page["title"], 0) + sum(v or 0 for v in daily.values())
    return views


def _fetch_article(http: PoliteSession, api_url: str, title: str, min_chars: int,
                   site: SiteInfo) -> dict[str, str] | str:
    """`{"title", "url", "text"}` of one article (after redirects), or why it is skipped."""
    query = _api(http, api_url, prop="extracts|info|pageprops", explaintext=1, exsectionformat="wiki",
                 inprop="url", ppprop="disambiguation", redirects=1, titles=title).get("query", {})
    pages = query.get("pages") or [{}]
    page = pages[0]
    if page.get("missing") or page.get("invalid") or "title" not in page:
        return "missing"
    if page.get("ns", 0) != 0:
        return "non_article"
    if "disambiguation" in (page.get("pageprops") or {}):
        return "disambiguation"
    text = clean_extract(page.get("extract") or "")
    if len(text) < max(1, min_chars):
        return "too_short"
    url = page.get("fullurl") or site.article_url + quote(page["title"].replace(" ", "_"), safe="/:(),'!*_-.")
    return {"title": page["title"], "url": url, "text": text}


def clean_extract(extract: str) -> str:
    """TextExtracts plain text (headings as `== X ==`) -> paragraphs separated by blank lines.

    Reference sections and their subsections go; a heading stays, as a paragraph of its own,
    only if text or a kept subheading follows it; whitespace in a line is collapsed.
    """
    blocks: list[tuple[int, str]] = []  # (heading level or 0 for a paragraph, text)
    dropping = 0
    for raw in extract.splitlines():
        line = " ".join(raw.split())
        heading = HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            if dropping and level > dropping:
                continue
            dropping = level if title.lower() in DROPPED_SECTIONS else 0
            if not dropping and title:
                blocks.append((level, title))
        elif line and not dropping:
            blocks.append((0, line))
    kept: list[tuple[int, str]] = []
    for level, text in reversed(blocks):
        if level == 0 or (kept and (kept[-1][0] == 0 or kept[-1][0] > level)):
            kept.append((level, text))
    return "\n\n".join(text for _, text in reversed(kept))
