"""pipeline/review/voting.py: majority, conflicts, agreement, disagreements across tasks."""

from __future__ import annotations

import copy

import pytest

from pipeline.review.anchors import anchor_tasks
from pipeline.review.tasks import task_record
from pipeline.review.voting import cohen_kappa, majority
from tests.review.conftest import (
    DICTIONARY, KEY, TEXT, VERSION, annotation, decisions, edit, export, normalise, passages, proposed_result,
    span,
)


# --- several reviewers --------------------------------------------------------------------


def test_majority_of_three_reviewers():
    ann = proposed_result()
    bob = edit(edit(proposed_result(), "Toby", label="not an anchor"), "Watson", label="place")
    cat = edit(proposed_result(), "Toby", label="not an anchor")
    review = normalise(export(
        annotation(41, "ann", ann, created="2026-11-27T10:00:00Z"),
        annotation(42, "bob", bob, created="2026-11-27T10:05:00Z"),
        annotation(43, "cat", cat, created="2026-11-27T10:02:00+01:00"),
    ))
    assert review.conflicts == []
    by_anchor = {r["anchor"]: r for r in review.records}
    assert by_anchor["Toby"]["action"] == "reject"
    assert by_anchor["Toby"]["reviewer"] == "bob@example.org, cat@example.org"
    assert by_anchor["Toby"]["created_at"] == "2026-11-27T10:05:00Z"  # the later instant (10:02+01:00 is 09:02Z)
    assert by_anchor["Toby"]["note"] == "majority 2 of 3 reviewers"
    assert by_anchor["Watson"]["action"] == "accept"
    assert by_anchor["Watson"]["reviewer"] == "ann@example.org, cat@example.org"
    assert by_anchor["Holmes"]["note"] == "majority 3 of 3 reviewers"


def test_a_tie_is_a_conflict_left_out_of_the_corrections():
    ann = edit(proposed_result(), "Toby", label="not an anchor")
    bob = edit(proposed_result(), "Watson", translation="Wes")
    mycroft = span("Mycroft", "person")
    review = normalise(export(annotation(51, "ann", ann + [mycroft]), annotation(52, "bob", bob)))
    assert {(c.anchor, c.aspect) for c in review.conflicts} == {("Toby", "decision"), ("Mycroft", "decision"),
                                                                ("Watson", "translation")}
    toby = next(c for c in review.conflicts if c.anchor == "Toby")
    assert toby.task == KEY and toby.votes == {"reject": ["ann@example.org"], "accept": ["bob@example.org"]}
    mine = next(c for c in review.conflicts if c.anchor == "Mycroft")
    assert mine.votes == {"add (person)": ["ann@example.org"], "no decision": ["bob@example.org"]}
    assert decisions(review) == {("accept", "Holmes", None, None, ()), ("accept", "Baker Street", None, None, ()),
                                 ("accept", "Watson", None, None, ())}


def test_a_reviewers_latest_annotation_is_their_vote():
    old = annotation(61, "ann", edit(proposed_result(), "Toby", label="not an anchor"), created="2026-11-27T10:00:00Z")
    new = annotation(62, "ann", proposed_result(), created="2026-11-27T11:00:00Z")
    review = normalise(export(new, old))
    assert ("accept", "Toby", None, None, ()) in decisions(review) and review.conflicts == []
    assert review.agreement["pairs"] == []


def test_majority_and_kappa_by_hand():
    assert majority({"a": "x", "b": "x", "c": "y"}) == ("x", ["a", "b"])
    assert majority({"a": "x", "b": "y"}) is None
    assert majority({}) is None
    # 4 items: observed 3/4; A says x,x,x,y and B x,y,x,y: expected (3*2 + 1*2)/16 = 1/2.
    assert cohen_kappa([("x", "x"), ("x", "y"), ("x", "x"), ("y", "y")]) == pytest.approx(0.5)
    assert cohen_kappa([("x", "x"), ("x", "x")]) is None  # expected agreement 1: undefined
    assert cohen_kappa([]) is None


def test_agreement_on_per_anchor_decisions():
    ann = edit(proposed_result(), "Toby", label="not an anchor")
    bob = edit(edit(proposed_result(), "Toby", label="not an anchor"), "Watson", label="not an anchor")
    review = normalise(export(annotation(71, "ann", ann), annotation(72, "bob", bob)))
    # Holmes, Baker Street: both accept; Toby: both reject; Watson: accept vs reject.
    [pair] = review.agreement["pairs"]
    assert pair["reviewers"] == ["ann@example.org", "bob@example.org"] and pair["items"] == 4
    assert pair["agreement"] == pytest.approx(0.75) and pair["kappa"] == pytest.approx(0.5)
    assert review.agreement["percent_agreement"] == pytest.approx(0.75)
    assert review.agreement["kappa"] == pytest.approx(0.5)
    # A third reviewer agreeing with ann everywhere: ann-cat 4/4 (kappa 1), bob-cat as ann-bob.
    cat = copy.deepcopy(ann)
    review = normalise(export(annotation(71, "ann", ann), annotation(72, "bob", bob), annotation(73, "cat", cat)))
    assert review.agreement["percent_agreement"] == pytest.approx(10 / 12)
    assert review.agreement["kappa"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_decisions_that_differ_across_tasks_are_reported():
    other_key, other_text = "forget:canon.txt#4", "Toby barked at Watson."
    tasks = anchor_tasks(passages((KEY, "forget", TEXT), (other_key, "forget", other_text)), DICTIONARY,
                         max_tasks=5, dictionary_version=VERSION)
    records = {t["data"]["key"]: task_record(t) for t in tasks}
    second = next(t for t in tasks if t["data"]["key"] == other_key)
    exported = export(annotation(96, "ann", edit(proposed_result(), "Toby", label="not an anchor")))
    exported.append({"id": 2, "data": second["data"], "predictions": [8],
                     "annotations": [annotation(97, "bob", copy.deepcopy(second["predictions"][0]["result"]))]})
    review = normalise(exported, tasks=records)
    assert review.summary()["disagreements"] == [
        {"anchor": "Toby", "decisions": {"accept": [other_key], "reject": [KEY]}}]
