"""pipeline/review/corrections.py: how the reviewers' corrections overlay the dictionary."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.review.corrections import CorrectionsError, apply_corrections, load_corrections
from pipeline.store import validate_frame
from schemas.anchors import DICTIONARY
from schemas.rejects import rejects_contract
from tests.review.conftest import ANN, BOB, correction as rec, minute as at, write_lines as write

def proposed_dictionary() -> pd.DataFrame:
    """Four proposed entries, n=2 index-aligned translations."""
    rows = [
        ("Holmes", "person", ["Smith", "Brown"], ["Holmes", "Holmes's", "Mr. Holmes"], 1, 9.5, 120),
        ("Watson", "person", ["Jones", "Green"], ["Watson"], 2, 7.25, 80),
        ("Baker Street", "place", ["Mill Lane", "Oak Row"], ["Baker Street"], 3, 5.0, 12),
        ("Toby", "other", ["Rex", "Max"], ["Toby"], 4, 3.5, 6),
    ]
    return pd.DataFrame(
        [
            {"anchor": a, "kind": k, "translations": t, "variants": v, "rank": r, "score": s,
             "forget_count": f, "status": "proposed", "proposed_by": ["log_odds"],
             "proposer": "offline", "review": []}
            for a, k, t, v, r, s, f in rows
        ]
    )


class FakeProposer:
    """Records its calls; translates ``X`` as ``[X-0, X-1]`` under the name ``fake``."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []

    def __call__(self, pairs: list[tuple[str, str]]) -> dict[str, tuple[list[str], str]]:
        self.calls.append(list(pairs))
        return {anchor: ([f"{anchor}-0", f"{anchor}-1"], "fake") for anchor, _ in pairs}


def run(tmp_path: Path, lines: list, frame: pd.DataFrame | None = None, **kwargs):
    """Write ``lines``, load and apply them; returns (path, dictionary, rejects, proposer)."""
    path = write(tmp_path, lines)
    proposer = FakeProposer()
    out, rejects = apply_corrections(
        proposed_dictionary() if frame is None else frame, load_corrections(path), propose=proposer, **kwargs
    )
    validate_frame(out, DICTIONARY)
    return path, out, rejects, proposer


def entry(frame: pd.DataFrame, anchor: str) -> dict:
    rows = frame[frame["anchor"] == anchor]
    assert len(rows) == 1, f"{anchor!r} appears {len(rows)} times"
    return rows.iloc[0].to_dict()


# --- apply_corrections: each action -----------------------------------------------------------


def test_no_corrections_returns_an_identical_frame(tmp_path):
    proposed = proposed_dictionary()
    out, rejects = apply_corrections(proposed, load_corrections(tmp_path / "none.jsonl"), propose=FakeProposer())
    pd.testing.assert_frame_equal(out, proposed)
    assert rejects == []
    assert set(out["status"]) == {"proposed"}
    validate_frame(out, DICTIONARY)


def test_accept(tmp_path):
    path, out, rejects, _ = run(tmp_path, [rec("accept", "Holmes", 1, note="clearly canon")])
    holmes = entry(out, "Holmes")
    assert holmes["status"] == "accepted"
    assert holmes["review"] == [f"{at(1)} {ANN} accept ({path}:1): clearly canon"]
    assert holmes["translations"] == ["Smith", "Brown"] and holmes["proposer"] == "offline"
    assert entry(out, "Watson")["status"] == "proposed" and entry(out, "Watson")["review"] == []
    assert rejects == []


def test_reject_goes_to_the_rejects_with_reviewer_and_note(tmp_path):
    path, out, rejects, _ = run(tmp_path, [
        rec("accept", "Holmes", 1),
        rec("reject", "Toby", 2, task="forget:book.txt#12", note="a dog's name is fine"),
    ])
    assert "Toby" not in set(out["anchor"])
    assert len(out) == 3
    assert rejects == [{
        "source": str(path), "location": "line 2", "record": "Toby",
        "reason": f"rejected by {ANN} at {at(2)} (task forget:book.txt#12): a dog's name is fine",
    }]
    validate_frame(pd.DataFrame(rejects), rejects_contract(DICTIONARY))


def test_change_span_with_translations(tmp_path):
    path, out, _, proposer = run(tmp_path, [
        rec("change_span", "Watson", 1, new_anchor="Dr. Watson", translations=["Dr. Jones", "Dr. Green"]),
    ])
    watson = entry(out, "Dr. Watson")
    assert "Watson" not in set(out["anchor"])
    assert "Watson" in watson["variants"]
    assert watson["translations"] == ["Dr. Jones", "Dr. Green"] and watson["proposer"] == "review"
    assert watson["status"] == "changed"
    assert (watson["rank"], watson["forget_count"], watson["score"]) == (2, 80, 7.25)  # kept
    assert list(out["anchor"]) == ["Holmes", "Dr. Watson", "Baker Street", "Toby"]  # position kept
    assert proposer.calls == []


