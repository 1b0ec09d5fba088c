"""Syllable tokenizer: frequent words whole, other words by pyphen syllables, the rest by characters.

The Spike Transformer seed's tokenizer, rebuilt to round-trip exactly. The vocabulary is, in id order:

- six specials: pad, bos and eos (the shared `<|pad|>`, `<|startoftext|>`, `<|endoftext|>`),
  then `<unk>`, `<space>` and `<cap>`;
- every character of the training text (or those seen at least `min_char_count` times), the
  lowercase form of each, and tab, newline and carriage return;
- the most frequent syllables (at least two characters; pyphen's hyphenation points for
  `lang` de or en, applied to lowercased words);
- the most frequent words of two or more syllables.

Text is cut into runs of letters ("words") and single other characters. A space is `<space>`;
every other character (newline, tab, digit, punctuation) is its own character token, so runs
of whitespace survive exactly. A word is looked up lowercase: whole if it is in the
vocabulary, else syllable by syllable, each syllable that is not in the vocabulary spelled
out in characters. Case is kept by `<cap>`, which upper-cases the first letter of the piece
after it, so the vocabulary holds lowercase forms only. A word is first cut where a lowercase
letter meets an uppercase one ("McDonald" -> "Mc" + "Donald"); a part that is lowercase or
capitalised is looked up as above, any other part (ALL-CAPS, "ß" capitalised as "SS") is
spelled out in its own characters. A character outside the vocabulary becomes `<unk>`,
never dropped; it decodes to U+FFFD. Hence `decode(encode(text)) == text` whenever every
character of `text` is in the vocabulary.
"""
from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lmzoo.errors import LmzooError
from lmzoo.tokenizers.base import BOS, EOS, PAD, Tokenizer, register_tokenizer

UNK, SPACE, CAP = "<unk>", "<space>", "<cap>"
SPECIALS = (PAD, BOS, EOS, UNK, SPACE, CAP)  # ids 0..5, the seed's order
UNK_TEXT = "\ufffd"  # what <unk> decodes to, as for the char tokenizer
ALWAYS_CHARS = "\t\n\r"  # whitespace that must never become <unk>
LANGS = {"de": "de_DE", "en": "en_US"}
DEFAULT_SYLLABLES = 2000  # the seed's top-N
DEFAULT_WORDS = 1000
MAX_SYLLABIFIED = 64  # longer letter runs (URLs, junk) are spelled out instead of hyphenated
CACHE_LIMIT = 1 << 18  # cached words; the cache is cleared when full

# A run of letters, or any single other character (including newlines).
_PIECES = re.compile(r"[^\W\d_]+|.", re.DOTALL)
_WORDS = re.compile(r"[^\W\d_]+")

_hyphenators: dict[str, Any] = {}


def _hyphenator(lang: str):
    """A cached pyphen dictionary; pyphen is imported only when a word needs syllables."""
    if lang not in _hyphenators:
        try:
            import pyphen
        except ImportError:
            raise LmzooError("the syllable tokenizer needs pyphen; pip install 'lmzoo[syllable]'") from None
        _hyphenators[lang] = pyphen.Pyphen(lang=LANGS[lang])
    return _hyphenators[lang]


def _check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise LmzooError(f"unknown syllable tokenizer language '{lang}'; choose one of: {', '.join(LANGS)}")
    return lang


def syllabify(word: str, lang: str = "de") -> list[str]:
    """`word` cut at pyphen's hyphenation points; the parts always join back to `word`."""
    if len(word) > MAX_SYLLABIFIED:
        return [word]
    cuts = [0, *_hyphenator(_check_lang(lang)).positions(word), len(word)]
    return [word[a:b] for a, b in itertools.pairwise(cuts)]


def case_parts(word: str) -> list[str]:
    """`word` cut before each uppercase letter that follows a lowercase one: "McDonald" -> Mc, Donald."""
    cuts = [i for i in range(1, len(word)) if word[i].isupper() and word[i - 1].islower()]
    return [word[a:b] for a, b in zip([0, *cuts], [*cuts, len(word)])]


def _lookup_form(part: str) -> tuple[str, bool] | None:
    """(lowercase form, capitalised?) when `part` can be looked up lowercase and restored exactly."""
    low = part.lower()
    if low == part:
        return low, False
    if low[:1].upper() + low[1:] == part:
        return low, True
    return None


