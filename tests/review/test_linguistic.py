"""pipeline/review/linguistic.py: linguistic tasks and the normalisation of their verdicts."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest
from label_studio_sdk.label_interface import LabelInterface

from pipeline.review.linguistic import fix_text, linguistic_tasks, normalise_linguistic_export
from pipeline.review.projects import ReviewError
from pipeline.review.records import LinguisticDecision
from pipeline.review.sync import pull
from pipeline.review.tasks import task_record, write_tasks
from tests.review.conftest import REPO, StandInStudio, annotation, labels_state


# --- linguistic review ----------------------------------------------------------------------

WORDS = ["The", " cat", " sat", " on", " the", " old", " mat", " and", " a", " dog", " slept", ".", " ran"]
BLOCK_A, BLOCK_B = "forget:a.txt@0", "forget:b.txt@1"
CONFIDENCE_A = [0.9, 0.2, 0.3, 0.9, 0.1, 0.05, 0.4, 0.9, 0.9, 0.9, 0.45, 0.8]


def decode(ids: list[int]) -> str:
    return "".join(WORDS[i] for i in ids)


def linguistic_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Block A: 12 positions, identity alignment but position 5 dropped (its 0.05 is not
    reviewed); uncertain at 1, 2, 4, 6, 10. Block B: one uncertain position (0.01), the last."""
    mask_a = [1] * 12
    mask_a[5] = 0
    blocks = pd.DataFrame({
        "block_id": [BLOCK_A, BLOCK_B],
        "translated_ids": [list(range(12)), [0, 9, 12, 11]],
        "alignment": [[0, 1, 2, 3, 4, -1, 6, 7, 8, 9, 10, 11], [0, 1, 2, 3]],
        "loss_mask": [mask_a, [1, 1, 1, 1]],
    })
    labels = pd.DataFrame({
        "block_id": [BLOCK_B, BLOCK_A],
        "target": [[1, 2, 10, 0], [1, 2, 3, 4, 5, 6, 6, 8, 8, 10, 11, 0]],
        "confidence": [[0.9, 0.9, 0.9, 0.01], CONFIDENCE_A],
    })
    return blocks, labels


def the_linguistic_tasks(**overrides) -> list[dict]:
    blocks, labels = linguistic_frames()
    options = dict(decode=decode, alpha=5.0, threshold=0.5, gap=2, span=4, context_tokens=8, max_tasks=10)
    options.update(overrides)
    return linguistic_tasks(blocks, labels, **options)


def test_linguistic_tasks_select_uncertain_trained_positions_group_and_cap():
    tasks = the_linguistic_tasks()
    # Ordered by the least confident position; position 5 (0.05) is not trained on.
    assert [(t["data"]["key"], t["data"]["positions"]) for t in tasks] == [
        (f"{BLOCK_B}:3", [3]), (f"{BLOCK_A}:1", [1, 2, 4]), (f"{BLOCK_A}:6", [6]), (f"{BLOCK_A}:10", [10])]
    assert [t["data"]["key"] for t in the_linguistic_tasks(max_tasks=2)] == [f"{BLOCK_B}:3", f"{BLOCK_A}:1"]
    assert [t["data"]["positions"] for t in the_linguistic_tasks(span=12)][1] == [1, 2, 4, 6]
    assert [t["data"]["positions"] for t in the_linguistic_tasks(gap=1)][1:3] == [[4], [1, 2]]
    assert [t["data"]["key"] for t in the_linguistic_tasks(threshold=0.15)] == [f"{BLOCK_B}:3", f"{BLOCK_A}:4"]
    blocks, labels = linguistic_frames()
    shuffled = linguistic_tasks(blocks.iloc[::-1], labels.iloc[::-1], decode=decode, alpha=5.0, threshold=0.5, gap=2,
                                span=4, context_tokens=8, max_tasks=10)
    assert json.dumps(shuffled, sort_keys=True) == json.dumps(the_linguistic_tasks(), sort_keys=True)


