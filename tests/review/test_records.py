"""pipeline/review/records.py and validation.py: the reviewers' file formats and their reader."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import PipelineError
from pipeline.review.records import Correction, CorrectionsError, DecisionsError, load_corrections, load_decisions
from tests.review.conftest import BOB, correction as rec, minute as at, write_lines as write

BLOCK_A = "forget:a.txt@0"


# --- corrections_v1 ---------------------------------------------------------------------------


def test_missing_file_means_no_corrections(tmp_path):
    assert load_corrections(tmp_path / "labels" / "anchors" / "corrections.jsonl") == []


def test_load_reads_fields_file_and_line(tmp_path):
    record = rec("change_span", "Watson", 1, new_anchor="Dr. Watson", kind="person", translations=["Dr. Jones", "Dr. Green"],
                 task="forget:book.txt#3", note="title belongs to the name", source="export-2026-11-27.json")
    path = write(tmp_path, ["", record, "   ", rec("accept", "Toby", 2, note=None)])
    first, second = load_corrections(path)
    assert (first.file, first.line, second.line) == (str(path), 2, 4)
    assert first.translations == ("Dr. Jones", "Dr. Green")
    assert (first.new_anchor, first.kind, first.task, first.source) == ("Dr. Watson", "person", "forget:book.txt#3", "export-2026-11-27.json")
    assert second.note is None and second.translations is None
    assert json.loads(first.to_json()) == record  # the exporter can write records with to_json()
    assert first.timestamp.utcoffset().total_seconds() == 0


def test_error_type_is_a_pipeline_error():
    assert issubclass(CorrectionsError, PipelineError)


def test_every_malformed_record_is_reported_at_once(tmp_path):
    lines = [
        rec("accept", "Holmes", 1),                                             # 1 valid
        '{"action": "accept", "anchor": ',                                      # 2 invalid JSON
        "[1, 2]",                                                               # 3 not an object
        rec("merge", "Holmes", 2),                                              # 4 unknown action
        {"action": "accept", "anchor": "Holmes", "created_at": at(3)},          # 5 missing reviewer
        rec("accept", "", 4),                                                   # 6 empty anchor
        {**rec("accept", "Holmes", 5), "created_at": "2026-11-27 10:05"},       # 7 no timezone
        {**rec("accept", "Holmes", 5), "created_at": "yesterday"},              # 8 not ISO 8601
        rec("add", "Lestrade", 6, kind="spell"),                                # 9 unknown kind
        rec("change_translation", "Toby", 7, translations=["Rex", ""]),         # 10 empty translation
        rec("change_translation", "Toby", 8, translations="Rex"),               # 11 not a list
        {**rec("accept", "Holmes", 9), "reviwer": BOB},                         # 12 unknown key
        rec("reject", "Toby", 10, translations=["A", "B"]),                     # 13 field not for action
        rec("change_span", "Toby", 11),                                         # 14 missing new_anchor
        '{"action": "accept", "anchor": "Toby", "anchor": "Rex", "reviewer": "a", "created_at": "2026-11-27T10:00:00Z"}',  # 15
        b"\xff\xfe".decode("latin-1"),                                          # 16 written as UTF-8: still not JSON
    ]
    path = write(tmp_path, lines)
    with pytest.raises(CorrectionsError) as caught:
        load_corrections(path)
    message = str(caught.value)
    expected = {
        2: "invalid JSON",
        3: "expected a JSON object, got array",
        4: "unknown action 'merge'",
        5: "missing required field 'reviewer'",
        6: "field 'anchor' is empty",
        7: "has no timezone",
        8: "not an ISO 8601 time",
        9: "unknown kind 'spell'",
        10: "translations[1] is empty",
        11: "must be a list of strings, got string",
        12: "unknown field 'reviwer'",
        13: "field 'translations' is not used by action 'reject'",
        14: "missing required field 'new_anchor' for action 'change_span'",
        15: "duplicate field 'anchor'",
        16: "invalid JSON",
    }
    for line, problem in expected.items():
        assert any(row.startswith(f"  - {path}:{line}: ") and problem in row for row in message.splitlines()), (line, message)
    assert f"{path}:1:" not in message
    assert message.splitlines()[0].startswith(f"{path}: 15 problem(s) on 15 line(s)")


def test_invalid_utf8_line_is_reported_with_its_line(tmp_path):
    path = tmp_path / "corrections.jsonl"
    path.write_bytes(json.dumps(rec("accept", "Toby", 1)).encode() + b"\n" + b'{"anchor": "\xff"}\n')
    with pytest.raises(CorrectionsError, match=r"corrections\.jsonl:2: not valid UTF-8"):
        load_corrections(path)


def test_constructing_an_invalid_correction_fails():
    with pytest.raises(CorrectionsError, match=r"x\.jsonl:3: .*unknown kind 'spell'"):
        Correction.located(rec("change_kind", "Toby", 1, kind="spell"), file="x.jsonl", line=3)


# --- linguistic_decisions_v1 ------------------------------------------------------------------


def test_the_decisions_file_is_validated_line_by_line(tmp_path):
    path = tmp_path / "decisions.jsonl"
    good = {"key": f"{BLOCK_A}:1", "block_id": BLOCK_A, "positions": [1, 2], "verdict": "incorrect", "fix": " mat",
            "reviewer": "ann", "created_at": "2026-11-27T10:00:00Z"}
    rows = [good, dict(good, verdict="wrong"), dict(good, positions=[2, 1]), dict(good, key="x:1"),
            dict(good, verdict="correct"), dict(good, created_at="2026-11-27"), dict(good, colour="red"),
            dict(good, targets=[1])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with pytest.raises(DecisionsError) as caught:
        load_decisions(path)
    message = str(caught.value)
    for line, problem in [(2, "unknown verdict 'wrong'"), (3, "strictly ascending"),
                          (4, "expected 'forget:a.txt@0:1'"), (5, "only used with verdict 'incorrect'"),
                          (6, "has no timezone"), (7, "unknown field 'colour'"),
                          (8, "'targets' has 1 ids for 2 positions"), (9, "invalid JSON")]:
        assert any(f"{path}:{line}: " in row and problem in row for row in message.splitlines()), problem
    assert f"{path}:1:" not in message
    path.write_text(json.dumps(good) + "\n")
    assert [d.key for d in load_decisions(path)] == [good["key"]]


def test_a_line_nested_too_deep_is_an_error_naming_file_and_line(tmp_path):
    deep = '{"action": "accept", "anchor": "Holmes", "note": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write(tmp_path, [rec("accept", "Holmes", 1), deep])
    with pytest.raises(CorrectionsError) as caught:
        load_corrections(path)
    assert f"  - {path}:2: nested deeper than 100 levels of arrays and objects" in str(caught.value)
    path = write(tmp_path, [deep], name="decisions.jsonl")
    with pytest.raises(DecisionsError, match=rf"{path}:1: nested deeper than 100 levels"):
        load_decisions(path)
