"""pipeline/core/anchor_selection.py: the selection rules on hand-made evidence and tiny passages."""

from __future__ import annotations

import pandas as pd

from pipeline.core.anchor_selection import (
    Evidence, collect_evidence, composed_reason, cover_by_keys, decide_kind, nested_reason, select,
)
from pipeline.params import AnchorParams

HEADING_KEY = "The Lantern of Ravensmoor"


def evidence(key: str, forget: int, **fields) -> Evidence:
    values = {"mid_sentence": forget, "score": 5.0, "zipf": 1.0, "signals": {"log_odds"}} | fields
    return Evidence(key, forget=forget, **values)


def test_decide_kind_rules_without_ner():
    assert decide_kind(evidence("Ravensmoor Hall", 10), ["Ravensmoor Hall"]) == "place"
    assert decide_kind(evidence("Quillby", 10), ["Mr. Quillby", "Quillby"]) == "person"
    assert decide_kind(evidence("Mr. Quillby", 10), ["Mr. Quillby"]) == "person"
    assert decide_kind(evidence("Quillby", 10), ["Quillby"]) == "other"
    heading = evidence(HEADING_KEY, 2, signals={"heading"}, headings=2)
    assert decide_kind(heading, [HEADING_KEY]) == "work_title"
    ner = evidence("Ravensmoor Hall", 10)
    ner.ner.update({"ORG": 2, "FAC": 2, "PERSON": 1})
    assert decide_kind(ner, ["Ravensmoor Hall"]) == "organisation"  # ties: the label sorting last


def test_cover_by_keys_and_composed_reason():
    assert cover_by_keys(["Sherlock", "Holmes"], {"Sherlock", "Holmes"}) == ["Sherlock", "Holmes"]
    assert cover_by_keys(["Sherlock", "Holmes"], {"Sherlock", "Holmes", "Sherlock Holmes"}) == ["Sherlock Holmes"]
    assert cover_by_keys(["Sherlock", "Holmes"], {"Holmes"}) is None
    keys = {"Quillby", "Mr. Quillby", "Hester Vane"}
    assert composed_reason("Mr. Quillby", keys).startswith("made only of other anchors (Quillby)")
    assert composed_reason("Hester Vane", keys) is None
    assert composed_reason("Quillby", keys) is None  # one word: never composed


def test_nested_reason_counts_word_boundaries():
    assert nested_reason("Vane", 6, {"Hester Vane": 6}, 3) == "only occurs inside longer anchors (Hester Vane)"
    assert nested_reason("Vane", 12, {"Hester Vane": 6}, 3) is None
    assert nested_reason("Vane", 6, {"Vanes Hill": 6}, 3) is None  # not a word of it
    assert nested_reason("Vane", 2, {}, 3) is None  # min_count is hygiene's business


def test_nested_reason_does_not_count_a_container_of_a_container_twice():

    # for k in containers)` subtracts every accepted container, but the n-gram counts nest:
    # the 3 occurrences of "Miss Hester Vane" are already among the 6 of "Hester Vane". Here
    # "Vane" occurs 10 times, 6 inside "Hester Vane" and 4 on its own ("said Vane"), yet
    # 10 - 6 - 3 = 1 < min_count rejects it, so the 4 lone "Vane"s are never translated.
    # On the Sherlock Holmes corpus "Sherlock" (n-gram count 415; 387 inside "Sherlock Holmes",
    # 104 of those inside "Mr. Sherlock Holmes"; 23 on its own, "my dear Sherlock") is rejected
    # this way, so the lone "Sherlock"s are never translated. Suggested fix: subtract only the innermost containers (those
    # that contain no other container), or count the key's occurrences outside accepted keys
    # with AnchorMatcher.
    accepted = {"Miss Hester Vane": 3, "Hester Vane": 6}
    assert nested_reason("Vane", 10, accepted, 3) is None


def test_select_ranks_caps_and_refuses_with_reasons():
    settings = AnchorParams(min_count=3, max_anchors=2)
    items = {
        "Quillby": evidence("Quillby", 20, score=4.0),
        "Hester Vane": evidence("Hester Vane", 9, score=3.0),
        "Jasper Hope": evidence("Jasper Hope", 9, score=3.5),
        "Mr. Quillby": evidence("Mr. Quillby", 5, score=2.0),
        "Hope": evidence("Hope", 12, zipf=5.44),
        "Canterbury": evidence("Canterbury", 4, reference=20),
        "Rare": evidence("Rare", 2),
        "Then": evidence("Then", 9, mid_sentence=0),
        "Wood": evidence("Wood", 9),
        "Ravensmoor": evidence("Ravensmoor", 8, lower=2),
        "Dull": evidence("Dull", 8, score=0.5),
    }
    chosen, refused = select(items, settings, n_forget=1000, n_reference=1000)
    assert [e.key for e in chosen] == ["Quillby", "Jasper Hope"]
    reasons = {e.key: reason for e, reason in refused}
    assert set(reasons) == set(items) - {"Quillby", "Jasper Hope"}
    assert reasons["Hester Vane"] == "beyond anchors.max_anchors (2)"
    assert reasons["Mr. Quillby"].startswith("made only of other anchors")
    assert reasons["Hope"].startswith("common in general English")
    assert reasons["Canterbury"].startswith("common in the reference corpora")
    assert reasons["Rare"].startswith("fewer than anchors.min_count (3)")
    assert reasons["Then"] == "capitalised only at sentence starts: an ordinary word"
    assert reasons["Wood"] == "a generic place word"
    assert reasons["Ravensmoor"].startswith("an ordinary word: written in lower case 2 times")
    assert reasons["Dull"].startswith("not specific to the forget corpus")


def test_ner_proposes_entities_of_its_own():

    # `key not in evidence and forget_stats.count.get(key, 0) < min_count`, but every key with
    # forget_stats.count >= min_count is already in `evidence` (it got the log_odds signal), so
    # `proposed` is always empty: NER never "proposes entities of its own" as the docstring
    # says, and an entity that is not a capitalised run ("Lodge 341", "221B Baker Street") is
    # dropped silently, in neither the candidates nor the rejects. (On the Sherlock Holmes data
    # no candidate or reject has only ner: signals.) Suggested fix: count NER keys in the
    # forget text with AnchorMatcher (not the capitalised-run n-grams) and keep those reaching
    # min_count as evidence, measured the same way.
    forget = pd.DataFrame({
        "passage_id": [f"forget:b.txt#{i}" for i in range(6)],
        "text": [f"Then Brother Quillby of Lodge 341 came to the door, number {i}." for i in range(6)],
    })
    reference = pd.DataFrame({"passage_id": ["retain:r.txt#0"], "text": ["the door was shut and the house was dark"]})

    def fake_ner(texts):
        return [[("Lodge 341", "ORG"), ("Quillby", "PERSON")] for _ in texts]

    found, _, _ = collect_evidence(forget, reference, AnchorParams(min_count=3), recognise=fake_ner)
    assert "ner:PERSON" in found["Quillby"].signals  # NER types an existing candidate
    assert "Lodge 341" in found
    assert "ner:ORG" in found["Lodge 341"].signals