def test_linguistic_task_shows_context_marked_continuation_and_the_actual_text():
    data = the_linguistic_tasks(context_tokens=2)[1]["data"]
    assert data["translated"] == "The cat"  # tokens 0-1: what the model read before target 1
    # Targets of positions 1..4 (5 is not trained), uncertain ones marked.
    assert data["continuation"] == "⟦ sat⟧⟦ on⟧ the⟦ old⟧"
    assert data["actual"] == " sat on the old"
    assert data["targets"] == [2, 3, 5] and data["confidence"] == [0.2, 0.3, 0.1] and data["alpha"] == 5.0
    assert data["uncertain"] == '1: " sat" p=0.200; 2: " on" p=0.300; 4: " old" p=0.100'
    late = the_linguistic_tasks(context_tokens=2)[3]["data"]
    assert (late["translated"], late["continuation"], late["actual"]) == ("… dog slept", "⟦.⟧", ".")
    last = the_linguistic_tasks()[0]["data"]  # the block's last position predicts past its end
    assert (last["translated"], last["continuation"], last["actual"]) == ("The dog ran.", "⟦The⟧", "(end of block)")


def test_a_fix_becomes_the_exact_text_after_the_context():
    assert fix_text("said", "Holmes") == " said"
    assert fix_text("  said ", "Holmes") == " said"
    assert fix_text(",", "Holmes") == ","
    assert fix_text("Yes", 'he cried, "') == "Yes"
    assert fix_text("Yes", "end.\n") == "Yes"
    assert fix_text("   ", "Holmes") is None and fix_text(None, "x") is None


def linguistic_tracked() -> dict:
    return {t["data"]["key"]: task_record(t) for t in the_linguistic_tasks()}


def verdict(choice: str, fix: str | None = None) -> list[dict]:
    result = [{"id": "v", "from_name": "verdict", "to_name": "continuation", "type": "choices",
               "value": {"choices": [choice]}}]
    if fix is not None:
        result.append({"id": "f", "from_name": "fix", "to_name": "continuation", "type": "textarea",
                       "value": {"text": [fix]}})
    return result


def linguistic_export(*items: tuple[str, list[dict]]) -> list[dict]:
    tasks = linguistic_tracked()
    return [{"id": n, "data": tasks[key]["data"], "annotations": annotations, "predictions": []}
            for n, (key, annotations) in enumerate(items)]


def test_linguistic_annotations_match_the_configuration():
    config = LabelInterface((REPO / "labels/linguistic/config.xml").read_text(encoding="utf-8"))
    assert config.validate_prediction({"result": verdict("incorrect", "mat")})


def test_linguistic_export_becomes_one_decision_per_task():
    exported = linguistic_export(
        (f"{BLOCK_A}:1", [annotation(1, "ann", verdict("incorrect", "mat"))]),
        (f"{BLOCK_A}:6", [annotation(2, "ann", verdict("correct", "ignored"), created="2026-11-27T11:00:00Z")]),
        (f"{BLOCK_B}:3", [annotation(3, "ann", verdict("unsure"))]),
        (f"{BLOCK_A}:10", []),
    )
    review = normalise_linguistic_export(exported, linguistic_tracked(), source="20261127T120000Z.json")
    assert review.problems == [] and review.summary()["decisions"] == {"incorrect": 1, "correct": 1, "unsure": 1}
    first = review.records[0]
    assert first == {"key": f"{BLOCK_A}:1", "block_id": BLOCK_A, "positions": [1, 2, 4], "alpha": 5.0,
                     "targets": [2, 3, 5], "verdict": "incorrect", "fix": " mat", "reviewer": "ann@example.org",
                     "created_at": "2026-11-27T10:00:00Z", "source": "20261127T120000Z.json"}
    assert all(LinguisticDecision.problems(r) == [] for r in review.records)
    assert "fix" not in review.records[2]  # a fix beside "correct" says nothing


def test_linguistic_export_problems_are_listed_together():
    tasks = linguistic_tracked()
    stranger = dict(tasks[f"{BLOCK_A}:6"]["data"], key=f"{BLOCK_A}:7")
    changed = dict(tasks[f"{BLOCK_A}:1"]["data"], continuation="something else")
    exported = [
        {"id": 1, "data": stranger, "annotations": [annotation(1, "ann", verdict("correct"))]},
        {"id": 2, "data": changed, "annotations": [annotation(2, "ann", verdict("correct"))]},
        {"id": 3, "data": tasks[f"{BLOCK_B}:3"]["data"], "annotations": [
            annotation(3, "ann", verdict("wrong")), annotation(4, "bob", []),
            annotation(5, "eve", [{"from_name": "mood", "type": "choices", "value": {"choices": ["correct"]}}])]},
    ]
    review = normalise_linguistic_export(exported, tasks, source="s.json")
    assert review.records == []
    problems = "\n".join(review.problems)
    assert len(review.problems) == 5
    assert f"task {BLOCK_A}:7: unknown task key" in problems
    assert f"task {BLOCK_A}:1: its data on the server differs from tasks.jsonl" in problems
    assert f"task {BLOCK_B}:3 annotation 3: result #0: unknown choice 'wrong' (expected one of: correct, " in problems
    assert f"task {BLOCK_B}:3 annotation 4: no verdict chosen" in problems
    assert "annotation 5: result #0: choices from an unknown control 'mood'" in problems


