"""Wikipedia over the web APIs -> JSONL: collection, politeness, retries, resume, dedup, the CLI.

A local ThreadingHTTPServer plays both the MediaWiki API and the Wikimedia pageviews API with
answers shaped like the real ones (format version 2); no test needs the internet.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
from local_http import JsonServer as FakeServer

from lmzoo.cli.main import main
from lmzoo.data.http import PoliteSession
from lmzoo.data.wiki_fetch import SiteInfo, clean_extract, fetch_wiki_articles, is_article_title
from lmzoo.errors import LmzooError

LONG = "Er war ein theoretischer Physiker und gilt als einer der bedeutendsten Wissenschaftler. " * 3
EXTRACTS = {  # title -> (TextExtracts plain text with == headings ==, or None for a missing page)
    "Albert Einstein": f"Albert Einstein war ein Physiker.\n{LONG}\n\n\n== Leben ==\nEr wurde 1879 in Ulm geboren."
                       "\n\n\n=== Leer ===\n\n\n== Weblinks ==\nOffizielle Seite\n=== Unter Weblinks ===\nAuch weg.",
    "Berlin": f"Berlin ist die Hauptstadt Deutschlands.\n{LONG}",
    "Physik": f"Die Physik ist eine Naturwissenschaft.\n{LONG}",
    "Chemie": f"Die Chemie ist eine Naturwissenschaft.\n{LONG}",
    "Optik": f"Die Optik ist die Lehre vom Licht.\n{LONG}",
    "Mechanik": f"Die Mechanik ist ein Teilgebiet der Physik.\n{LONG}",
    "Kurz": "Zu kurz.",
    "Mars (Begriffsklärung)": f"Mars steht für:\n{LONG}",
    "Gelöscht": None,
}
REDIRECTS = {"Einstein": "Albert Einstein"}
TOP = {(2024, 5): ["Wikipedia:Hauptseite", "Spezial:Suche", "-", "Albert_Einstein", "Einstein", "Kurz", "Berlin",
                   "Gelöscht", "Mars_(Begriffsklärung)", "Benutzer:Jemand", "Physik"],
       (2024, 4): ["Berlin", "Chemie", "Optik"]}
CATEGORY = {"Kategorie:Physik": [[{"ns": 0, "title": "Optik"}, {"ns": 14, "title": "Kategorie:Teilgebiet"},
                                  {"ns": 0, "title": "Physik"}],
                                 [{"ns": 0, "title": "Mechanik"}]],
            "Kategorie:Teilgebiet": [[{"ns": 0, "title": "Chemie"}]]}
VIEWS = {"Optik": 50, "Physik": 900, "Mechanik": 300, "Chemie": 1000}


def wiki(request):
    """The MediaWiki API and the pageviews API, as far as wiki-fetch uses them."""
    path, q = request["path"], request["query"]
    if path.startswith("/metrics/pageviews/top/"):
        parts = path.split("/")
        month = (int(parts[-3]), int(parts[-2]))
        if parts[4] != "de.wikipedia" or month not in TOP:
            return 404, {"type": "https://mediawiki.org/wiki/HyperSwitch/errors/not_found", "title": "Not found.",
                         "detail": "The date(s) you used are valid, but we either do not have data for those "
                                   "date(s), or the project you asked for is not loaded yet."}, {}
        articles = [{"article": a, "views": 1000 - i, "rank": i + 1} for i, a in enumerate(TOP[month])]
        return 200, {"items": [{"project": "de.wikipedia", "access": "all-access", "year": str(month[0]),
                                "month": f"{month[1]:02d}", "day": "all-days", "articles": articles}]}, {}
    assert path == "/w/api.php" and q["action"] == "query" and q["formatversion"] == "2"
    if q.get("meta") == "siteinfo":
        return 200, {"batchcomplete": True, "query": {
            "general": {"mainpage": "Wikipedia:Hauptseite", "server": "https://de.wikipedia.org",
                        "articlepath": "/wiki/$1", "lang": "de"},
            "namespaces": {"-1": {"id": -1, "name": "Spezial", "canonical": "Special"},
                           "0": {"id": 0, "name": ""},
                           "2": {"id": 2, "name": "Benutzer", "canonical": "User"},
                           "4": {"id": 4, "name": "Wikipedia", "canonical": "Project"},
                           "14": {"id": 14, "name": "Kategorie", "canonical": "Category"}},
            "namespacealiases": [{"id": 6, "alias": "Bild"}]}}, {}
    if q.get("list") == "categorymembers":
        pages = CATEGORY.get(q["cmtitle"].replace("Category:", "Kategorie:"), [[]])
        index = int(q.get("cmcontinue", "0"))
        allowed = {int(n) for n in q["cmnamespace"].split("|")}
        answer = {"batchcomplete": True, "query": {"categorymembers": [
            {"pageid": 1, **m} for m in pages[index] if m["ns"] in allowed]}}
        if index + 1 < len(pages):
            answer["continue"] = {"cmcontinue": str(index + 1), "continue": "-||"}
        return 200, answer, {}
    if q.get("prop") == "pageviews":
        return 200, {"batchcomplete": True, "query": {"pages": [
            {"pageid": 1, "ns": 0, "title": t, "pageviews": {"2024-05-01": VIEWS.get(t, 0), "2024-05-02": None}}
            for t in q["titles"].split("|")]}}, {}
    assert q["prop"] == "extracts|info|pageprops" and q["explaintext"] == "1"
    title = q["titles"]
    query = {}
    if title in REDIRECTS:
        query["redirects"] = [{"from": title, "to": REDIRECTS[title]}]
        title = REDIRECTS[title]
    if EXTRACTS.get(title) is None:
        query["pages"] = [{"ns": 0, "title": title, "missing": True}]
    else:
        page = {"pageid": 7, "ns": 0, "title": title, "extract": EXTRACTS[title], "contentmodel": "wikitext",
                "fullurl": "https://de.wikipedia.org/wiki/" + title.replace(" ", "_")}
        if "Begriffsklärung" in title:
            page["pageprops"] = {"disambiguation": ""}
        query["pages"] = [page]
    return 200, {"batchcomplete": True, "query": query}, {}


@pytest.fixture
def server():
    srv = FakeServer(wiki)
    yield srv
    srv.close()


def session(**kw) -> PoliteSession:
    return PoliteSession(kw.pop("agent", "lmzoo-test/1 (contact: test@example.org)"),
                         **{"rate": 1000, "backoff": 0.001, "retries": 3, "timeout": 5, **kw})


def fetch(server, out, **kw):
    kw.setdefault("http", session())
    return fetch_wiki_articles(out, api_url=server.url + "/w/api.php", pageviews_url=server.url, month="2024-05",
                               **kw)


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_top_articles_end_to_end(server, tmp_path):
    out = tmp_path / "wiki.jsonl"
    summary = fetch(server, out, top=3)
    records = read(out)
    assert [r["title"] for r in records] == ["Albert Einstein", "Berlin", "Physik"]
    first = records[0]
    assert set(first) == {"title", "url", "category", "lang", "text"}
    assert first["url"] == "https://de.wikipedia.org/wiki/Albert_Einstein"
    assert first["lang"] == "de" and first["category"] is None
    assert "Er wurde 1879 in Ulm geboren." in first["text"]
    assert "\n\nLeben\n\n" in first["text"]
    assert "Weblinks" not in first["text"] and "Auch weg" not in first["text"] and "Leer" not in first["text"]
    assert summary["new"] == 3 and summary["articles"] == 3
    # main page, Spezial:, "-" and Benutzer: never reach the API; a redirect to a collected article is a duplicate
    assert summary["skipped"] == {"non_article": 4, "missing": 1, "disambiguation": 1, "too_short": 1,
                                  "duplicate": 1}
    extract_titles = [r["query"]["titles"] for r in server.requests if r["query"].get("prop", "").startswith("ext")]
    assert not any(":" in t or t == "-" for t in extract_titles)
    # the User-Agent arrives on every request
    assert {r["headers"]["User-Agent"] for r in server.requests} == {"lmzoo-test/1 (contact: test@example.org)"}


def test_top_list_reaches_back_a_month_and_dedups(server, tmp_path):
    out = tmp_path / "wiki.jsonl"
    fetch(server, out, top=5)  # May has 3 articles; April adds Chemie and Optik (Berlin again is not refetched)
    titles = [r["title"] for r in read(out)]
    assert titles == ["Albert Einstein", "Berlin", "Physik", "Chemie", "Optik"]
    assert len(titles) == len(set(titles))


def test_resume_after_interruption_without_duplicates(server, tmp_path):
    out = tmp_path / "wiki.jsonl"
    fetch(server, out, top=2)
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"title": "Physik", "url": "https://de.wikip')  # a crash mid-write
    before = len(server.requests)
    summary = fetch(server, out, top=3)
    records = read(out)  # the torn line is gone: every line parses
    assert [r["title"] for r in records] == ["Albert Einstein", "Berlin", "Physik"]
    assert summary["new"] == 1 and summary["articles"] == 3
    refetched = [r["query"].get("titles") for r in server.requests[before:] if "extracts" in r["query"].get("prop", "")]
    assert "Albert Einstein" not in refetched and "Berlin" not in refetched
    summary = fetch(server, out, top=3)  # a finished run fetches no article again
    assert summary["new"] == 0 and len(read(out)) == 3


def test_categories_ranked_by_views_with_continuation(server, tmp_path):
    out = tmp_path / "wiki.jsonl"
    summary = fetch(server, out, top=2, categories=["Physik"], category_depth=1)
    records = read(out)
    # members over two continued answers plus a subcategory's, the most viewed first
    assert [(r["title"], r["category"]) for r in records] == [("Chemie", "Physik"), ("Physik", "Physik")]
    assert summary["per_category"] == {"Physik": 2}
    member_queries = [r["query"] for r in server.requests if r["query"].get("list") == "categorymembers"]
    assert any("cmcontinue" in q for q in member_queries)
    assert {q["cmtitle"] for q in member_queries} == {"Category:Physik", "Kategorie:Teilgebiet"}
    # without depth, subcategories are not entered; a prefixed name works too; titles already there are skipped
    fetch(server, out, top=3, categories=["Kategorie:Physik"])
    assert [r["title"] for r in read(out)] == ["Chemie", "Physik", "Mechanik"]


def test_unknown_category_is_one_line_error(server, tmp_path):
    with pytest.raises(LmzooError, match="Kategorie:Gibtsnicht has no articles"):
        fetch(server, tmp_path / "w.jsonl", top=1, categories=["Kategorie:Gibtsnicht"])


def test_429_with_retry_after_then_success(tmp_path):
    calls = {"n": 0}

    def flaky(request):
        if "extracts" in request["query"].get("prop", ""):
            calls["n"] += 1
            if calls["n"] == 1:
                return 429, {"error": {"code": "ratelimited", "info": "slow down"}}, {"Retry-After": "0.3"}
            if calls["n"] == 2:
                return 503, {"error": "busy"}, {}
        return wiki(request)

    srv = FakeServer(flaky)
    try:
        start = time.monotonic()
        fetch(srv, tmp_path / "w.jsonl", top=1)
        assert time.monotonic() - start >= 0.3  # Retry-After honoured though the backoff is 1 ms
        assert [r["title"] for r in read(tmp_path / "w.jsonl")] == ["Albert Einstein"]
        assert calls["n"] == 3
    finally:
        srv.close()


def test_rate_limit_spaces_requests(server, tmp_path):
    start = time.monotonic()
    fetch(server, tmp_path / "w.jsonl", top=1, http=session(rate=20))
    assert time.monotonic() - start >= (len(server.requests) - 1) / 20 * 0.9


def test_unreachable_server_is_one_line_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LmzooError, match=r"failed 2 times .*ConnectionError.*check the URL") as err:
        fetch_wiki_articles(tmp_path / "w.jsonl", top=1, api_url=f"http://127.0.0.1:{port}/w/api.php",
                            http=session(retries=1))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"lang": "Deutsch"}, "language code"),
    ({"top": 0}, "--top must be at least 1"),
    ({"month": "05/2024"}, "--month must look like 2024-05"),
])
def test_bad_input(tmp_path, kwargs, message):
    with pytest.raises(LmzooError, match=message):
        fetch_wiki_articles(tmp_path / "w.jsonl", **{"top": 1, **kwargs})


def test_output_of_another_language_is_refused(server, tmp_path):
    out = tmp_path / "w.jsonl"
    out.write_text(json.dumps({"title": "London", "url": "", "category": None, "lang": "en", "text": "x"}) + "\n")
    with pytest.raises(LmzooError, match="holds 'en' articles"):
        fetch(server, out, top=1)


def test_title_filter_and_extract_cleaning():
    site = SiteInfo()
    assert is_article_title("Albert_Einstein", site) and is_article_title("Star Wars: Episode I", site)
    assert not any(is_article_title(t, site) for t in ["Spezial:Suche", "Special:Search", "Main_Page", "-",
                                                       "Wikipedia:Hauptseite", "Datei:X.jpg"])
    text = "Kopf.\n\n\n== Geschichte ==\nA  b.\nC.\n\n\n== Siehe auch ==\nListe\n== Einzelnachweise ==\n"
    assert clean_extract(text) == "Kopf.\n\nGeschichte\n\nA b.\n\nC."


def test_cli(server, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    args = ["data", "wiki-fetch", "--lang", "de", "--top", "2", "--out", str(out), "--month", "2024-05",
            "--api-url", server.url + "/w/api.php", "--pageviews-url", server.url, "--rate", "1000",
            "--backoff", "0.001", "--contact", "someone@example.org"]
    assert main(args) == 0
    assert [r["title"] for r in read(out)] == ["Albert Einstein", "Berlin"]
    assert '"new": 2' in capsys.readouterr().out
    agent = server.requests[0]["headers"]["User-Agent"]
    assert agent.startswith("lmzoo/") and "wiki-fetch" in agent and "contact: someone@example.org" in agent

    assert main(["data", "wiki-fetch", "--lang", "x1", "--top", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmzoo: error: lang must be") and err.count("\n") == 1
