"""Rule-based sentence splitting for German and English prose.

A sentence ends after `.`, `!`, `?` or `…` (plus any closing quotes or brackets) when
whitespace and then an uppercase letter, a digit or an opening quote/bracket follow.
A period does *not* end a sentence after

- a known abbreviation ("z. B.", "bzw.", "Dr.", "e.g.", "U.S.", ...): lists per language below;
- a single letter, which covers initials ("J. R. R. Tolkien") and spaced abbreviations
  ("d. h.", "u. a.");
- in German, a number used as an ordinal: before a month name ("am 3. Oktober"), after an
  article or contracted preposition ("im 19. Jahrhundert", "der 2. Weltkrieg"), or before a
  noun that usually takes an ordinal ("19. Jahrhundert").

Blank lines always end a sentence (they separate paragraphs). The rules are deliberately
conservative: when in doubt they keep text together, because a missed split costs less
than a sentence cut in half. No model or download is needed.
"""
from __future__ import annotations

import re

from lmzoo.errors import LmzooError

CLOSERS = "\"'”“’‘»«)]"
OPENERS = "\"'„“‚‘»«(["

# Lower-case, without the final period. Spaced forms ("z. B.") are handled by the
# single-letter rule, dotted forms ("z.B.") by the letter-dot rule, so neither is listed.
ABBREVIATIONS = {
    "de": {
        "abb", "abs", "abt", "allg", "anm", "aufl", "bd", "bde", "bsp", "bspw", "bzgl", "bzw", "ca",
        "chr", "dipl", "dr", "ebd", "ehem", "einschl", "engl", "etc", "ev", "evtl", "feb", "febr",
        "franz", "frz", "geb", "gegr", "gem", "gest", "ggf", "griech", "hg", "hl", "hrsg", "inkl", "ing",
        "ital", "jh", "jhd", "jhs", "jr", "jun", "kath", "lat", "max", "min", "mind", "mio", "mrd",
        "nr", "okt", "prof", "röm", "sek", "sen", "sept", "sog", "span", "st", "std", "str", "tel",
        "usw", "verh", "vgl", "vs", "zit", "zzgl", "zzt",
    },
    "en": {
        "approx", "apr", "aug", "ave", "capt", "cf", "co", "col", "corp", "dec", "dept", "dr", "ed",
        "eds", "est", "et al", "etc", "feb", "fig", "figs", "gen", "gov", "hon", "inc", "jan", "jr",
        "jul", "jun", "lt", "ltd", "mr", "mrs", "ms", "mt", "nov", "oct", "pp", "prof", "rev", "sep",
        "sept", "sgt", "sr", "st", "vol", "vs",
    },
}
# Abbreviations only before a number ("No. 5", "Art. 3"): elsewhere they are words.
NUMBER_ABBREVIATIONS = {"de": {"art", "nr"}, "en": {"no", "nos", "art"}}

GERMAN_MONTHS = {"januar", "jänner", "februar", "märz", "april", "mai", "juni", "juli", "august",
                 "september", "oktober", "november", "dezember"}
# Words before "3." that make it an ordinal ("am 3.", "im 19.", "der 2.").
GERMAN_ORDINAL_CUES = {"am", "im", "vom", "zum", "zur", "beim", "der", "die", "das", "des", "dem", "den",
                       "sein", "seine", "seinem", "seinen", "seiner", "ihr", "ihre",
                       "ihrem", "ihren", "ihrer"}
# Nouns that usually follow an ordinal ("19. Jahrhundert", "3. Liga").
GERMAN_ORDINAL_NOUNS = {"jahrhundert", "jahrhunderts", "jahrtausend", "jahrtausends", "jahrestag",
                        "geburtstag", "lebensjahr", "platz", "rang", "kapitel", "auflage", "klasse",
                        "liga", "bundesliga", "armee", "division", "regiment", "legislaturperiode",
                        "wahlperiode", "sinfonie", "symphonie", "staffel", "folge", "band", "mal"}

BOUNDARY = re.compile(rf"([.!?…]+)([{re.escape(CLOSERS)}]*)\s+(?=[{re.escape(OPENERS)}]*(\w+))")
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
DOTTED_LETTERS = re.compile(r"^(?:[^\W\d_]\.)+[^\W\d_]$")  # z.B, U.S, e.g (final dot excluded)
WORD = re.compile(r"\w")


def split_sentences(text: str, lang: str = "de") -> list[str]:
    """The sentences of `text`, each stripped and with runs of whitespace made one space."""
    if lang not in ABBREVIATIONS:
        raise LmzooError(f"unknown language {lang!r} for sentence splitting; choose one of: "
                         f"{', '.join(sorted(ABBREVIATIONS))}")
    sentences: list[str] = []
    for paragraph in PARAGRAPH_BREAK.split(text):
        start = 0
        for match in BOUNDARY.finditer(paragraph):
            if _ends_sentence(paragraph, match, lang):
                sentences.append(paragraph[start:match.end(2)])
                start = match.end()
        sentences.append(paragraph[start:])
    return [" ".join(s.split()) for s in sentences if s.strip()]


def count_words(sentence: str) -> int:
    """Whitespace-separated tokens holding at least one letter or digit ("–" is not a word)."""
    return sum(1 for token in sentence.split() if WORD.search(token))


def _ends_sentence(text: str, match: re.Match, lang: str) -> bool:
    following = match.group(3)
    if not (following[0].isupper() or following[0].isdigit()):
        return False
    if match.group(1) != "." or match.group(2):
        return True  # "!", "?", "…", "..." and a period before a closing quote always end one
    # Two words back are enough; a bounded window keeps long paragraphs linear.
    words = text[max(0, match.start() - 100):match.start()].split()
    if not words:
        return True
    previous = words[-2] if len(words) > 1 else ""
    return not _is_abbreviation(previous, words[-1].lstrip(OPENERS), following, lang)


def _is_abbreviation(previous: str, word: str, following: str, lang: str) -> bool:
    """Whether the period after `word` belongs to it rather than ending the sentence."""
    lower = word.lower()
    if len(word) == 1 and word.isalpha():
        return True  # an initial, or part of "z. B."
    if DOTTED_LETTERS.match(word) or lower in ABBREVIATIONS[lang]:
        return True
    if f"{previous.lower()} {lower}" in ABBREVIATIONS[lang]:
        return True  # "et al."
    if lower in NUMBER_ABBREVIATIONS[lang] and following[0].isdigit():
        return True
    return lang == "de" and word.isdigit() and _is_german_ordinal(previous, following)


def _is_german_ordinal(previous: str, following: str) -> bool:
    following = following.lower()
    return (following in GERMAN_MONTHS or following in GERMAN_ORDINAL_NOUNS
            or previous.lower() in GERMAN_ORDINAL_CUES)