def test_linguistic_majority_fix_vote_and_conflicts():
    key = f"{BLOCK_A}:1"
    three = linguistic_export((key, [annotation(1, "ann", verdict("incorrect", "mat")),
                                     annotation(2, "bob", verdict("incorrect", " mat")),
                                     annotation(3, "eve", verdict("correct"))]))
    review = normalise_linguistic_export(three, linguistic_tracked(), source="s.json")
    [record] = review.records
    assert (record["verdict"], record["fix"]) == ("incorrect", " mat")
    assert record["reviewer"] == "ann@example.org, bob@example.org"
    assert record["note"] == "majority 2 of 3 reviewers"
    assert review.agreement["percent_agreement"] == pytest.approx(1 / 3)
    fixes = linguistic_export((key, [annotation(1, "ann", verdict("incorrect", "mat")),
                                     annotation(2, "bob", verdict("incorrect", "rug"))]))
    review = normalise_linguistic_export(fixes, linguistic_tracked(), source="s.json")
    assert "fix" not in review.records[0]  # the tie leaves the positions dropped, without a fix
    assert [c.as_dict()["aspect"] for c in review.conflicts] == ["fix"]
    tie = linguistic_export((key, [annotation(1, "ann", verdict("incorrect")),
                                   annotation(2, "bob", verdict("correct"))]))
    review = normalise_linguistic_export(tie, linguistic_tracked(), source="s.json")
    assert review.records == [] and review.conflicts[0].votes == {"correct": ["bob@example.org"],
                                                                  "incorrect": ["ann@example.org"]}


def test_linguistic_pull_writes_decisions_and_refuses_a_bad_export(tmp_path):
    folder = tmp_path / "labels" / "linguistic"
    write_tasks(folder / "tasks.jsonl", linguistic_tracked())
    hand = {"key": f"{BLOCK_A}:6", "block_id": BLOCK_A, "positions": [6], "verdict": "incorrect",
            "reviewer": "lead", "created_at": "2026-11-01T00:00:00Z"}
    (folder / "decisions.jsonl").write_text(json.dumps(hand) + "\n")
    exported = linguistic_export((f"{BLOCK_A}:1", [annotation(1, "ann", verdict("incorrect", "mat"))]))
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    summary = pull("linguistic", tmp_path, StandInStudio(exported, "whp-linguistic"), now=now)
    assert summary["decisions"] == {"incorrect": 1} and summary["records"] == 2
    lines = [json.loads(line) for line in (folder / "decisions.jsonl").read_text().splitlines()]
    assert lines[0] == hand and lines[1]["fix"] == " mat" and lines[1]["source"] == "20261127T120000Z.json"
    before = labels_state(tmp_path)
    bad = linguistic_export((f"{BLOCK_A}:1", [annotation(2, "bob", verdict("maybe"))]))
    refused = r"1 problem\(s\) in the export; nothing was written\n.*unknown choice 'maybe'"
    with pytest.raises(ReviewError, match=refused):
        pull("linguistic", tmp_path, StandInStudio(bad, "whp-linguistic"), now=now)
    assert labels_state(tmp_path) == before


def test_wrongly_typed_choice_results_are_problems():
    key = f"{BLOCK_A}:1"
    listed_id = [dict(verdict("correct")[0], id=["v"])]
    number = [dict(verdict("correct")[0], value={"choices": [1]})]
    fix = verdict("incorrect") + [{"id": "f", "from_name": "fix", "to_name": "continuation", "type": "textarea",
                                   "value": {"text": "mat"}}]
    exported = linguistic_export((key, [annotation(1, "ann", listed_id), annotation(2, "bob", number),
                                        annotation(3, "eve", fix)]))
    review = normalise_linguistic_export(exported, linguistic_tracked(), source="s.json")
    assert review.records == [] and review.problems == [
        f"task {key} annotation 1: result #0: malformed export: 'id' is array, expected a string or an integer",
        f"task {key} annotation 2: result #0: expected exactly one choice, got [1]",
        f"task {key} annotation 3: result #1: malformed export: text box value.text is not a list of strings",
    ]
