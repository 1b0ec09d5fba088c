"""The rule-based sentence splitter: boundaries, abbreviations, initials, German ordinals."""
import pytest

from lmzoo.data.sentences import count_words, split_sentences
from lmzoo.errors import LmzooError


@pytest.mark.parametrize("text,expected", [
    ("Das ist gut. Das ist schlecht! Warum? Darum.",
     ["Das ist gut.", "Das ist schlecht!", "Warum?", "Darum."]),
    ("Das ist z. B. so. Es ist d. h. klar. Er kam u. a. aus Rom. Sie ging bzw. lief.",
     ["Das ist z. B. so.", "Es ist d. h. klar.", "Er kam u. a. aus Rom.", "Sie ging bzw. lief."]),
    ("Das kostet ca. 5 Euro. Dr. Müller und Prof. Schmidt kamen. Vgl. Nr. 5 usw. Ende.",
     ["Das kostet ca. 5 Euro.", "Dr. Müller und Prof. Schmidt kamen.", "Vgl. Nr. 5 usw. Ende."]),
    ("Er war geb. 1950 in St. Gallen. Es gab 3 Mio. Euro und 2 Mrd. Dollar. Gut.",
     ["Er war geb. 1950 in St. Gallen.", "Es gab 3 Mio. Euro und 2 Mrd. Dollar.", "Gut."]),
    ("J. R. R. Tolkien schrieb Bücher. Danach las sie A. Müller.",
     ["J. R. R. Tolkien schrieb Bücher.", "Danach las sie A. Müller."]),
    ("Er kam am 3. Oktober 1990. Im 19. Jahrhundert war das anders. Er wurde der 2. Sieger.",
     ["Er kam am 3. Oktober 1990.", "Im 19. Jahrhundert war das anders.", "Er wurde der 2. Sieger."]),
    ("Er wurde 1989. geboren.", ["Er wurde 1989. geboren."]),  # a lowercase word never starts one
    ("Die Mauer fiel 1989. Das war gut.", ["Die Mauer fiel 1989.", "Das war gut."]),
    ("Er sagte: „Komm her!“ Dann ging er. (Sie blieb.) Warten… Nichts.",
     ["Er sagte: „Komm her!“", "Dann ging er.", "(Sie blieb.)", "Warten…", "Nichts."]),
    ("Das war z.B. gut. Es endet 2020. 2021 beginnt Neues.",
     ["Das war z.B. gut.", "Es endet 2020.", "2021 beginnt Neues."]),
])
def test_german(text, expected):
    assert split_sentences(text, "de") == expected


@pytest.mark.parametrize("text,expected", [
    ("Mr. Smith met Mrs. Jones. They talked.", ["Mr. Smith met Mrs. Jones.", "They talked."]),
    ("Fruit, e.g. Apples, i.e. Food. It went to the U.S. Army. Then etc. Fine.",
     ["Fruit, e.g. Apples, i.e. Food.", "It went to the U.S. Army.", "Then etc. Fine."]),
    ("It was No. 5 on the list. He said no. Then he left.",
     ["It was No. 5 on the list.", "He said no.", "Then he left."]),
    ("Smith et al. Found it. Really? Yes!", ["Smith et al. Found it.", "Really?", "Yes!"]),
    ("The war ended in 1945. Then peace came.", ["The war ended in 1945.", "Then peace came."]),
])
def test_english(text, expected):
    assert split_sentences(text, "en") == expected


def test_german_rules_are_not_used_for_english():
    assert split_sentences("It was the 3. October came.", "en") == ["It was the 3.", "October came."]
    assert split_sentences("Es war der 3. Oktober kam.", "de") == ["Es war der 3. Oktober kam."]


def test_paragraphs_and_whitespace():
    text = "  Erster Absatz ohne Punkt\n\nZweiter   Absatz\nüber zwei Zeilen. Satz zwei.  \n \n"
    assert split_sentences(text) == ["Erster Absatz ohne Punkt", "Zweiter Absatz über zwei Zeilen.", "Satz zwei."]
    assert split_sentences("") == [] and split_sentences(" \n\n ") == []


def test_long_paragraph_is_split_in_linear_time():
    text = "Das ist ein Satz mit z. B. Abkürzungen. " * 20000
    assert len(split_sentences(text)) == 20000


def test_unknown_language_lists_the_choices():
    with pytest.raises(LmzooError, match="unknown language 'fr'.*de, en"):
        split_sentences("Bonjour.", "fr")


@pytest.mark.parametrize("sentence,words", [
    ("Das ist gut.", 3), ("Er kam – wie z. B. 2020 – nicht.", 7), ("", 0), ("– … !", 0), ("Größe: 3,5 m", 3),
])
def test_count_words(sentence, words):
    assert count_words(sentence) == words
