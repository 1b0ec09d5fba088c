"""MediaWiki dumps -> JSONL articles: cleaning, skipping, inputs, resuming, errors, the CLI."""
from __future__ import annotations

import bz2
import json
import os
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

from lmzoo.cli.main import main
from lmzoo.data import read_meta, split_sentences, wiki_dump
from lmzoo.data.wiki_dump import clean_wikitext, extract_wiki_dump
from lmzoo.errors import LmzooError

RICH = """{{Infobox Stadt|Name=Berlin|Einwohner={{formatnum:3850809}}}}
'''Berlin''' ist die [[Hauptstadt]] der [[Deutschland|Bundesrepublik Deutschland]]<ref name="a">{{Internetquelle\
|url=http://x.de|titel=X}}</ref> und mit rund 3,8&nbsp;Millionen Einwohnern die größte [[Stadt]]e \
Deutschlands.<ref name="a" /> Sie liegt an der ''Spree''.<!-- ein Kommentar -->
__NOTOC__
[[Datei:Berlin Skyline.jpg|mini|Die [[Skyline]] von Berlin]]
{| class="wikitable"
! Bezirk !! Einwohner
|-
| Mitte || 380.000
|}
== Geschichte ==
Die erste Erwähnung stammt aus dem Jahr 1237.<ref>Quelle</ref> Mehr in [http://example.org der Chronik][http://x.org].
<span style="color:red">Roter Text</span> &amp; <small>kleiner Text</small> auf http://example.org/bare
=== Leer ===
{{Hauptartikel|Geschichte Berlins}}
== Bezirke ==
* [[Berlin-Mitte|Mitte]]
* [[Pankow]]
== Weblinks ==
* [http://www.berlin.de Offizielle Seite]
=== Unterabschnitt von Weblinks ===
Auch weg.
== Einzelnachweise ==
<references />

[[Kategorie:Berlin]]
[[en:Berlin]]
[[fr:Berlin]]
"""
RICH_CLEAN = """Berlin ist die Hauptstadt der Bundesrepublik Deutschland und mit rund 3,8 Millionen Einwohnern \
die größte Stadte Deutschlands. Sie liegt an der Spree.

Geschichte

Die erste Erwähnung stammt aus dem Jahr 1237. Mehr in der Chronik.
Roter Text & kleiner Text auf http://example.org/bare

Bezirke

Mitte
Pankow"""


def article(i: int) -> str:
    return (f"'''Artikel {i}''' ist ein [[Test|Testartikel]] mit der Nummer {i}.{{{{Infobox|n={i}}}}}"
            f"<ref>Quelle {i}</ref> Er enthält Ä, ö und ß. " * 4 + f"\n\n== Abschnitt ==\nText von Artikel {i}.")


def page(title: str, text: str, pid: int, ns: int = 0, redirect: str | None = None) -> str:
    tag = f"<redirect title={quoteattr(redirect)} />" if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n    {tag}\n"
            f"    <revision>\n      <id>{pid * 10}</id>\n      <text xml:space=\"preserve\">{escape(text)}</text>\n"
            "    </revision>\n  </page>\n")


PAGES = [
    page("Berlin", RICH, 1),
    page("Hauptstadt Deutschlands", "#WEITERLEITUNG [[Berlin]]", 2, redirect="Berlin"),
    page("Alte Weiterleitung", "#redirect [[Berlin]]", 3),  # no <redirect> element, old dumps
    page("Diskussion:Berlin", article(99), 4, ns=1),
    page("Kurz", "'''Kurz''' ist kurz.{{Stub}}", 5),
    *(page(f"Artikel {i}", article(i), 10 + i) for i in range(1, 8)),
]
SMALL_SHARDS = 1000  # bytes: a few articles per shard, so runs cross shard boundaries
SITEINFO = """<siteinfo><sitename>Wikipedia</sitename><dbname>dewiki</dbname>
<base>https://de.wikipedia.org/wiki/Wikipedia:Hauptseite</base><namespaces>
<namespace key="0" case="first-letter" /><namespace key="1" case="first-letter">Diskussion</namespace>
<namespace key="6" case="first-letter">Datei</namespace><namespace key="14" case="first-letter">Kategorie</namespace>
</namespaces></siteinfo>
"""


def full_dump(pages: list[str] = PAGES) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
            f'version="0.10" xml:lang="de">\n{SITEINFO}{"".join(pages)}</mediawiki>\n')


@pytest.fixture
def dump(tmp_path) -> Path:
    path = tmp_path / "dewiki-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(full_dump().encode("utf-8")))
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(out.glob("wiki-*.jsonl")) for line in shard.open(encoding="utf-8")]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("wiki-*.jsonl*"))}


# --- cleaning ---------------------------------------------------------------------------

