"""Review logic without a server: task building, export validation, normalisation, majority,
agreement, and pull's all-or-nothing writes (against a stand-in client)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from label_studio_sdk.label_interface import LabelInterface

from pipeline.review.corrections import load_corrections, record_problems
from pipeline.review.linguistic import DecisionsError, fix_text, linguistic_tasks, load_decisions
from pipeline.review.linguistic import decision_problems as linguistic_decision_problems
from pipeline.review.sync import (
    ANCHOR_LABELS, PROJECTS, ReviewError, anchor_tasks, cohen_kappa, majority, merge_corrections,
    normalise_anchor_export, pull, push, read_tasks, review_project, task_record, write_tasks,
)
from pipeline.review.verdicts import (
    evaluation_tasks, familiarity, grade_problems, normalise_evaluation_export, normalise_linguistic_export,
)

REPO = Path(__file__).resolve().parents[2]
TEXT = "Sherlock Holmes met Watson and Mycroft in Baker Street. Holmes smiled at Toby."
KEY = "forget:canon.txt#3"
VERSION = "0123456789ab"
DICTIONARY = pd.DataFrame({
    "anchor": ["Holmes", "Watson", "Baker Street", "Toby"],
    "kind": ["person", "person", "place", "other"],
    "translations": [["Jon", "Tom"], ["Ann", "Bo"], ["Mill Lane", "Oak Row"], ["Rex", "Max"]],
})


def passages(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["passage_id", "corpus", "text"])


def the_task() -> dict:
    [task] = anchor_tasks(passages((KEY, "forget", TEXT)), DICTIONARY, max_tasks=10, dictionary_version=VERSION)
    return task


def tracked() -> dict:
    task = the_task()
    return {KEY: task_record(task)}


def at(term: str, nth: int = 0) -> tuple[int, int]:
    start = -1
    for _ in range(nth + 1):
        start = TEXT.index(term, start + 1)
    return start, start + len(term)


def span(term: str, label: str, *, nth: int = 0, rid: str | None = None) -> dict:
    start, end = at(term, nth)
    return {"id": rid or f"r{start}", "from_name": "kind", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": term, "labels": [label]}}


def box(region: dict, text: str) -> dict:
    value = region["value"]
    return {"id": region["id"], "from_name": "translation", "to_name": "text", "type": "textarea",
            "value": {"start": value["start"], "end": value["end"], "text": [text]}}


def proposed_result() -> list[dict]:
    """What a reviewer who changes nothing submits: the pre-annotation itself."""
    return copy.deepcopy(the_task()["predictions"][0]["result"])


def edit(result: list[dict], term: str, *, label: str | None = None, translation: str | None = None,
         nth: int = 0, drop: bool = False) -> list[dict]:
    """The result with the pre-annotated region of ``term`` relabelled, retranslated or dropped."""
    start, _ = at(term, nth)
    rid = next(r["id"] for r in result if r["type"] == "labels" and r["value"]["start"] == start)
    out = []
    for item in result:
        if item["id"] == rid:
            if drop:
                continue
            item = copy.deepcopy(item)
            if item["type"] == "labels" and label:
                item["value"]["labels"] = [label]
            if item["type"] == "textarea" and translation is not None:
                item["value"]["text"] = [translation]
        out.append(item)
    return out


def annotation(aid: int, reviewer, result: list[dict], *, created: str = "2026-11-27T10:00:00Z",
               cancelled: bool = False) -> dict:
    completed_by = {"id": reviewer, "email": f"{reviewer}@example.org"} if isinstance(reviewer, str) else reviewer
    return {"id": aid, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
            "created_at": created, "updated_at": created, "task": 1, "project": 1}


def export(*annotations: dict, key: str = KEY, data: dict | None = None) -> list[dict]:
    return [{"id": 1, "data": data or the_task()["data"], "annotations": list(annotations), "predictions": [7],
             "drafts": [], "created_at": "2026-11-27T09:00:00Z"}]


def normalise(exported, **kwargs):
    return normalise_anchor_export(exported, kwargs.pop("tasks", tracked()), source="20261127T120000Z.json", **kwargs)


def decisions(review) -> set[tuple]:
    return {(r["action"], r["anchor"], r.get("new_anchor"), r.get("kind"), tuple(r.get("translations") or ()))
            for r in review.records}


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


def test_configs_parse_and_accept_the_pre_annotations():
    anchors = LabelInterface((REPO / "labels/anchors/config.xml").read_text(encoding="utf-8"))
    assert tuple(anchors.get_control("kind").labels) == ANCHOR_LABELS
    assert anchors.get_control("translation").attr["perRegion"] == "true"
    assert anchors.validate_prediction(the_task()["predictions"][0])
    linguistic = LabelInterface((REPO / "labels/linguistic/config.xml").read_text(encoding="utf-8"))
    assert linguistic.get_control("verdict").labels == ["correct", "incorrect", "unsure"]
    assert {o.name for o in linguistic.objects} == {"translated", "continuation", "actual", "uncertain"}
    assert linguistic.get_control("fix").tag == "TextArea"
    evaluation = LabelInterface((REPO / "labels/evaluation/config.xml").read_text(encoding="utf-8"))
    assert evaluation.get_control("grade").labels == ["0", "1", "2", "3"]
    assert set(PROJECTS) == {"anchors", "linguistic", "evaluation"}


def test_projects_without_data_say_which_stage_to_run(tmp_path):
    for name in PROJECTS:
        (tmp_path / "labels" / name).mkdir(parents=True)
        (tmp_path / "labels" / name / "config.xml").write_bytes((REPO / "labels" / name / "config.xml").read_bytes())
    with pytest.raises(ReviewError, match="no data yet: run the generic_labels stage"):
        push("linguistic", tmp_path, client=None)
    with pytest.raises(ReviewError, match="no data yet: run the evaluate stage"):
        push("evaluation", tmp_path, client=None)
    with pytest.raises(ReviewError, match="unknown review project 'names'.*anchors"):
        review_project("names")


# --- normalisation ------------------------------------------------------------------------


def test_untouched_pre_annotation_accepts_every_anchor():
    review = normalise(export(annotation(11, "ann", proposed_result())))
    assert review.problems == []
    assert decisions(review) == {("accept", a, None, None, ()) for a in ("Holmes", "Watson", "Baker Street", "Toby")}
    record = review.records[0]
    assert record["reviewer"] == "ann@example.org" and record["created_at"] == "2026-11-27T10:00:00Z"
    assert record["task"] == KEY and record["source"] == "20261127T120000Z.json" and "note" not in record
    assert all(record_problems(r) == [] for r in review.records)


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
    assert all(record_problems(r) == [] for r in review.records)


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


# --- validation ---------------------------------------------------------------------------


def test_span_text_not_matching_the_offsets_is_a_problem_naming_task_and_annotation():
    bad = span("Mycroft", "person")
    bad["value"]["text"] = "Mycroff"
    review = normalise(export(annotation(21, "ann", proposed_result() + [bad])))
    assert len(review.problems) == 1
    assert f"task {KEY} annotation 21" in review.problems[0]
    assert "span text 'Mycroff' differs from the passage" in review.problems[0]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r[0]["value"].update(labels=["villain"]), "unknown label 'villain'"),
    (lambda r: r[0]["value"].update(end=999), "outside the passage"),
    (lambda r: r[0]["value"].update(start="0"), "offsets are not integers"),
    (lambda r: r[0].update(type="choices"), "unknown result type 'choices'"),
    (lambda r: r[0].pop("value"), "without a 'value' object"),
    (lambda r: r[1]["value"].update(text="Jon"), "text box value.text is not a list"),
])
def test_malformed_results_are_problems(mutate, message):
    result = proposed_result()
    mutate(result)
    review = normalise(export(annotation(22, "ann", result)))
    assert len(review.problems) == 1 and f"task {KEY} annotation 22" in review.problems[0]
    assert message in review.problems[0]


def test_unknown_task_key_changed_data_and_malformed_exports():
    data = dict(the_task()["data"], key="forget:other.txt#1", passage_id="forget:other.txt#1")
    review = normalise(export(annotation(23, "ann", []), data=data))
    assert review.problems == ["task forget:other.txt#1: unknown task key: not in tasks.jsonl (pushed from another "
                               "checkout? push from this one, or restore its tasks.jsonl)"]
    changed = dict(the_task()["data"], text=TEXT + " More.")
    assert "differs from tasks.jsonl" in normalise(export(annotation(23, "ann", []), data=changed)).problems[0]
    assert "expected a JSON list" in normalise({"tasks": []}).problems[0]
    assert "no data.key" in normalise([{"id": 3, "data": {"text": "x"}}]).problems[0]
    twice = export(annotation(24, "ann", [])) * 2
    assert "the key is on two tasks" in normalise(twice).problems[0]
    no_time = annotation(25, "ann", [])
    no_time["created_at"] = "2026-11-27T10:00:00"
    assert "timezone" in normalise(export(no_time)).problems[0]
    no_result = annotation(26, "ann", [])
    no_result["result"] = None
    assert "'result' is not a list" in normalise(export(no_result)).problems[0]


def test_cancelled_annotations_are_skipped_and_counted():
    skipped = annotation(31, "bob", [], cancelled=True)
    review = normalise(export(annotation(30, "ann", proposed_result()), skipped))
    assert review.problems == [] and review.cancelled == 1 and review.annotations == 1
    assert review.reviewers == ["ann@example.org"]
    assert {r["reviewer"] for r in review.records} == {"ann@example.org"}


def test_reviewers_without_email_are_named_by_id_or_from_the_user_list():
    review = normalise(export(annotation(32, 7, proposed_result())))
    assert {r["reviewer"] for r in review.records} == {"7"}
    review = normalise(export(annotation(32, 7, proposed_result())), users={7: "eve@example.org"})
    assert {r["reviewer"] for r in review.records} == {"eve@example.org"}


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


# --- files and pull -----------------------------------------------------------------------


def test_merge_keeps_hand_written_records_and_earlier_sources():
    hand = {"action": "reject", "anchor": "Toby", "reviewer": "lead", "created_at": "2026-11-01T00:00:00Z"}
    earlier = {"action": "accept", "anchor": "Holmes", "reviewer": "ann", "created_at": "2026-11-02T00:00:00Z",
               "task": KEY, "source": "20261102T000000Z.json"}
    dropped = dict(earlier, anchor="Watson")
    pulled = [dict(earlier, source="20261127T120000Z.json"), dict(earlier, anchor="Baker Street",
                                                                  source="20261127T120000Z.json")]
    merged = merge_corrections([hand, earlier, dropped], pulled)
    assert merged == [hand, earlier, dict(earlier, anchor="Baker Street", source="20261127T120000Z.json")]


def test_tasks_file_round_trip_and_corruption(tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, tracked())
    assert read_tasks(path) == tracked()
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ReviewError, match=r"tasks.jsonl:2: not a task record"):
        read_tasks(path)


class StandInStudio:
    """Just enough of ``label_studio_sdk.LabelStudio`` for pull: one project and its export."""

    def __init__(self, exported: list[dict], title: str = "whp-anchors"):
        raw = json.dumps(exported).encode()
        self.projects = SimpleNamespace(
            list=lambda title=None: [SimpleNamespace(id=5, title=title)],
            exports=SimpleNamespace(download_sync=lambda id, **_: iter([raw[:10], raw[10:]])),
        )
        self.users = SimpleNamespace(list=lambda: [SimpleNamespace(id=9, email="dan@example.org")])


def labels_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*")) if p.is_file()}


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


def test_an_annotation_is_compared_with_the_pre_annotation_its_reviewer_saw():
    old = tracked()[KEY]
    new_dictionary = DICTIONARY.assign(translations=[["Jim", "Ted"], ["Ann", "Bo"], ["Mill Lane", "Oak Row"],
                                                     ["Rex", "Max"]])
    [task] = anchor_tasks(passages((KEY, "forget", TEXT)), new_dictionary, max_tasks=1, dictionary_version="fedcba987654")
    current = task_record(task)
    current["earlier"] = [{k: v for k, v in old.items() if k != "key"}]
    seen = annotation(95, "ann", proposed_result())  # the old pre-annotation, as it was
    seen["prediction"] = {"model_version": VERSION, "result": []}
    review = normalise(export(seen, data=current["data"]), tasks={KEY: current})
    assert review.problems == [] and {r["action"] for r in review.records} == {"accept"}
    # Compared with the new version instead, the old translations would read as an edit.
    del seen["prediction"]
    review = normalise(export(seen, data=current["data"]), tasks={KEY: current})
    assert ("change_translation", "Holmes", None, None, ("Jon", "Tom")) in decisions(review)
    seen["prediction"] = {"model_version": "000000000000"}
    review = normalise(export(seen, data=current["data"]), tasks={KEY: current})
    assert "made on pre-annotation version '000000000000', which tasks.jsonl no longer holds" in review.problems[0]


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


def test_pull_refuses_a_server_that_lost_earlier_decisions(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    pulled = {"action": "accept", "anchor": "Holmes", "reviewer": "ann", "created_at": "2026-11-02T00:00:00Z",
              "task": "forget:gone.txt#1", "source": "20261102T000000Z.json"}
    (folder / "corrections.jsonl").write_text(json.dumps(pulled) + "\n")
    before = labels_state(tmp_path)
    with pytest.raises(ReviewError, match=r"pulled decisions on 1 task\(s\) that are not on .*forget:gone.txt#1"):
        pull("anchors", tmp_path, StandInStudio(export(annotation(98, "ann", proposed_result()))))
    assert labels_state(tmp_path) == before


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
    assert all(linguistic_decision_problems(r) == [] for r in review.records)
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


# --- evaluation review ----------------------------------------------------------------------


def completions() -> pd.DataFrame:
    rows = []
    for model in ("unlearned", "baseline", "reinforced"):
        for probe, grade in (("p2", 3), ("p1", 0), ("p3", 2)):
            rows.append({"model": model, "probe_id": probe, "prompt": f"Prompt {probe}",
                         "completion": f"{model} says {probe}", "grade": grade,
                         "matched_terms": ["Holmes"] if grade else []})
    return pd.DataFrame(rows)


def test_evaluation_tasks_pair_the_models_on_the_same_probes():
    tasks = evaluation_tasks(completions(), max_tasks=10)
    assert [t["data"]["key"] for t in tasks] == ["baseline:p1", "unlearned:p1", "baseline:p2", "unlearned:p2",
                                                 "baseline:p3", "unlearned:p3"]
    assert tasks[2]["data"] == {"key": "baseline:p2", "model": "baseline", "probe_id": "p2", "prompt": "Prompt p2",
                                "completion": "baseline says p2", "auto_grade": 3, "matched_terms": "Holmes"}
    assert tasks[0]["data"]["matched_terms"] == "none"
    assert [t["data"]["key"] for t in evaluation_tasks(completions(), max_tasks=5)] == [
        "baseline:p1", "unlearned:p1", "baseline:p2", "unlearned:p2"]


def grade(choice: str) -> list[dict]:
    return [{"id": "g", "from_name": "grade", "to_name": "completion", "type": "choices",
             "value": {"choices": [choice]}}]


def test_evaluation_grades_familiarity_and_agreement():
    tasks = {t["data"]["key"]: task_record(t) for t in evaluation_tasks(completions(), max_tasks=10)}
    config = LabelInterface((REPO / "labels/evaluation/config.xml").read_text(encoding="utf-8"))
    assert config.validate_prediction({"result": grade("2")})
    given = {"unlearned:p1": "0", "unlearned:p2": "2", "unlearned:p3": "0", "baseline:p1": "0", "baseline:p2": "3",
             "baseline:p3": "3"}
    exported = [{"id": n, "data": tasks[key]["data"], "annotations": [annotation(n, "ann", grade(value))]}
                for n, (key, value) in enumerate(given.items())]
    unknown = copy.deepcopy(exported)
    unknown[0]["annotations"].append(annotation(9, "bob", grade("4")))
    review = normalise_evaluation_export(unknown, tasks, source="s.json")
    assert review.problems == ["task unlearned:p1 annotation 9: result #0: unknown choice '4' (expected one of: "
                               "0, 1, 2, 3)"]
    review = normalise_evaluation_export(exported, tasks, source="s.json")
    assert review.problems == [] and all(grade_problems(r) == [] for r in review.records)
    record = next(r for r in review.records if r["key"] == "unlearned:p2")
    assert {k: record[k] for k in ("model", "probe_id", "auto_grade", "grade")} == {
        "model": "unlearned", "probe_id": "p2", "auto_grade": 3, "grade": 2}
    report = familiarity(review.records)
    assert report["baseline"]["human"] == pytest.approx((5 * 2 + 0) / 3)
    assert report["baseline"]["auto"] == pytest.approx((5 * 1 + 1) / 3)
    assert report["unlearned"]["human"] == pytest.approx(1 / 3)
    assert report["unlearned"]["agreement"] == pytest.approx(1 / 3)
    assert report["baseline"]["agreement"] == pytest.approx(2 / 3)
    # A later hand-written record overrides a pulled one.
    override = dict(record, grade=0, reviewer="lead", created_at="2026-12-01T00:00:00Z", source=None)
    assert familiarity([*review.records, override])["unlearned"]["human"] == 0
    wrong = dict(record, grade=5, key="x")
    assert {p.split(" ")[1] for p in grade_problems(wrong)} >= {"'grade'", "'key'"}


def test_evaluation_pull_reports_familiarity(tmp_path):
    tasks = {t["data"]["key"]: task_record(t) for t in evaluation_tasks(completions(), max_tasks=2)}
    write_tasks(tmp_path / "labels" / "evaluation" / "tasks.jsonl", tasks)
    exported = [{"id": 1, "data": tasks["unlearned:p1"]["data"], "annotations": [annotation(1, "ann", grade("3"))]}]
    summary = pull("evaluation", tmp_path, StandInStudio(exported, "whp-evaluation"))
    assert summary["decisions"] == {"3": 1} and summary["familiarity"]["unlearned"]["human"] == 5.0
    [line] = (tmp_path / "labels/evaluation/grades.jsonl").read_text().splitlines()
    assert json.loads(line)["grade"] == 3


def test_evaluation_tasks_from_the_evaluate_stage_datasets(tmp_path):
    from pipeline.review.verdicts import build_evaluation_tasks
    from pipeline.store import write_dataset
    from schemas.evaluation import completions_contract

    frame = completions()
    for model, rows in frame.groupby("model"):
        write_dataset(rows.reset_index(drop=True), completions_contract(model), stage="evaluate", root=tmp_path)
    tasks = build_evaluation_tasks(tmp_path, max_tasks=10)
    assert [t["data"] for t in tasks] == [t["data"] for t in evaluation_tasks(frame, max_tasks=10)]
