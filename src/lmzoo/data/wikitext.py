"""Wikitext -> plain text, the cleaning half of `wiki_dump` (with `mwparserfromhell`).

Templates, refs, tables, files, categories, interlanguage links, HTML comments and magic words
go; link text, formatted text and headings stay, a heading as a paragraph of its own. Headings
left without text, and reference sections ("Weblinks", "Einzelnachweise", "See also", ...:
lists of links, not prose) are dropped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LANG_CODE = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)*$")

DROPPED_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "imagemap",
                "score", "graph", "mapframe", "maplink", "templatedata", "syntaxhighlight", "source",
                "hiero", "includeonly", "noinclude", "categorytree", "inputbox", "li", "dt", "dd", "hr"}
DROPPED_SECTIONS = {"weblinks", "einzelnachweise", "literatur", "siehe auch", "anmerkungen", "quellen",
                    "belege", "see also", "references", "external links", "further reading", "notes",
                    "bibliography", "sources", "footnotes"}
MEDIA_NAMESPACES = {"file", "image", "media", "category", "datei", "bild", "medium", "kategorie"}
# Refs and comments go before parsing: an unbalanced '' inside a ref makes the parser keep it as text.
PRE_PARSE = re.compile(r"<!--.*?-->|<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.DOTALL | re.IGNORECASE)
# Markup the parser left as text (it gives up on e.g. an image caption spanning lines).
LEFTOVER_TAG = re.compile(r"</?(?:blockquote|references|span|div|small|big|sup|sub|center|br|p|poem|nowiki|font|"
                          r"abbr|cite|code|q|del|ins|s|u|i|b)\b[^<>]*>", re.IGNORECASE)
LEFTOVER_LINK_OR_TEMPLATE = re.compile(r"\[\[([^\[\]]*)\]\]|\{\{[^{}]*\}\}")
MAGIC_WORDS = re.compile(r"__[A-ZÄÖÜ_]+__|'{2,}")  # and bold/italic quotes the parser left
# What removed templates leave in a line: "X (; * 1954)" -> "X (* 1954)", "( )" -> "", "a ." -> "a."
TIDY = [(re.compile(r"\[\s*\]"), ""), (re.compile(r"\(\s*(?:[,;:]\s*)+"), "("), (re.compile(r"\s+\)"), ")"),
        (re.compile(r"\(\)"), ""), (re.compile(r" +([,.;])(?=\s|$)"), r"\1"), (re.compile(r"  +"), " ")]
MARKUP_LINE = re.compile(r"^\s*(?:\{\||\|\}|\||!|\{\{|\}\})")  # an unparsed table or template
ALNUM = re.compile(r"[^\W_]")


@dataclass
class Site:
    """What cleaning and URLs need to know about the wiki a dump comes from."""

    base_url: str = ""
    media_prefixes: set[str] = field(default_factory=lambda: set(MEDIA_NAMESPACES))
    namespace_names: set[str] = field(default_factory=set)


def clean_wikitext(wikitext: str, site: Site | None = None) -> str:
    """Plain text of an article's wikitext: paragraphs separated by blank lines."""
    import mwparserfromhell

    site = site or Site()
    blocks: list[tuple[int, str]] = []  # (heading level, or 0 for body text; text)
    body: list[str] = []
    dropping = 0  # the level of the dropped section we are in (0: none)
    for node in mwparserfromhell.parse(PRE_PARSE.sub("", wikitext)).nodes:
        if isinstance(node, mwparserfromhell.nodes.Heading):
            blocks.append((0, "".join(body)))
            body = []
            if dropping and node.level > dropping:
                continue
            title = " ".join(_render(node.title.nodes, site).split())
            dropping = node.level if title.lower() in DROPPED_SECTIONS else 0
            if not dropping:
                blocks.append((node.level, title))
        elif not dropping:
            body.append(_render([node], site))
    blocks.append((0, "".join(body)))
    return "\n\n".join(_assemble([(level, _scrub(text, site)) for level, text in blocks]))


def _render(nodes: Iterable[Any], site: Site) -> str:
    from mwparserfromhell import nodes as n

    parts = []
    for node in nodes:
        if isinstance(node, n.Text):
            parts.append(node.value)
        elif isinstance(node, n.Wikilink):
            parts.append(_render_link(node, site))
        elif isinstance(node, n.ExternalLink) and node.brackets:  # [url text] shows text, [url] "[1]"
            parts.append(_render(node.title.nodes, site) if node.title else "")
        elif isinstance(node, n.ExternalLink):
            parts.append(str(node.url))  # a bare URL shows as itself
        elif isinstance(node, n.Tag) and node.tag.lower() == "br":
            parts.append("\n")
        elif isinstance(node, n.Tag) and node.tag.lower() not in DROPPED_TAGS and node.contents:
            parts.append(_render(node.contents.nodes, site))
        elif isinstance(node, n.HTMLEntity):
            parts.append(node.normalize())
        elif isinstance(node, n.Heading):  # a heading nested in a tag: keep its words
            parts.append("\n" + _render(node.title.nodes, site) + "\n")
        # Templates, comments and template arguments render as nothing.
    return "".join(parts)


def _render_link(link: Any, site: Site) -> str:
    title = str(link.title).strip()
    inline = title.startswith(":")  # [[:Kategorie:X]] is a link, not a categorisation
    title = title.lstrip(":")
    prefix = title.split(":", 1)[0].strip().lower() if ":" in title else ""
    if not inline and prefix and (prefix in site.media_prefixes
                                  or (LANG_CODE.match(prefix) and prefix not in site.namespace_names)):
        return ""  # an image, a category or an interlanguage link
    if link.text is None:
        return title
    text = _render(link.text.nodes, site)
    return text if text.strip() else re.sub(r"\s*\(.*\)$", "", title)  # the pipe trick [[A (b)|]]


def _scrub(text: str, site: Site) -> str:
    """Remove markup the parser kept as text; links become their text, innermost first."""
    text = LEFTOVER_TAG.sub("", text)
    for _ in range(4):
        text, found = LEFTOVER_LINK_OR_TEMPLATE.subn(lambda m: _leftover_text(m, site), text)
        if not found:
            break
    return text


def _leftover_text(match: re.Match, site: Site) -> str:
    inner = match.group(1)
    if inner is None:
        return ""  # a template
    target = inner.split("|", 1)[0]
    prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
    return "" if prefix in site.media_prefixes else inner.rsplit("|", 1)[-1]


def _assemble(blocks: list[tuple[int, str]]) -> list[str]:
    """Paragraphs in order; a heading is kept only if text or a kept subheading follows."""
    out: list[tuple[int, str]] = []
    for level, text in reversed(blocks):
        if level == 0:
            out.extend((0, p) for p in reversed(_paragraphs(text)))
        elif out and (out[-1][0] == 0 or out[-1][0] > level):
            out.append((level, text))
    return [text for _, text in reversed(out)]


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; lines stay lines (list items), spaces are collapsed."""
    paragraphs = []
    for raw in re.split(r"\n\s*\n", MAGIC_WORDS.sub("", text)):
        lines = (_tidy(line) for line in raw.splitlines() if not MARKUP_LINE.match(line))
        paragraph = "\n".join(line for line in lines if ALNUM.search(line))
        if paragraph:
            paragraphs.append(paragraph)
    return paragraphs


def _tidy(line: str) -> str:
    line = " ".join(line.split())
    for pattern, replacement in TIDY:
        line = pattern.sub(replacement, line)
    return line.strip()
