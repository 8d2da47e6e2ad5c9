"""pipeline/core/anchor_gold.py: recall and precision against a gold list, computed by hand."""

from __future__ import annotations

from pipeline.core.anchor_gold import GoldTerm, gold_covered, gold_metrics, names_same
from pipeline.core.anchor_match import AnchorMatcher


def test_gold_recall_needs_every_name_word_translated():
    matcher = AnchorMatcher(["Hudson", "Sherlock", "Holmes", "221b"])
    assert gold_covered("Mrs. Hudson", matcher)
    assert gold_covered("Sherlock Holmes", matcher)
    assert not gold_covered("Mary Morstan", matcher)
    assert not gold_covered("Mycroft Holmes", matcher)  # "Mycroft" would survive
    assert not gold_covered("221B Baker Street", matcher)  # "Baker Street" would survive
    assert gold_covered("221B Baker Street", AnchorMatcher(["221b", "Baker Street"]))


def test_gold_metrics_recall_and_precision_by_hand():
    gold = [
        GoldTerm("Sherlock Holmes", "person", "core"),
        GoldTerm("Baker Street", "place", "core"),
        GoldTerm("Irene Adler", "person", "core"),
        GoldTerm("Toby", "person", "valid"),
    ]
    metrics = gold_metrics(["Holmes", "Sherlock", "Baker Street", "London", "Toby", "Adler"], gold, precision_at=4)
    assert metrics["missed"] == ["Irene Adler"]
    assert metrics["recall"] == round(2 / 3, 4)
    assert metrics["false_positives"] == ["London"]
    assert metrics["precision_at_4"] == 0.75  # top 4 by rank: Holmes, Sherlock, Baker Street, London


def test_an_anchor_names_a_gold_term_whatever_its_title_and_as_a_family_plural():
    assert names_same("Mr. Bennet", "Elizabeth Bennet")
    assert names_same("Inspector Gregory", "Gregory")
    assert names_same("the Gardiners".split(" ", 1)[1], "Mrs. Gardiner")
    assert names_same("Bingleys", "Mr. Bingley")
    assert not names_same("London", "Baker Street")
    assert not names_same("Mr.", "Mr. Bennet")  # a title names nobody
