"""pipeline/review/export.py: validating an export (through the anchors' normaliser)."""

from __future__ import annotations

import pytest

from pipeline.review.anchors import anchor_tasks
from pipeline.review.projects import ReviewError
from pipeline.review.sync import pull
from pipeline.review.tasks import task_record, write_tasks
from tests.review.conftest import (
    DICTIONARY, KEY, TEXT, VERSION, StandInStudio, annotation, decisions, export, labels_state, normalise, passages,
    proposed_result, span, the_task, tracked,
)


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


# --- types of the export's fields (a wrong type is a problem naming task and field, never a TypeError)


def _item(result: list, index: int) -> dict:
    return result[index]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r, a: _item(r, 0).update(id=["a9-15"]), "result #0: malformed export: 'id' is array, expected a string"),
    (lambda r, a: _item(r, 1).update(id={"x": 1}), "result #1: malformed export: 'id' is object, expected a string"),
    (lambda r, a: _item(r, 0).update(id=True), "result #0: malformed export: 'id' is boolean"),
    (lambda r, a: _item(r, 0).update(value="Holmes"), "result #0: malformed export: a result without a 'value' "
                                                       "object ('value' is string)"),
    (lambda r, a: r.__setitem__(0, 7), "result #0: malformed export: a result is number, expected an object"),
    (lambda r, a: _item(r, 0)["value"].update(text=5), "result #0: malformed export: span text is not a string"),
    (lambda r, a: _item(r, 1)["value"].update(text=[1]), "result #1: malformed export: text box value.text is not "
                                                          "a list of strings"),
    (lambda r, a: _item(r, 0)["value"].update(labels=[["person"]]), "result #0: expected exactly one label (a string)"),
    (lambda r, a: _item(r, 0)["value"].update(start=None), "result #0: malformed export: span offsets are not "
                                                            "integers"),
    (lambda r, a: _item(r, 0).update(type=["labels"]), "result #0: malformed export: 'type' is array"),
    (lambda r, a: _item(r, 0).update(from_name=3), "result #0: malformed export: 'from_name' is number"),
    (lambda r, a: a.update(was_cancelled="false"), "malformed export: 'was_cancelled' is string, expected true or "
                                                    "false"),
    (lambda r, a: a.update(prediction={"model_version": ["x"]}), "malformed export: 'prediction.model_version' is "
                                                                  "array, expected a string"),
    (lambda r, a: a.update(completed_by=["ann"]), "malformed export: no reviewer (completed_by: ['ann'])"),
    (lambda r, a: a.update(created_at=1700000000), "malformed export: created_at is not an ISO time"),
    (lambda r, a: a.update(result={"0": "x"}), "malformed export: 'result' is not a list"),
])
def test_a_field_of_the_wrong_type_is_a_problem_naming_task_annotation_and_field(mutate, message):
    result = proposed_result()
    made = annotation(27, "ann", result)
    mutate(result, made)
    review = normalise(export(made))
    assert review.records == []
    assert len(review.problems) == 1, review.problems
    assert review.problems[0].startswith(f"task {KEY} annotation 27: ") and message in review.problems[0]


def test_task_data_of_the_wrong_type_is_a_problem():
    data = dict(the_task()["data"], text=5)
    tasks = {KEY: task_record(dict(the_task(), data=data))}
    review = normalise(export(annotation(28, "ann", proposed_result()), data=data), tasks=tasks)
    assert review.problems == [f"task {KEY} annotation 28: malformed export: data.text is not a string"]
    assert "no data.key" in normalise([{"id": 3, "data": {"key": ["k"]}}]).problems[0]
    assert "no data.key" in normalise([{"id": 3, "data": "text"}]).problems[0]
    assert "'annotations' is not a list" in normalise(
        [{"id": 1, "data": the_task()["data"], "annotations": {"0": {}}}]).problems[0]
    assert "an annotation is not an object" in normalise(export("not an annotation")).problems[0]


def test_pull_refuses_an_export_with_a_wrongly_typed_field_and_writes_nothing(tmp_path):
    folder = tmp_path / "labels" / "anchors"
    write_tasks(folder / "tasks.jsonl", tracked())
    before = labels_state(tmp_path)
    result = proposed_result()
    result[0]["id"] = ["a9-15"]
    with pytest.raises(ReviewError, match=rf"task {KEY} annotation 29: result #0: malformed export: 'id' is array"):
        pull("anchors", tmp_path, StandInStudio(export(annotation(29, "ann", result))))
    assert labels_state(tmp_path) == before