def test_change_span_without_translations_asks_the_proposer_with_the_final_kind(tmp_path):
    _, out, _, proposer = run(tmp_path, [
        rec("change_span", "Baker Street", 1, new_anchor="221B Baker Street", kind="place"),
        rec("change_kind", "221B Baker Street", 2, kind="object"),
    ], forget_counts={"221B Baker Street": 9})
    assert proposer.calls == [[("221B Baker Street", "object")]]
    street = entry(out, "221B Baker Street")
    assert street["translations"] == ["221B Baker Street-0", "221B Baker Street-1"]
    assert street["proposer"] == "fake"
    assert street["kind"] == "object"
    assert street["forget_count"] == 9
    assert street["variants"] == ["221B Baker Street", "Baker Street"]


def test_change_kind(tmp_path):
    path, out, _, _ = run(tmp_path, [rec("change_kind", "Toby", 1, reviewer=BOB, kind="person")])
    toby = entry(out, "Toby")
    assert (toby["kind"], toby["status"], toby["translations"], toby["proposer"]) == ("person", "changed", ["Rex", "Max"], "offline")
    assert toby["review"] == [f"{at(1)} {BOB} change_kind ({path}:1)"]


def test_change_translation_replaces_and_marks_review(tmp_path):
    _, out, _, _ = run(tmp_path, [rec("change_translation", "Toby", 1, translations=["Spot", "Fido"])])
    toby = entry(out, "Toby")
    assert (toby["translations"], toby["proposer"], toby["status"]) == (["Spot", "Fido"], "review", "changed")


def test_short_translation_list_is_cycled_and_said_in_the_note(tmp_path):
    path, out, _, _ = run(tmp_path, [
        rec("change_translation", "Toby", 1, translations=["Spot"], note="one dog name is enough"),
        rec("change_translation", "Watson", 2, translations=["A", "B", "C"]),
    ])
    assert entry(out, "Toby")["translations"] == ["Spot", "Spot"]
    assert entry(out, "Toby")["review"] == [
        f"{at(1)} {ANN} change_translation ({path}:1): one dog name is enough; "
        "translations cycled from 1 to 2 (index-aligned worlds)"
    ]
    assert entry(out, "Watson")["translations"] == ["A", "B"]
    assert entry(out, "Watson")["review"][0].endswith(f"({path}:2): translations cut from 3 to 2 (index-aligned worlds)")


def test_cycling_repeats_the_list_in_order(tmp_path):
    frame = proposed_dictionary()
    frame["translations"] = [[f"{a}{i}" for i in range(5)] for a in frame["anchor"]]
    _, out, _, _ = run(tmp_path, [rec("change_translation", "Toby", 1, translations=["A", "B"])], frame=frame)
    assert entry(out, "Toby")["translations"] == ["A", "B", "A", "B", "A"]


def test_add_with_and_without_translations(tmp_path):
    path, out, _, proposer = run(tmp_path, [
        rec("add", "Mycroft", 1, kind="person", note="missed by the miner"),
        rec("add", "Diogenes Club", 2, kind="organisation", translations=["Quiet Club"]),
    ], forget_counts={"Mycroft": 14})
    assert proposer.calls == [[("Mycroft", "person")]]
    mycroft, club = entry(out, "Mycroft"), entry(out, "Diogenes Club")
    assert list(out["anchor"])[-2:] == ["Mycroft", "Diogenes Club"]
    assert (mycroft["rank"], club["rank"]) == (5, 6)
    assert math.isnan(mycroft["score"]) and math.isnan(club["score"])
    assert (mycroft["forget_count"], club["forget_count"]) == (14, 0)
    assert mycroft["status"] == club["status"] == "added"
    assert mycroft["proposed_by"] == club["proposed_by"] == ["review"]
    assert (mycroft["translations"], mycroft["proposer"]) == (["Mycroft-0", "Mycroft-1"], "fake")
    assert (club["translations"], club["proposer"]) == (["Quiet Club", "Quiet Club"], "review")
    assert mycroft["variants"] == ["Mycroft"]
    assert mycroft["review"] == [f"{at(1)} {ANN} add ({path}:1): missed by the miner"]


def test_added_entry_stays_added_and_changed_stays_changed(tmp_path):
    _, out, _, _ = run(tmp_path, [
        rec("add", "Mycroft", 1, kind="person", translations=["Max", "Tim"]),
        rec("change_kind", "Mycroft", 2, kind="other"),
        rec("accept", "Mycroft", 3, reviewer=BOB),
        rec("change_translation", "Watson", 4, translations=["X", "Y"]),
        rec("accept", "Watson", 5, reviewer=BOB),
    ])
    assert entry(out, "Mycroft")["status"] == "added"
    assert entry(out, "Watson")["status"] == "changed"
    assert len(entry(out, "Watson")["review"]) == 2


