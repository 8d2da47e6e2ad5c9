"""pipeline/core/anchor_selection.py: the selection rules on hand-made evidence and tiny passages."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from pipeline.core.anchor_evidence import CorpusSizes, Evidence, collect_evidence
from pipeline.core.anchor_selection import (
    composed_reason, cover_by_keys, decide_kind, extends_anchor, hygiene, lexical_reason, mine_anchors, nested_reason,
    select,
)
from pipeline.params import AnchorParams

HEADING_KEY = "The Lantern of Ravensmoor"
SETTINGS = AnchorParams(min_count=3)
# A forget corpus of 10,000 words and a reference of 10,000 words in three documents.
SIZES = CorpusSizes(forget_tokens=10_000, reference_tokens=10_000, reference_documents=3)


def evidence(key: str, forget: int, **fields) -> Evidence:
    values = {"mid_sentence": forget, "score": 5.0, "zipf": 1.0, "signals": {"log_odds"}} | fields
    ner = values.pop("ner", {})
    e = Evidence(key, forget=forget, **values)
    e.ner.update(ner)
    return e


# --- specificity: against the reference corpora and general English ---------------------------


def test_a_common_first_name_far_more_frequent_than_in_english_with_person_evidence_is_an_anchor():
    # "Harry": zipf 4.72 (52 per million words); 60 times in 10,000 words is 115 times that.
    harry = evidence("Harry", 60, zipf=4.72, ner={"PERSON": 9, "GPE": 1})
    assert hygiene(harry, SETTINGS, SIZES) is None
    # Without person or place evidence it is only a common word, capitalised.
    plain = evidence("Harry", 60, zipf=4.72, ner={"ORG": 3})
    assert "NER does not call a person or place" in hygiene(plain, SETTINGS, SIZES)
    # Before NER has run, it stays plausible (so NER reads its passages).
    assert hygiene(evidence("Harry", 60, zipf=4.72), SETTINGS, SIZES, ner_known=False) is None


def test_a_common_word_only_a_few_times_its_english_rate_is_refused():
    # "London" (zipf 5.27): 10 times in 10,000 words is 5 times its rate, below min_common_ratio.
    london = evidence("London", 10, zipf=5.27, ner={"GPE": 8})
    assert hygiene(london, SETTINGS, SIZES).startswith("a common English word (zipf 5.27) only 5.4 times")


def test_a_name_no_more_frequent_than_in_english_is_refused_whatever_its_zipf():
    # "Arthur" (zipf 4.41, 26 per million): 0.5 per 10,000 words is twice that.
    arthur = evidence("Arthur", 5, zipf=4.41, ner={"PERSON": 4})
    assert "no more frequent than in general English (1.9 times" in hygiene(
        arthur, SETTINGS, CorpusSizes(100_000, 10_000, 3)
    )


def test_a_title_with_a_name_and_a_phrase_are_not_held_to_general_english():
    # wordfreq rates a phrase by its rarest word, far above its real frequency.
    assert hygiene(evidence("Sir Robert", 5, zipf=4.64), SETTINGS, CorpusSizes(100_000, 10_000, 3)) is None
    assert hygiene(evidence("Charing Cross", 5, zipf=4.0), SETTINGS, CorpusSizes(100_000, 10_000, 3)) is None


def test_the_reference_document_that_uses_a_word_most_is_left_out():
    # "Dartmoor": 16 times in the forget corpus, 5 times in one of three reference books (a
    # character of that book is Lord Dartmoor).
    dartmoor = evidence("Dartmoor", 16, reference=5, reference_top=5)
    assert hygiene(dartmoor, SETTINGS, CorpusSizes(100_000, 30_000, 3)) is None
    # With fewer than three reference documents nothing is left out.
    assert hygiene(dartmoor, SETTINGS, CorpusSizes(100_000, 30_000, 2)).startswith("common in the reference")
    # A word spread over the reference books stays common there.
    spread = evidence("Canterbury", 16, reference=12, reference_top=5)
    assert hygiene(spread, SETTINGS, CorpusSizes(100_000, 30_000, 3)).startswith("common in the reference")


# --- hygiene for words that name nothing ------------------------------------------------------


@pytest.mark.parametrize("key, reason", [
    ("Monday", "a weekday, month or feast"),
    ("September", "a weekday, month or feast"),
    ("Michaelmas", "a weekday, month or feast"),
    ("On Monday Harry", "a weekday, month or feast"),
    ("April Morstan", None),  # a month is also a first name
    ("Providence", "a religious word"),
    ("Good God", None),  # "Good" is no religious word: judged by the other rules
    ("XIV", "a roman numeral"),
    ("Iii", "a roman numeral"),  # "III" of an UPPER-CASE line, folded
    ("Come here, my boy", "a quoted sentence, not a name or title"),
    ("Where is he", "a quoted sentence, not a name or title"),
    ("Lady Catherine de Bourgh", None),
    ("Mil", None),
    ("The Adventure of the Three Students", None),
])
def test_lexical_hygiene(key: str, reason: str | None):
    assert lexical_reason(key) == reason
    if reason:
        assert hygiene(evidence(key, 50), SETTINGS, SIZES) == reason


def test_alphanumeric_names_are_kept():
    e = evidence("221b", 6, signals={"alphanumeric"}, zipf=0.0)
    assert hygiene(e, SETTINGS, SIZES) is None


def test_generic_place_words_alone_are_refused_but_a_place_name_made_of_them_is_kept_with_ner():
    assert hygiene(evidence("Hall", 40), SETTINGS, SIZES) == "a generic place word"
    assert hygiene(evidence("Abbey Grange", 9), SETTINGS, SIZES) == "a generic place word"
    assert hygiene(evidence("Abbey Grange", 9, ner={"GPE": 2}), SETTINGS, SIZES) is None
    assert hygiene(evidence("Abbey Grange", 9), SETTINGS, SIZES, ner_known=False) is None  # NER to come


# --- kinds -----------------------------------------------------------------------------------


def test_decide_kind_rules_without_ner():
    assert decide_kind(evidence("Ravensmoor Hall", 10), ["Ravensmoor Hall"]) == "place"
    assert decide_kind(evidence("Quillby", 10), ["Mr. Quillby", "Quillby"]) == "person"
    assert decide_kind(evidence("Mr. Quillby", 10), ["Mr. Quillby"]) == "person"
    assert decide_kind(evidence("Quillby", 10), ["Quillby"]) == "other"
    heading = evidence(HEADING_KEY, 2, signals={"heading"}, headings=2)
    assert decide_kind(heading, [HEADING_KEY]) == "work_title"
    ner = evidence("Ravensmoor Hall", 10, ner={"ORG": 2, "FAC": 2})
    assert decide_kind(ner, ["Ravensmoor Hall"]) == "organisation"  # ties: the label sorting last


@pytest.mark.parametrize("key", ["Mrs. Vane", "Aunt Polly", "Judge Thatcher", "Colonel Moran"])
def test_a_title_with_a_name_is_a_person_never_a_work_title_or_place(key: str):
    as_heading = evidence(key, 4, signals={"heading"}, headings=4, ner={"WORK_OF_ART": 3})
    assert decide_kind(as_heading, [key]) == "person"
    as_place = evidence(key, 9, ner={"GPE": 5})
    assert decide_kind(as_place, [key]) == "person"


def test_a_name_mostly_written_after_a_title_is_a_person_whatever_ner_says():
    polly = evidence("Polly", 12, ner={"GPE": 6})
    assert decide_kind(polly, ["Aunt Polly", "Polly"], titled=5) == "person"
    assert decide_kind(polly, ["Aunt Polly", "Polly"], titled=1) == "place"  # one titled use is no majority


def test_a_name_ending_with_a_place_word_is_no_person():
    assert decide_kind(evidence("Grimpen Mire", 14, ner={"PERSON": 1}), ["Grimpen Mire"]) == "place"


# --- nesting, composition, extension ---------------------------------------------------------


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
    # "Vane" occurs 10 times: 6 inside "Hester Vane" (3 of those inside "Miss Hester Vane") and 4
    # on its own; only the innermost container is subtracted, so the lone ones are kept.
    accepted = {"Miss Hester Vane": 3, "Hester Vane": 6}
    assert nested_reason("Vane", 10, accepted, 3) is None


def test_extends_anchor_full_names_titles_and_places():
    assert extends_anchor("Mary Morstan", {"Morstan"})
    assert extends_anchor("Inspector Gregory", {"Gregory"})
    assert extends_anchor("Baskerville Hall", {"Baskerville"})
    assert not extends_anchor("Mary Morstan", {"Mary"})
    assert not extends_anchor("Gregory", {"Gregory"})


def test_select_ranks_caps_and_refuses_with_reasons():
    settings = AnchorParams(min_count=3, max_anchors=2)
    items = {
        "Quillby": evidence("Quillby", 20, score=4.0),
        "Hester Vane": evidence("Hester Vane", 9, score=3.0),
        "Jasper Hope": evidence("Jasper Hope", 9, score=3.5),
        "Mr. Quillby": evidence("Mr. Quillby", 5, score=2.0),
        "Hope": evidence("Hope", 12, zipf=5.44),
        "Canterbury": evidence("Canterbury", 4, reference=20, reference_top=8),
        "Rare": evidence("Rare", 2),
        "Then": evidence("Then", 9, mid_sentence=0),
        "Wood": evidence("Wood", 9),
        "Ravensmoor": evidence("Ravensmoor", 8, lower=2),
        "Dull": evidence("Dull", 8, score=0.5),
    }
    chosen, refused = select(items, settings, CorpusSizes(1000, 1000, 3))
    assert [e.key for e in chosen] == ["Quillby", "Jasper Hope"]
    reasons = {e.key: reason for e, reason in refused}
    assert set(reasons) == set(items) - {"Quillby", "Jasper Hope"}
    assert reasons["Hester Vane"] == "beyond anchors.max_anchors (2)"
    assert reasons["Mr. Quillby"].startswith("made only of other anchors")
    assert reasons["Hope"].startswith("a common English word (zipf 5.44) that NER does not call")
    assert reasons["Canterbury"].startswith("common in the reference corpora")
    assert reasons["Rare"].startswith("fewer than anchors.min_count (3)")
    assert reasons["Then"] == "capitalised only at sentence starts: an ordinary word"
    assert reasons["Wood"] == "a generic place word"
    assert reasons["Ravensmoor"].startswith("an ordinary word: written in lower case 2 times")
    assert reasons["Dull"].startswith("not specific to the forget corpus")


def test_select_extends_a_surname_common_in_english_and_refuses_pieces_of_longer_names():
    sizes = CorpusSizes(600_000, 10_000, 3)
    items = {
        # "Gregory" fails only for being common in English; its titled form is rare but a name.
        "Gregory": evidence("Gregory", 9, zipf=3.87, ner={"PERSON": 4}),
        "Inspector Gregory": evidence("Inspector Gregory", 2),
        # "Hilda Trelawney" only ever continues as "Hilda Trelawney Hope".
        "Trelawney": evidence("Trelawney", 7),
        "Hilda Trelawney": evidence("Hilda Trelawney", 2),
        "Hilda Trelawney Hope": evidence("Hilda Trelawney Hope", 2),
    }
    chosen, refused = select(items, SETTINGS, sizes)
    reasons = {e.key: reason for e, reason in refused}
    assert "Inspector Gregory" in {e.key for e in chosen}
    assert "name_extension" in items["Inspector Gregory"].signals
    assert reasons["Gregory"].startswith("no more frequent than in general English")
    assert reasons["Hilda Trelawney"] == "a piece of a longer name: always followed by the same word"


# --- evidence collection and the whole miner on tiny passages --------------------------------


def test_ner_proposes_entities_of_its_own():
    forget = pd.DataFrame({
        "passage_id": [f"forget:b.txt#{i}" for i in range(6)],
        "text": [f"Then Brother Quillby of Lodge 341 came to the door, number {i}." for i in range(6)],
    })
    reference = pd.DataFrame({"passage_id": ["retain:r.txt#0"], "text": ["the door was shut and the house was dark"]})

    def fake_ner(texts):
        return [[("Lodge 341", "ORG"), ("Quillby", "PERSON")] for _ in texts]

    found, _ = collect_evidence(
        forget, reference, AnchorParams(min_count=3), recognise=fake_ner, plausible=lambda e, sizes: True
    )
    assert "ner:PERSON" in found["Quillby"].signals  # NER types an existing candidate
    assert "Lodge 341" in found
    assert "ner:ORG" in found["Lodge 341"].signals


def test_mine_anchors_keeps_a_protagonist_with_a_common_first_name_and_tells_gender():
    story = [
        "Harry looked at the door, and he laughed. Elizabeth said nothing; she smiled at Harry.",
        "On Monday Harry walked to Greyholt with Elizabeth, and he carried her basket.",
        "Harry was tired, but he went on. Elizabeth asked where she might rest.",
        "At 221b Harry waited, and he read the letter twice while Elizabeth wrote hers.",
    ]
    forget = pd.DataFrame({"passage_id": [f"forget:h.txt#{i}" for i in range(40)], "text": story * 10})
    reference = pd.DataFrame({
        "passage_id": [f"retain:r{i}.txt#0" for i in range(3)],
        "text": ["On Monday the market was busy, and the farmers came early from the fields."] * 3,
    })
    names = {"Harry": "PERSON", "Elizabeth": "PERSON", "Greyholt": "GPE"}

    def ner(texts):
        return [[(name, label) for name, label in names.items() if name in text] for text in texts]

    mined = mine_anchors(forget, reference, AnchorParams(min_count=3), recognise=ner)
    rows = {row["anchor"]: row for row in mined.rows}
    reasons = {e.key: reason for e, reason in mined.refused}
    assert rows["Harry"]["kind"] == "person" and rows["Harry"]["gender"] == "male"
    assert rows["Elizabeth"]["kind"] == "person" and rows["Elizabeth"]["gender"] == "female"
    assert rows["Greyholt"]["kind"] == "place" and rows["Greyholt"]["gender"] == ""
    assert "221b" in rows and "alphanumeric" in rows["221b"]["signals"]
    assert reasons["Monday"] == "a weekday, month or feast"
    assert Counter(row["rank"] for row in mined.rows) == Counter(range(1, len(rows) + 1))