def test_clean_wikitext_keeps_text_and_drops_markup():
    assert clean_wikitext(RICH) == RICH_CLEAN


@pytest.mark.parametrize("wikitext,expected", [
    ("[[Foo (Band)|]] spielt.", "Foo spielt."),  # the pipe trick
    ("Siehe [[:Kategorie:Musik|Musik]] und [[:en:Music]].", "Siehe Musik und en:Music."),
    ("A {{x|{{y|{{z}}}}}} B", "A B"),
    ("Wert<br />zwei <math>x^2</math>Ende", "Wert\nzwei Ende"),
    ("Text\n== Siehe auch ==\n* [[Etwas]]\n== Leben ==\nEr lebte.", "Text\n\nLeben\n\nEr lebte."),
    ("{{Begriffsklärung}}", ""),
])
def test_clean_wikitext_cases(wikitext, expected):
    assert clean_wikitext(wikitext) == expected


# --- extraction -------------------------------------------------------------------------

def test_extract_writes_articles_and_counts_skips(dump, tmp_path):
    out = tmp_path / "out"
    summary = extract_wiki_dump(dump, out, min_chars=100)
    assert summary["skipped"] == {"redirect": 2, "namespace": 1, "too_short": 1}
    assert summary["pages"] == len(PAGES) and summary["articles"] == 8 and summary["complete"]
    got = records(out)
    assert [r["title"] for r in got] == ["Berlin"] + [f"Artikel {i}" for i in range(1, 8)]
    assert got[0] == {"title": "Berlin", "id": 1, "url": "https://de.wikipedia.org/wiki/Berlin", "text": RICH_CLEAN}
    assert got[1]["url"] == "https://de.wikipedia.org/wiki/Artikel_1"
    assert summary["text_bytes"] == sum(len(r["text"].encode()) for r in got)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not list(out.glob("*.partial"))


def test_min_chars_decides_too_short(dump, tmp_path):
    assert extract_wiki_dump(dump, tmp_path / "a", min_chars=0)["skipped"]["too_short"] == 0
    assert extract_wiki_dump(dump, tmp_path / "b", min_chars=10_000)["articles"] == 0


def test_plain_xml_multistream_bz2_and_fragments_give_the_same_articles(dump, tmp_path):
    xml = full_dump().encode("utf-8")
    plain = tmp_path / "plain.xml"
    plain.write_bytes(xml)
    split = tmp_path / "parts"  # Wikimedia's multistream dumps and split file names
    split.mkdir()
    (split / "dewiki-pages-articles1.xml-p1p99.bz2").write_bytes(bz2.compress(xml[:2000]) + bz2.compress(xml[2000:]))
    (split / "dewiki-pages-articles-multistream-index.txt.bz2").write_bytes(bz2.compress(b"1:1:Berlin\n"))
    fragments = tmp_path / "fragments"
    fragments.mkdir()
    for i, text in enumerate(PAGES):  # one <page> per file, as in the dewiki sample; one with a declaration
        head = '<?xml version="1.0" encoding="utf-8"?>\n' if i == 0 else ""
        (fragments / f"page-{i:02d}.xml").write_text(head + text, encoding="utf-8")
    (fragments / "README.txt").write_text("not a dump")
    sources = [dump, plain, split, fragments]
    for i, src in enumerate(sources):
        assert extract_wiki_dump(src, tmp_path / f"out{i}")["articles"] == 8
    texts = [[(r["title"], r["text"]) for r in records(tmp_path / f"out{i}")] for i in range(len(sources))]
    assert all(t == texts[0] for t in texts)
    assert records(tmp_path / "out3")[0]["url"] == "https://de.wikipedia.org/wiki/Berlin"  # from lang
    en = extract_wiki_dump(fragments, tmp_path / "en", lang="en")
    assert records(tmp_path / "en")[0]["url"] == "https://en.wikipedia.org/wiki/Berlin" and en["articles"] == 8


def test_workers_write_the_same_shards(dump, tmp_path):
    extract_wiki_dump(dump, tmp_path / "one", shard_bytes=SMALL_SHARDS)
    extract_wiki_dump(dump, tmp_path / "two", shard_bytes=SMALL_SHARDS, workers=2)
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")


# --- resuming ---------------------------------------------------------------------------

@pytest.fixture
def uninterrupted(dump, tmp_path) -> dict[str, bytes]:
    out = tmp_path / "uninterrupted"
    extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)
    shards = shard_bytes(out)
    assert len(shards) > 2  # small shards, so resuming crosses shard boundaries
    return shards