@register_tokenizer("syllable")
class SyllableTokenizer(Tokenizer):
    needs_training = True
    pad_id, bos_id, eos_id, unk_id, space_id, cap_id = range(len(SPECIALS))

    def __init__(self, chars: Iterable[str], syllables: Iterable[str] = (), words: Iterable[str] = (),
                 lang: str = "de"):
        self.lang = _check_lang(lang)
        self.chars = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars) or " " in self.chars:
            raise ValueError("chars must be single characters other than the space (which is <space>)")
        self.syllables = list(syllables)
        self.words = list(words)
        units = self.chars + self.syllables + self.words
        if len(set(units)) != len(units):
            raise ValueError("the characters, syllables and words must all be distinct")
        self._index = {unit: i for i, unit in enumerate(units, start=len(SPECIALS))}
        self._index[" "] = self.space_id
        self._charset = frozenset(self.chars) | {" "}
        self._plain = ["", "", "", UNK_TEXT, " ", ""] + units
        self._with_specials = [PAD, BOS, EOS, UNK, " ", ""] + units
        self._cache: dict[str, tuple[int, ...]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self._plain)

    # --- encoding ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        cache = self._cache
        ids: list[int] = []
        for piece in _PIECES.findall(text):
            hit = cache.get(piece)
            if hit is None:
                hit = self._encode_piece(piece)
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                cache[piece] = hit
            ids.extend(hit)
        return ids

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        if not _WORDS.fullmatch(piece):
            return (self._index.get(piece, self.unk_id),)
        ids: list[int] = []
        for part in case_parts(piece):
            form = _lookup_form(part)
            if form is None or not self._charset.issuperset(form[0]):
                ids.extend(self._spell(part))  # ALL-CAPS and other case patterns <cap> cannot restore
                continue
            low, capitalised = form
            if capitalised:
                ids.append(self.cap_id)
            ids.extend(self._encode_lower(low))
        return tuple(ids)

    def _encode_lower(self, word: str) -> list[int]:
        """Whole word, else its syllables, each one spelled out when it is not in the vocabulary."""
        whole = self._index.get(word)
        if whole is not None:
            return [whole]
        ids: list[int] = []
        for syllable in syllabify(word, self.lang):
            unit = self._index.get(syllable)
            ids.extend([unit] if unit is not None else self._spell(syllable))
        return ids

    def _spell(self, text: str) -> list[int]:
        get, unk = self._index.get, self.unk_id
        return [get(c, unk) for c in text]

    # --- decoding ------------------------------------------------------------------------

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        # <space> and <cap> are spelling, not markers: they apply whether or not specials are shown.
        table = self._plain if skip_special else self._with_specials
        if self.cap_id not in ids:
            return "".join(table[i] for i in ids)
        out: list[str] = []
        capitalise = False
        for i in ids:
            if i == self.cap_id:
                capitalise = True
                continue
            text = table[i]
            if capitalise and text:
                text = text[0].upper() + text[1:]
                capitalise = False
            out.append(text)
        return "".join(out)

    # --- saving and training -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "specials": list(SPECIALS), "chars": self.chars,
                "syllables": self.syllables, "words": self.words}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SyllableTokenizer:
        if state.get("specials", list(SPECIALS)) != list(SPECIALS):
            raise ValueError(f"unexpected special tokens {state['specials']}")
        if state["lang"] not in LANGS:
            raise ValueError(f"unknown language {state['lang']!r}")
        return cls(state["chars"], state["syllables"], state["words"], lang=state["lang"])

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None, *, lang: str = "de",
              n_syllables: int = DEFAULT_SYLLABLES, n_words: int = DEFAULT_WORDS, min_count: int = 2,
              min_char_count: int = 1) -> SyllableTokenizer:
        """Count characters and words in `texts` (streamed), then pick the vocabulary.

        Without `vocab_size`: every character, up to `n_syllables` syllables and up to `n_words`
        words. With it, `vocab_size` is the total: the room left after the specials and
        characters goes to syllables first (up to `n_syllables`), the rest to words. Syllables
        and words seen fewer than `min_count` times are left out, so the vocabulary may be smaller.
        """
        _check_lang(lang)
        if min(n_syllables, n_words) < 0 or min(min_count, min_char_count) < 1:
            raise LmzooError("n_syllables and n_words must be >= 0, min_count and min_char_count >= 1")
        char_counts: Counter[str] = Counter()
        word_counts: Counter[str] = Counter()
        for text in texts:
            char_counts.update(text)
            word_counts.update(_WORDS.findall(text))
        if not char_counts:
            raise LmzooError("cannot train a syllable tokenizer on empty text; pass files that contain text")

        chars = {c for c, n in char_counts.items() if n >= min_char_count}
        chars |= {c.lower() for c in chars if len(c.lower()) == 1} | set(ALWAYS_CHARS)
        chars.discard(" ")

        # Count the lowercase forms the encoder looks up, then their syllables.
        lower_counts: Counter[str] = Counter()
        for word, n in word_counts.items():
            for part in case_parts(word):
                form = _lookup_form(part)
                if form is not None:
                    lower_counts[form[0]] += n
        syllable_counts: Counter[str] = Counter()
        multi_syllable: Counter[str] = Counter()
        for word, n in lower_counts.items():
            parts = syllabify(word, lang)
            for syllable in parts:
                if len(syllable) > 1:
                    syllable_counts[syllable] += n
            if len(parts) > 1:
                multi_syllable[word] = n

        fixed = len(SPECIALS) + len(chars)
        if vocab_size is not None:
            if vocab_size < fixed:
                raise LmzooError(f"syllable vocab_size must be at least {fixed} ({len(SPECIALS)} specials + "
                                 f"{len(chars)} characters of the text), got {vocab_size}")
            n_syllables = min(n_syllables, vocab_size - fixed)
        syllables = _most_frequent(syllable_counts, n_syllables, min_count, exclude=chars)
        if vocab_size is not None:
            n_words = vocab_size - fixed - len(syllables)
        words = _most_frequent(multi_syllable, n_words, min_count, exclude=chars | set(syllables))
        return cls(chars, syllables, words, lang=lang)


def _most_frequent(counts: Counter[str], n: int, min_count: int, exclude: set[str]) -> list[str]:
    """Up to n keys seen at least min_count times, most frequent first (ties: alphabetical)."""
    ranked = sorted((item for item in counts.items() if item[1] >= min_count and item[0] not in exclude),
                    key=lambda item: (-item[1], item[0]))
    return [unit for unit, _ in ranked[:n]]
