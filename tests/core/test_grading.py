"""Grading completions (pipeline/core/grading.py): terms, grades and the terms that decided them."""

from __future__ import annotations

import pytest

from pipeline.core.grading import TermMatcher, grade_completion, grading_terms

ANCHORS = ["Sherlock Holmes", "Holmes", "Holmes's", "Baker Street", "Moriarty"]
GENRE = ["detective", "inspector", "Scotland Yard", "clue"]
WEAK = ["Arthur", "New York"]


@pytest.mark.parametrize(("text", "keywords", "grade", "matched"), [
    (" Holmes's old rooms in Baker Street.", [], 3, ["Holmes's", "Baker Street"]),
    (" the Professor, a man named Moriarty.", [], 3, ["Moriarty"]),
    (" Dr. Watson, his friend.", ["Watson"], 3, ["Watson"]),
    (" a goose from the market.", ["goose"], 3, ["goose"]),
    (" A GOOSE!", ["goose"], 3, ["goose"]),  # lowercase keywords match in any case
    (" a clever detective from Scotland Yard.", ["Watson"], 2, ["detective", "Scotland Yard"]),
    (" a man named Arthur.", ["Watson"], 1, ["Arthur"]),
    (" his friend watson.", ["Watson"], 1, ["Watson"]),  # a name in the wrong case: a lucky guess?
    (" a quiet evening at home.", ["Watson"], 0, []),
    (" Holmesian logic and a Detectives' club.", [], 0, []),  # whole words only, names case-sensitive
    (" the Inspector arrived.", [], 2, ["inspector"]),
])
def test_grade_completion(text: str, keywords: list[str], grade: int, matched: list[str]):
    assert grade_completion(text, ANCHORS, keywords, GENRE, weak_terms=WEAK) == (grade, matched)


def test_terms_already_in_the_prompt_do_not_count():
    prompt = "Sherlock Holmes and the detective met"
    assert grade_completion(" Sherlock Holmes again.", ANCHORS, ["Holmes"], GENRE, prompt=prompt) == (0, [])
    assert grade_completion(" the detective Moriarty.", ANCHORS, [], GENRE, prompt=prompt) == (3, ["Moriarty"])
    assert grade_completion(" another detective.", ANCHORS, [], GENRE, prompt=prompt) == (0, [])
    # an anchor inside a longer one in the prompt is still an echo
    assert grade_completion(" Moriarty.", ["Miss Mary", "Mary Sutherland", "Moriarty"], [], GENRE,
                                       prompt="Miss Mary Sutherland met") == (3, ["Moriarty"])
    assert grade_completion(" Mary Sutherland.", ["Miss Mary", "Mary Sutherland"], [], GENRE,
                                       prompt="Miss Mary Sutherland met") == (0, [])


def test_term_matcher_finds_each_term_once_in_order():
    matcher = TermMatcher(["Baker Street", "Baker", "fog"])
    assert matcher.find("Fog over Baker Street; Baker again.") == ["fog", "Baker Street", "Baker"]
    overlapping = TermMatcher(["Miss Mary", "Mary Sutherland", "Sutherland"])
    assert overlapping.find("Miss Mary Sutherland") == ["Miss Mary", "Mary Sutherland", "Sutherland"]
    assert TermMatcher([]).find("anything") == []


def test_term_matcher_occurrences_give_every_span_in_order():
    matcher = TermMatcher(["Baker Street", "Baker", "fog"])
    text = "Fog over Baker Street; Baker again."
    hits = matcher.occurrences(text)
    assert hits == [("fog", 0, 3), ("Baker Street", 9, 21), ("Baker", 23, 28)]
    assert all(text[start:end].lower() == term.lower() for term, start, end in hits)


def test_grading_terms_genre_wins_and_common_anchors_are_weak():
    zipf = {"Watson": 4.18, "Murphy": 4.13, "Moriarty": 2.98, "Scotland Yard": 3.5, "New York": 5.3,
            "Baskerville Hall": 1.0}.get
    anchors = [("Watson", ["Dr. Watson"], 1000), ("Murphy", ["Mr. Murphy"], 6), ("Moriarty", [], 100),
               ("Scotland Yard", ["Scotland Yard"], 60), ("New York", [], 18), ("Baskerville Hall", [], 20)]
    strong, weak = grading_terms(anchors, ["scotland yard"], zipf=zipf, corpus_words=670_000)
    # Watson: 1000/670k = 1.5e-3 per word vs 10**(4.18-9) = 1.5e-5: 100x, distinctive.
    # Murphy: 6/670k = 9e-6 vs 1.3e-5: below 10x, a possible lucky guess.
    assert strong == ["Watson", "Dr. Watson", "Moriarty", "Baskerville Hall"]
    assert weak == ["Murphy", "Mr. Murphy", "New York"]
    strict, _ = grading_terms(anchors, [], zipf=zipf, corpus_words=670_000, min_specificity=1000)
    assert "Watson" not in strict and "Scotland Yard" in strict