def test_rerun_after_max_articles_continues_without_duplicates(dump, tmp_path, uninterrupted):
    out = tmp_path / "out"
    first = extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS, max_articles=2)
    assert first["articles"] == 2 and not first["complete"]
    assert [r["title"] for r in records(out)] == ["Berlin", "Artikel 1"]
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS, max_articles=2)["articles"] == 2  # a cap, not a count
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS, max_articles=5)["articles"] == 5
    final = extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)
    assert final["complete"] and final["articles"] == 8 and final["pages"] == len(PAGES)
    assert final["skipped"] == {"redirect": 2, "namespace": 1, "too_short": 1}
    assert shard_bytes(out) == uninterrupted
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS) == final  # complete: nothing to do


def test_interrupting_exception_keeps_handled_pages(dump, tmp_path, uninterrupted, monkeypatch):
    out = tmp_path / "out"
    real_clean, calls = wiki_dump.clean_wikitext, []

    def failing_clean(text, site=None):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_clean(text, site)

    monkeypatch.setattr(wiki_dump, "clean_wikitext", failing_clean)
    with pytest.raises(KeyboardInterrupt):
        extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)
    monkeypatch.setattr(wiki_dump, "clean_wikitext", real_clean)
    kept = [line for shard in sorted(out.glob("wiki-*.jsonl*")) for line in shard.open(encoding="utf-8")]
    assert len(kept) == 3  # Berlin, Artikel 1, Artikel 2 (Kurz was too short)
    assert len(list(out.glob("*.partial"))) == 1  # the unfinished shard never gets a final name
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)["articles"] == 8
    assert shard_bytes(out) == uninterrupted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="simulates a killed process with os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_hard_crash_leaves_a_partial_shard_that_is_truncated(dump, tmp_path, uninterrupted, monkeypatch):
    """A killed process runs no cleanup: a fork dies with os._exit mid-run, then a torn line is added."""
    out = tmp_path / "out"
    monkeypatch.setattr(wiki_dump, "CHECKPOINT_PAGES", 3)
    real_clean, calls = wiki_dump.clean_wikitext, []

    def dying_clean(text, site=None):
        calls.append(1)
        if len(calls) == 7:
            os._exit(17)
        return real_clean(text, site)

    pid = os.fork()
    if pid == 0:  # the child must never return into pytest
        try:
            monkeypatch.setattr(wiki_dump, "clean_wikitext", dying_clean)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 17
    partial = sorted(out.glob("*.partial"))
    assert partial and json.loads((out / "progress.json").read_text())["progress"]["pages"] > 0
    with partial[-1].open("ab") as f:
        f.write(b'{"title": "Artikel 6", "id": 16, "text": "halb gesch')  # torn by the crash
    (out / "wiki-00042.jsonl.partial").write_text("debris of a later shard\n")
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)["articles"] == 8
    assert shard_bytes(out) == uninterrupted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="simulates a killed process with os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_run_killed_before_its_first_checkpoint_resumes(dump, tmp_path, uninterrupted, monkeypatch):
    """Killed after two pages, long before CHECKPOINT_PAGES: the rerun must resume, as the help says."""
    out = tmp_path / "out"
    real_clean, calls = wiki_dump.clean_wikitext, []

    def dying_clean(text, site=None):
        calls.append(1)
        if len(calls) == 3:
            os._exit(17)
        return real_clean(text, site)

    pid = os.fork()
    if pid == 0:
        try:
            monkeypatch.setattr(wiki_dump, "clean_wikitext", dying_clean)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 17
    assert json.loads((out / "progress.json").read_text())["progress"]["pages"] == 0
    assert list(out.glob("*.partial"))  # the open shard was never named final
    assert extract_wiki_dump(dump, out, shard_bytes=SMALL_SHARDS)["articles"] == 8
    assert shard_bytes(out) == uninterrupted


def test_folder_with_foreign_outputs_is_refused_untouched(dump, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"my": "summary"}')
    with pytest.raises(LmzooError, match="no progress.json, so not a wiki-dump run to resume"):
        extract_wiki_dump(dump, out)
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == '{"my": "summary"}'


def test_output_of_another_run_is_refused(dump, tmp_path):
    extract_wiki_dump(dump, tmp_path / "out", max_articles=1)
    with pytest.raises(LmzooError, match="different wiki-dump run"):
        extract_wiki_dump(dump, tmp_path / "out", min_chars=5)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "wiki-00000.jsonl").write_text("{}\n")
    with pytest.raises(LmzooError, match="no progress.json"):
        extract_wiki_dump(dump, tmp_path / "stray")


# --- bad input --------------------------------------------------------------------------