# --- order and sequences ----------------------------------------------------------------------


@pytest.mark.parametrize("swap", [False, True])
def test_chronological_order_not_file_order(tmp_path, swap):
    early = rec("change_translation", "Toby", 1, translations=["Early", "Early"])
    late = rec("change_translation", "Toby", 2, reviewer=BOB, translations=["Late", "Late"])
    path, out, _, _ = run(tmp_path, [late, early] if swap else [early, late])
    toby = entry(out, "Toby")
    assert toby["translations"] == ["Late", "Late"]
    early_line, late_line = (2, 1) if swap else (1, 2)
    assert toby["review"] == [
        f"{at(1)} {ANN} change_translation ({path}:{early_line})",
        f"{at(2)} {BOB} change_translation ({path}:{late_line})",
    ]


def test_file_order_does_not_matter_for_distinct_times(tmp_path):
    lines = [
        rec("add", "Mycroft", 1, kind="person"),
        rec("change_span", "Watson", 2, new_anchor="Dr. Watson"),
        rec("reject", "Toby", 3),
        rec("change_translation", "Dr. Watson", 4, translations=["P", "Q"]),
        rec("accept", "Holmes", 5),
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _, out_a, rejects_a, _ = run(a, lines)
    _, out_b, rejects_b, _ = run(b, lines[::-1])
    strip = lambda frame: frame.assign(review=frame["review"].map(len))  # provenance names the line
    pd.testing.assert_frame_equal(strip(out_a), strip(out_b))
    assert [r["record"] for r in rejects_a] == [r["record"] for r in rejects_b] == ["Toby"]


def test_time_zones_are_compared_as_instants(tmp_path):
    # 10:30+01:00 is 09:30Z: earlier than 10:00Z although it sorts later as text.
    first = {**rec("change_translation", "Toby", 0, translations=["Early", "Early"]), "created_at": "2026-11-27T10:30:00+01:00"}
    second = rec("change_translation", "Toby", 0, translations=["Late", "Late"])
    _, out, _, _ = run(tmp_path, [second, first])
    assert entry(out, "Toby")["translations"] == ["Late", "Late"]


def test_equal_times_are_applied_in_line_order(tmp_path):
    _, out, _, _ = run(tmp_path, [
        rec("change_translation", "Toby", 1, translations=["First", "First"]),
        rec("change_translation", "Toby", 1, translations=["Second", "Second"]),
    ])
    assert entry(out, "Toby")["translations"] == ["Second", "Second"]


def test_later_reject_removes_an_added_term_without_translating_it(tmp_path):
    path, out, rejects, proposer = run(tmp_path, [
        rec("reject", "Mycroft", 2, reviewer=BOB, note="appears twice only"),
        rec("add", "Mycroft", 1, kind="person"),
    ])
    assert "Mycroft" not in set(out["anchor"])
    assert proposer.calls == []  # nobody pays for translating a term that is gone
    assert rejects == [{"source": str(path), "location": "line 1", "record": "Mycroft",
                        "reason": f"rejected by {BOB} at {at(2)}: appears twice only"}]


def test_change_span_then_change_translation_on_the_new_key(tmp_path):
    path, out, _, proposer = run(tmp_path, [
        rec("change_span", "Watson", 1, new_anchor="John Watson", note="full name"),
        rec("change_translation", "John Watson", 2, reviewer=BOB, translations=["John Jones", "John Green"]),
    ])
    watson = entry(out, "John Watson")
    assert watson["translations"] == ["John Jones", "John Green"] and watson["proposer"] == "review"
    assert proposer.calls == []  # replaced before anyone had to propose them
    assert watson["review"] == [
        f"{at(1)} {ANN} change_span ({path}:1): full name",
        f"{at(2)} {BOB} change_translation ({path}:2)",
    ]


def test_key_back_after_reject_inherits_the_history(tmp_path):
    path, out, rejects, _ = run(tmp_path, [
        rec("reject", "Toby", 1, note="just a dog"),
        rec("add", "Toby", 2, reviewer=BOB, kind="other", translations=["Spot", "Rex"], note="the dog matters"),
    ])
    toby = entry(out, "Toby")
    assert rejects == []
    assert toby["status"] == "added" and toby["rank"] == 5
    assert toby["review"] == [
        f"{at(1)} {ANN} reject ({path}:1): just a dog",
        f"{at(2)} {BOB} add ({path}:2): the dog matters",
    ]


def test_mixed_sequence_validates_and_leaves_the_input_alone(tmp_path):
    proposed = proposed_dictionary()
    before = proposed.copy(deep=True)
    before_lists = [list(v) for v in proposed["review"]]
    _, out, rejects, _ = run(tmp_path, [
        rec("accept", "Holmes", 1),
        rec("change_span", "Watson", 2, new_anchor="Dr. Watson", kind="person"),
        rec("reject", "Toby", 3),
        rec("add", "Mycroft", 4, kind="person", translations=["Max"]),
        rec("change_translation", "Baker Street", 5, translations=["Elm Road", "Ash Walk"]),
    ], frame=proposed)
    pd.testing.assert_frame_equal(proposed, before)
    assert [list(v) for v in proposed["review"]] == before_lists == [[], [], [], []]
    assert list(out["status"]) == ["accepted", "changed", "changed", "added"]
    validate_frame(pd.DataFrame(rejects), rejects_contract(DICTIONARY))


# --- corrections that do not fit the dictionary -----------------------------------------------


def test_every_misfit_is_reported_and_nothing_is_applied(tmp_path):
    proposed = proposed_dictionary()
    before = proposed.copy(deep=True)
    path = write(tmp_path, [
        rec("accept", "Holmes", 1),                                         # 1 fine
        rec("reject", "Moriarty", 2),                                       # 2 unknown
        rec("add", "Watson", 3, kind="person"),                             # 3 exists
        rec("change_span", "Toby", 4, new_anchor="Holmes"),                 # 4 onto an existing key
        rec("change_span", "Watson", 5, new_anchor="Dr. Watson"),           # 5 fine
        rec("change_kind", "Watson", 6, kind="other"),                      # 6 renamed before
        rec("reject", "Toby", 7),                                           # 7 fine
        rec("accept", "Toby", 8),                                           # 8 rejected before
    ])
    proposer = FakeProposer()
    with pytest.raises(CorrectionsError) as caught:
        apply_corrections(proposed, load_corrections(path), propose=proposer)
    message = str(caught.value)
    assert message.splitlines()[0].startswith("5 correction(s) do not fit the proposed dictionary; nothing was applied")
    rows = message.splitlines()[1:]
    assert [row.split(": ")[0] for row in rows] == [f"  - {path}:{n}" for n in (2, 3, 4, 6, 8)]
    assert "'Moriarty': not a key of the dictionary" in rows[0]
    assert "already a key of the dictionary (status proposed)" in rows[1]
    assert "new_anchor 'Holmes' is already a key" in rows[2]
    assert "variant of 'Dr. Watson'" in rows[3]
    assert "rejected by" not in rows[3]
    assert f"it was rejected by {ANN} ({path}:7)" in rows[4]
    pd.testing.assert_frame_equal(proposed, before)
    assert proposer.calls == []


def test_unknown_anchor_names_the_entry_holding_that_variant(tmp_path):
    path = write(tmp_path, [rec("reject", "Mr. Holmes", 1)])
    with pytest.raises(CorrectionsError, match=r"'Mr\. Holmes': not a key .*exactly.*it is a variant of 'Holmes'"):
        apply_corrections(proposed_dictionary(), load_corrections(path), propose=FakeProposer())


def test_unknown_anchor_hints_at_a_key_differing_in_case(tmp_path):
    path = write(tmp_path, [rec("accept", "baker street", 3)])
    with pytest.raises(CorrectionsError) as caught:
        apply_corrections(proposed_dictionary(), load_corrections(path), propose=FakeProposer())
    assert "did you mean 'Baker Street'?" in str(caught.value)


def test_unusable_proposer_output_is_an_error(tmp_path):
    path = write(tmp_path, [rec("add", "Mycroft", 1, kind="person"), rec("add", "Irene", 2, kind="person")])
    proposed = proposed_dictionary()
    short = lambda pairs: {"Mycroft": (["Max"], "bad")}
    with pytest.raises(CorrectionsError) as caught:
        apply_corrections(proposed, load_corrections(path), propose=short)
    message = str(caught.value)
    assert "'Mycroft': 1 translations, the dictionary has 2 per anchor" in message
    assert "'Irene': no (translations, proposer) pair returned" in message


def test_wrong_columns_are_a_caller_error():
    with pytest.raises(ValueError, match="missing \\['review'\\]"):
        apply_corrections(proposed_dictionary().drop(columns="review"), [], propose=FakeProposer())


def test_empty_dictionary_takes_n_from_per_anchor(tmp_path):
    empty = proposed_dictionary().iloc[0:0]
    _, out, _, _ = run(tmp_path, [rec("add", "Mycroft", 1, kind="person", translations=["Max"])], frame=empty, per_anchor=3)
    assert entry(out, "Mycroft")["translations"] == ["Max", "Max", "Max"]
    assert entry(out, "Mycroft")["rank"] == 1
