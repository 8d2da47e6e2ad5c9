"""pipeline/review/anchors.py: anchor tasks and the normalisation of an anchors export."""

from __future__ import annotations

import json

from pipeline.review.records import Correction
from tests.review.conftest import (
    DICTIONARY, KEY, TEXT, VERSION, annotation, at, box, decisions, edit, export, normalise, passages,
    proposed_result, span, the_task,
)
from pipeline.review.anchors import anchor_tasks


# --- task building ------------------------------------------------------------------------


def test_anchor_tasks_spans_are_slices_of_the_text_with_kinds_and_translations():
    task = the_task()
    assert task["data"] == {"key": KEY, "passage_id": KEY, "text": TEXT, "dictionary_version": VERSION}
    [prediction] = task["predictions"]
    assert prediction["model_version"] == VERSION
    spans = [r for r in prediction["result"] if r["type"] == "labels"]
    boxes = {r["id"]: r["value"]["text"] for r in prediction["result"] if r["type"] == "textarea"}
    assert [(s["value"]["text"], s["value"]["labels"]) for s in spans] == [
        ("Holmes", ["person"]), ("Watson", ["person"]), ("Baker Street", ["place"]), ("Holmes", ["person"]),
        ("Toby", ["other"]),
    ]
    for s in spans:
        assert TEXT[s["value"]["start"]:s["value"]["end"]] == s["value"]["text"]
        assert (s["from_name"], s["to_name"]) == ("kind", "text")
    assert len({s["id"] for s in spans}) == len(spans) and set(boxes) == {s["id"] for s in spans}
    assert boxes[spans[2]["id"]] == ["Mill Lane | Oak Row"]
    assert task["anchors"] == {s["id"]: s["value"]["text"] for s in spans}


def test_anchor_tasks_order_is_deterministic_and_limited():
    rows = [
        ("forget:b#2", "forget", "Holmes alone."),
        ("forget:a#9", "forget", "Watson and Holmes."),
        ("forget:a#1", "forget", "Holmes, then Holmes again."),
        ("forget:c#0", "forget", "Watson with Toby at Baker Street."),
        ("retain:x#0", "retain", "Holmes and Watson in another book."),
        ("forget:d#0", "forget", "Nobody here."),
    ]
    frame = passages(*rows)
    tasks = anchor_tasks(frame, DICTIONARY, max_tasks=10, dictionary_version=VERSION)
    assert [t["data"]["key"] for t in tasks] == ["forget:c#0", "forget:a#9", "forget:a#1", "forget:b#2"]
    shuffled = anchor_tasks(frame.sample(frac=1, random_state=3), DICTIONARY.iloc[::-1], max_tasks=10,
                            dictionary_version=VERSION)
    assert json.dumps(shuffled, sort_keys=True) == json.dumps(tasks, sort_keys=True)
    assert [t["data"]["key"] for t in anchor_tasks(frame, DICTIONARY, max_tasks=2, dictionary_version="v")] == [
        "forget:c#0", "forget:a#9"]


# --- normalisation ------------------------------------------------------------------------


def test_untouched_pre_annotation_accepts_every_anchor():
    review = normalise(export(annotation(11, "ann", proposed_result())))
    assert review.problems == []
    assert decisions(review) == {("accept", a, None, None, ()) for a in ("Holmes", "Watson", "Baker Street", "Toby")}
    record = review.records[0]
    assert record["reviewer"] == "ann@example.org" and record["created_at"] == "2026-11-27T10:00:00Z"
    assert record["task"] == KEY and record["source"] == "20261127T120000Z.json" and "note" not in record
    assert all(Correction.problems(r) == [] for r in review.records)


def test_each_decision_type():
    result = proposed_result()
    result = edit(result, "Toby", label="not an anchor")                       # reject
    result = edit(result, "Baker Street", label="other")                       # change_kind
    result = edit(result, "Watson", translation="Anna|  Bob | ")               # change_translation
    result = edit(result, "Holmes", drop=True)                                 # replaced below
    sherlock = span("Sherlock Holmes", "person")                               # change_span
    mycroft = span("Mycroft", "person")                                        # add, with translations
    result += [sherlock, mycroft, box(mycroft, "Miles | Mark")]
    review = normalise(export(annotation(12, "bob", result)))
    assert review.problems == []
    assert decisions(review) == {
        ("reject", "Toby", None, None, ()),
        ("change_kind", "Baker Street", None, "other", ()),
        ("accept", "Watson", None, None, ()),
        ("change_translation", "Watson", None, None, ("Anna", "Bob")),
        ("change_span", "Holmes", "Sherlock Holmes", None, ()),
        ("add", "Mycroft", None, "person", ("Miles", "Mark")),
    }
    assert all(Correction.problems(r) == [] for r in review.records)


def test_one_changed_occurrence_decides_for_the_anchor_and_deleting_says_nothing():
    # The second "Holmes" relabelled "not an anchor", the first left: the anchor is rejected.
    result = edit(proposed_result(), "Holmes", nth=1, label="not an anchor")
    # Watson's region deleted: no decision on Watson.
    result = edit(result, "Watson", drop=True)
    review = normalise(export(annotation(13, "ann", result)))
    assert decisions(review) == {("reject", "Holmes", None, None, ()), ("accept", "Baker Street", None, None, ()),
                                 ("accept", "Toby", None, None, ())}


def test_a_changed_span_with_a_new_kind_and_translation_and_an_unchanged_prefill():
    sherlock = span("Sherlock Holmes", "organisation")
    result = edit(proposed_result(), "Holmes", drop=True) + [sherlock, box(sherlock, "Jon | Tom")]
    review = normalise(export(annotation(14, "ann", result)))
    # The box repeats the old translations: no edit, so the proposer translates the new key.
    assert ("change_span", "Holmes", "Sherlock Holmes", "organisation", ()) in decisions(review)
    result = edit(proposed_result(), "Holmes", drop=True) + [sherlock, box(sherlock, "Sam Hale")]
    review = normalise(export(annotation(14, "ann", result)))
    assert ("change_span", "Holmes", "Sherlock Holmes", "organisation", ("Sam Hale",)) in decisions(review)


def test_blanks_around_a_span_are_stripped_from_the_new_term():
    start, end = at("Mycroft")
    region = {"id": "m", "from_name": "kind", "to_name": "text", "type": "labels",
              "value": {"start": start - 1, "end": end + 1, "text": TEXT[start - 1:end + 1], "labels": ["person"]}}
    review = normalise(export(annotation(15, "ann", proposed_result() + [region])))
    assert ("add", "Mycroft", None, "person", ()) in decisions(review)