def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = bz2.compress(full_dump().encode())
    cases = {
        "missing": (tmp_path / "nope.xml.bz2", "dump not found"),
        "text": (b"Hallo Welt, kein XML.\n", "not a MediaWiki XML dump (found no XML)"),
        "other_xml": (b"<?xml version='1.0'?>\n<rss><channel/></rss>", "found <rss>"),
        "empty_file": (b"", "found an empty file"),
        "no_pages": (full_dump([]).encode(), "no <page> elements"),
        "corrupt_bz2": (b"BZh91AY&SY" + b"\x00garbage" * 50, "corrupt or incomplete"),
        "truncated_bz2": (good[: len(good) // 2], "corrupt or incomplete"),
        "truncated_xml": (full_dump().encode()[:3000], "malformed XML"),
        "empty_dir": (tmp_path / "empty_dir", "no *.xml or *.xml.bz2 files"),
    }
    (tmp_path / "empty_dir").mkdir()
    for name, (content, _) in list(cases.items()):
        if isinstance(content, bytes):
            path = tmp_path / f"{name}.xml"
            path.write_bytes(content)
            cases[name] = (path, cases[name][1])
    return cases


def test_bad_input_gives_one_line_errors(tmp_path):
    for name, (path, needle) in bad_inputs(tmp_path).items():
        with pytest.raises(LmzooError) as err:
            extract_wiki_dump(path, tmp_path / f"out-{name}")
        assert needle in str(err.value) and "\n" not in str(err.value), name


def test_bad_settings_and_missing_libraries(dump, tmp_path, monkeypatch):
    with pytest.raises(LmzooError, match="language code"):
        extract_wiki_dump(dump, tmp_path / "o", lang="de'><x")
    with pytest.raises(LmzooError, match="must be positive"):
        extract_wiki_dump(dump, tmp_path / "o", max_articles=0)
    monkeypatch.setitem(sys.modules, "mwxml", None)
    with pytest.raises(LmzooError, match=r"pip install 'lmzoo\[wiki\]'"):
        extract_wiki_dump(dump, tmp_path / "o")


# --- the CLI and the real samples -------------------------------------------------------

def test_cli_wiki_dump_then_prepare(dump, tmp_path, capsys):
    out, data = tmp_path / "wiki", tmp_path / "data"
    assert main(["data", "wiki-dump", str(dump), "--out", str(out), "--min-chars", "100", "--max-articles", "3"]) == 0
    assert "rerun the command with a larger --max-articles or without it" in capsys.readouterr().out
    assert main(["data", "wiki-dump", str(dump), "--out", str(out), "--min-chars", "100"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1])["articles"] == 8
    assert main(["data", "prepare", str(out), "--out", str(data), "--val-fraction", "0.2"]) == 0
    meta = read_meta(data)
    assert meta["documents"] == 8
    assert sum(s["bytes"] for s in meta["splits"].values()) == sum(len(r["text"].encode()) for r in records(out))


def test_cli_bad_dump_is_one_line(tmp_path, capsys):
    (tmp_path / "x.xml").write_text("kein xml")
    assert main(["data", "wiki-dump", str(tmp_path / "x.xml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmzoo: error:") and "not a MediaWiki XML dump" in err and err.count("\n") == 1


def test_real_german_page_fragments(shared_data, tmp_path):
    summary = extract_wiki_dump(shared_data / "wiki-xml" / "dewiki-20130602-pages", tmp_path / "de")
    got = {r["title"]: r for r in records(tmp_path / "de")}
    assert set(got) == {"Alan Smithee", "Ang Lee", "Anime", "The Visitors", "Ampere"} and summary["articles"] == 5
    for r in got.values():
        assert not any(junk in r["text"] for junk in ("{{", "}}", "[[", "]]", "<ref", "&lt;", "Kategorie:", "|"))
    smithee = got["Alan Smithee"]
    assert smithee["id"] == 1 and smithee["url"] == "https://de.wikipedia.org/wiki/Alan_Smithee"
    assert smithee["text"].startswith("Alan Smithee steht als Pseudonym für einen fiktiven Regisseur")
    sentences = split_sentences(smithee["text"])
    assert "Totten selbst lehnte aber ebenfalls ab." in sentences
    assert any(s.startswith("In den zeitgenössischen Kritiken wurde der Regisseur u. a. von Roger Ebert")
               for s in sentences)


def test_real_english_dump(shared_data, tmp_path):
    dump = shared_data / "wiki-xml" / "enwiki-pages-articles1-shortened.xml.bz2"
    summary = extract_wiki_dump(dump, tmp_path / "en", lang="en", max_articles=12)
    got = records(tmp_path / "en")
    assert summary["articles"] == len(got) == 12 and summary["skipped"]["redirect"] > 0
    assert got[0]["title"] == "Anarchism" and got[0]["url"] == "https://en.wikipedia.org/wiki/Anarchism"
    assert got[0]["text"].startswith("Anarchism is a political philosophy")
    for r in got:
        assert not any(junk in r["text"] for junk in ("{{", "[[", "<ref", "Category:", "File:"))
