"""pipeline/review/evaluation.py: evaluation tasks, grades and the human-graded familiarity."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from label_studio_sdk.label_interface import LabelInterface

from pipeline.review.evaluation import evaluation_tasks, familiarity, normalise_evaluation_export
from pipeline.review.records import Grade
from pipeline.review.sync import pull
from pipeline.review.tasks import task_record, write_tasks
from tests.review.conftest import REPO, StandInStudio, annotation


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
    assert review.problems == [] and all(Grade.problems(r) == [] for r in review.records)
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
    assert {p.split(" ")[1] for p in Grade.problems(wrong)} >= {"'grade'", "'key'"}


def test_evaluation_pull_reports_familiarity(tmp_path):
    tasks = {t["data"]["key"]: task_record(t) for t in evaluation_tasks(completions(), max_tasks=2)}
    write_tasks(tmp_path / "labels" / "evaluation" / "tasks.jsonl", tasks)
    exported = [{"id": 1, "data": tasks["unlearned:p1"]["data"], "annotations": [annotation(1, "ann", grade("3"))]}]
    summary = pull("evaluation", tmp_path, StandInStudio(exported, "whp-evaluation"))
    assert summary["decisions"] == {"3": 1} and summary["familiarity"]["unlearned"]["human"] == 5.0
    [line] = (tmp_path / "labels/evaluation/grades.jsonl").read_text().splitlines()
    assert json.loads(line)["grade"] == 3


def test_evaluation_tasks_from_the_evaluate_stage_datasets(tmp_path):
    from pipeline.review.evaluation import build_evaluation_tasks
    from pipeline.store import write_dataset
    from schemas.evaluation import completions_contract

    frame = completions()
    for model, rows in frame.groupby("model"):
        write_dataset(rows.reset_index(drop=True), completions_contract(model), stage="evaluate", root=tmp_path)
    tasks = build_evaluation_tasks(tmp_path, max_tasks=10)
    assert [t["data"] for t in tasks] == [t["data"] for t in evaluation_tasks(frame, max_tasks=10)]
