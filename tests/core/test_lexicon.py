"""pipeline/core/lexicon.py: the one lexicon that anchor mining and translation share."""

from __future__ import annotations

from pipeline.core.anchor_mining import name_words
from pipeline.core.lexicon import (
    ABBREVIATIONS, FEMALE_HONORIFICS, FORMS_OF_ADDRESS, HONORIFICS, KEEP_WORDS, MALE_HONORIFICS, MONSIEUR_ABBREVIATION,
    TITLES, is_place_word, is_roman_numeral,
)
from pipeline.core.translation import proper_name_words


def test_every_title_mining_drops_from_a_name_is_a_word_translation_keeps():
    for title in TITLES - {MONSIEUR_ABBREVIATION} - {w.capitalize() for w in FORMS_OF_ADDRESS}:
        word = title.rstrip(".").casefold()
        assert word in HONORIFICS and word in KEEP_WORDS, title
        # mining: a title is no name word; translation: a title is not replaced
        assert name_words(f"{title} Quillby") == ["Quillby"]
        assert [w.stem for w in proper_name_words(f"{title} Quillby")] == ["Quillby"]


def test_gendered_honorifics_are_disjoint_and_dotted_forms_end_no_sentence():
    assert not FEMALE_HONORIFICS & MALE_HONORIFICS
    assert {"Mr", "Mrs", "Dr", "St", "M"} <= ABBREVIATIONS
    assert "Mr." in TITLES and "Mrs." in TITLES and "St." not in TITLES  # "Neville St. Clair"


def test_roman_numerals_are_well_formed_upper_case_only():
    for numeral in ("I", "IV", "XII.", "XLII", "MCMXC"):
        assert is_roman_numeral(numeral), numeral
    for word in ("", "IIII", "VX", "iv", "Ivy", "MILD", "DID"):
        assert not is_roman_numeral(word), word


def test_place_words_match_in_any_case():
    assert is_place_word("Street") and is_place_word("HALL") and is_place_word("moor")
    assert not is_place_word("Baker")
