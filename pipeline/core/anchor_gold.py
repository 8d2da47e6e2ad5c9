"""Scoring anchors against a gold list: recall over core terms, precision of the top anchors.

A gold list is a list of :class:`GoldTerm` (term, kind, tier): ``core`` terms count for recall,
every term for precision. Nothing here reads a file (``pipeline.gold`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import name_words

TIERS = ("core", "valid")


@dataclass(frozen=True)
class GoldTerm:
    """One term of a gold list: ``tier`` is ``core`` (recall and precision) or ``valid`` (precision)."""

    term: str
    kind: str
    tier: str


def gold_covered(term: str, matcher: AnchorMatcher) -> bool:
    """A gold term is recalled when every name word of it falls inside a dictionary match, i.e.
    the blocks stage would translate all of it (``Mrs. Hudson`` is covered by ``Hudson``)."""
    spans = matcher.find(term)
    position, covered = 0, True
    for word in name_words(term):
        start = term.index(word, position)
        position = start + len(word)
        covered &= any(s.start <= start and position <= s.end for s in spans)
    return covered and bool(name_words(term))


def _identity(text: str) -> str:
    """The name words of a term or anchor, lower case: titles say nothing of who is meant."""
    return " ".join(name_words(text)).lower()


def _phrase_in(shorter: str, longer: str) -> bool:
    return f" {shorter} " in f" {longer} "


def names_same(anchor: str, term: str) -> bool:
    """An anchor is right for a gold term when one's name words are a phrase of the other's
    ("Mr. Mac" for "Mr. Mac", "Holmes" for "Sherlock Holmes", "Inspector Gregory" for "Gregory"),
    a family plural included ("the Gardiners" for "Mr. Gardiner")."""
    a, t = _identity(anchor), _identity(term)
    if not a or not t:
        return False
    singular = a[:-2] if a.endswith("es") and _phrase_in(a[:-2], t) else a[:-1] if a.endswith("s") else a
    return _phrase_in(a, t) or _phrase_in(t, a) or (singular != a and _phrase_in(singular, t))


def gold_metrics(ranked: Sequence[str], gold: Sequence[GoldTerm], precision_at: int) -> dict:
    """Recall over the core gold terms; precision of the first ``precision_at`` anchors.

    Args:
        ranked: every anchor, best first (rank order).
        gold: the gold list.
        precision_at: how many of the first anchors precision looks at.

    Returns:
        ``core_terms``, ``recall`` (share of core terms covered, see :func:`gold_covered`),
        ``missed`` (core terms not covered), ``precision_at_<k>`` (an anchor is right when it names
        a gold term, see :func:`names_same`) and ``false_positives`` (the wrong ones).
    """
    matcher = AnchorMatcher(ranked)
    core = [g.term for g in gold if g.tier == "core"]
    missed = [t for t in core if not gold_covered(t, matcher)]
    terms = [g.term for g in gold]
    top = list(ranked[:precision_at])
    wrong = [a for a in top if not any(names_same(a, t) for t in terms)]
    return {
        "core_terms": len(core), "recall": round(1 - len(missed) / len(core), 4) if core else None,
        "missed": missed, f"precision_at_{precision_at}": round(1 - len(wrong) / len(top), 4) if top else None,
        "false_positives": wrong,
    }
