"""pipeline/review/sync.py without a server: pull's writes and refusals against a stand-in client."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pipeline.review.projects import PROJECTS, ReviewError
from pipeline.review.records import load_corrections
from pipeline.review.sync import merge_corrections, pull, push
from pipeline.review.tasks import write_tasks
from tests.review.conftest import (
    KEY, REPO, StandInStudio, annotation, edit, export, labels_state, proposed_result, span, tracked,
)


def test_projects_without_data_say_which_stage_to_run(tmp_path):
    for name in PROJECTS:
        (tmp_path / "labels" / name).mkdir(parents=True)
        (tmp_path / "labels" / name / "config.xml").write_bytes((REPO / "labels" / name / "config.xml").read_bytes())
    with pytest.raises(ReviewError, match="no data yet: run the generic_labels stage"):
        push("linguistic", tmp_path, client=None)
    with pytest.raises(ReviewError, match="no data yet: run the evaluate stage"):
        push("evaluation", tmp_path, client=None)


def test_merge_keeps_hand_written_records_and_earlier_sources():
    hand = {"action": "reject", "anchor": "Toby", "reviewer": "lead", "created_at": "2026-11-01T00:00:00Z"}
    earlier = {"action": "accept", "anchor": "Holmes", "reviewer": "ann", "created_at": "2026-11-02T00:00:00Z",
               "task": KEY, "source": "20261102T000000Z.json"}
    dropped = dict(earlier, anchor="Watson")
    pulled = [dict(earlier, source="20261127T120000Z.json"), dict(earlier, anchor="Baker Street",
                                                                  source="20261127T120000Z.json")]
    merged = merge_corrections([hand, earlier, dropped], pulled)
    assert merged == [hand, earlier, dict(earlier, anchor="Baker Street", source="20261127T120000Z.json")]


def test_pull_writes_a_snapshot_and_corrections_that_load(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    hand = '{"action": "accept", "anchor": "Holmes", "reviewer": "lead", "created_at": "2026-11-01T00:00:00Z"}\n'
    (folder / "corrections.jsonl").write_text(hand)
    result = edit(proposed_result(), "Toby", label="not an anchor")
    exported = export(annotation(81, 9, result), annotation(82, "bob", [], cancelled=True))
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    summary = pull("anchors", tmp_path, StandInStudio(exported), now=now)
    assert summary["snapshot"] == "labels/anchors/snapshots/20261127T120000Z.json"
    assert summary["cancelled"] == 1 and summary["decisions"] == {"accept": 3, "reject": 1}
    assert json.loads((tmp_path / summary["snapshot"]).read_text()) == exported
    corrections = load_corrections(folder / "corrections.jsonl")
    assert [c.reviewer for c in corrections] == ["lead"] + ["dan@example.org"] * 4
    assert {c.source for c in corrections[1:]} == {"20261127T120000Z.json"}
    assert (folder / "corrections.jsonl").read_text().startswith(hand)
    # A second pull of the same export: a new snapshot, the same corrections file.
    before = (folder / "corrections.jsonl").read_bytes()
    second = pull("anchors", tmp_path, StandInStudio(exported), now=now)
    assert second["snapshot"] == "labels/anchors/snapshots/20261127T120000Z-2.json"
    assert (folder / "corrections.jsonl").read_bytes() == before


def test_a_failed_pull_leaves_labels_untouched(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    (folder / "corrections.jsonl").write_text("")
    before = labels_state(tmp_path)
    bad = span("Mycroft", "person")
    bad["value"]["start"] += 1
    exported = export(annotation(91, "ann", proposed_result()), annotation(92, "bob", proposed_result() + [bad]))
    with pytest.raises(ReviewError) as caught:
        pull("anchors", tmp_path, StandInStudio(exported))
    message = str(caught.value)
    assert "nothing was written" in message and f"task {KEY} annotation 92: result #10: span text" in message
    assert labels_state(tmp_path) == before
    assert not (folder / "snapshots").exists()


def test_pull_refuses_a_server_that_lost_earlier_decisions(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    pulled = {"action": "accept", "anchor": "Holmes", "reviewer": "ann", "created_at": "2026-11-02T00:00:00Z",
              "task": "forget:gone.txt#1", "source": "20261102T000000Z.json"}
    (folder / "corrections.jsonl").write_text(json.dumps(pulled) + "\n")
    before = labels_state(tmp_path)
    with pytest.raises(ReviewError, match=r"1 record\(s\) of labels/anchors/corrections.jsonl would vanish.*\n"
                                          r"  - task forget:gone.txt#1: action accept 'Holmes' by ann .*: its task is "
                                          r"not on the server"):
        pull("anchors", tmp_path, StandInStudio(export(annotation(98, "ann", proposed_result()))))
    assert labels_state(tmp_path) == before


def test_pull_compares_records_with_the_reviewers_work_on_the_server(tmp_path):
    """A task still on the server whose annotations are gone (a reset) loses nothing without
    --force; a changed annotation by the same reviewer replaces its records (review work)."""
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    pull("anchors", tmp_path, StandInStudio(export(annotation(81, "ann", proposed_result()))), now=now)
    first = (folder / "corrections.jsonl").read_bytes()
    assert first.count(b"\n") == 4

    before = labels_state(tmp_path)
    with pytest.raises(ReviewError) as caught:
        pull("anchors", tmp_path, StandInStudio(export()), now=now)  # the task is back, its annotation is not
    message = str(caught.value)
    assert "4 record(s) of labels/anchors/corrections.jsonl would vanish" in message
    assert f"  - task {KEY}: action accept 'Baker Street' by ann@example.org at 2026-11-27T10:00:00Z (pulled in " \
           "20261127T120000Z.json): no annotation of the task by ann@example.org on the server" in message
    assert "whp review pull anchors --force" in message
    assert labels_state(tmp_path) == before

    # Another reviewer's work alone does not cover ann's: still refused.
    with pytest.raises(ReviewError, match="by ann@example.org on the server"):
        pull("anchors", tmp_path, StandInStudio(export(annotation(82, "bob", proposed_result()))), now=now)
    # ann changed her mind (a later annotation): Toby's record changes, nothing is refused.
    changed = annotation(83, "ann", edit(proposed_result(), "Toby", label="not an anchor"),
                         created="2026-11-27T11:00:00Z")
    summary = pull("anchors", tmp_path, StandInStudio(export(changed)), now=now)
    assert summary["decisions"] == {"accept": 3, "reject": 1}
    # --force lets the records of a reset server go.
    pull("anchors", tmp_path, StandInStudio(export()), now=now, force=True)
    assert (folder / "corrections.jsonl").read_text() == ""


def test_an_export_nested_too_deep_is_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    before = labels_state(tmp_path)
    hostile = b'[{"id": 1, "data": {"key": "k"}, "annotations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"
    with pytest.raises(ReviewError, match=r"malformed export: the export of 'whp-anchors': nested deeper than 100"):
        pull("anchors", tmp_path, StandInStudio(hostile))
    assert labels_state(tmp_path) == before
