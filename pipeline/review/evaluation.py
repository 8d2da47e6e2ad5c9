"""The ``evaluation`` review (review 3): the evaluate stage's completions with their automatic
familiarity grade, which reviewers confirm or correct, and the human-graded familiarity.

Tasks: every completion of the reviewed models (all but the reinforced one), the same probes for
each, with the automatic 0-3 grade. Reviewers choose one grade (the ``grade`` control); anything
else is a problem naming task and annotation. Each reviewer's latest annotation is their vote
(:mod:`pipeline.review.voting`); a tie is a conflict. Pulled into
``labels/evaluation/grades.jsonl`` (format: :class:`pipeline.review.records.Grade`); pull and
status also report :func:`familiarity`: the paper's (5 x count(3) + count(2)) / N per model, by
the human and by the automatic grades over the same completions, with their agreement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.review.export import Annotation, choice_parser
from pipeline.review.projects import MAX_TASKS, ReviewError, Workflow
from pipeline.review.records import Grade
from pipeline.review.voting import Conflict, Review, cohen_kappa, normalise_choices
from pipeline.store import list_datasets, read_dataset

GRADE_CONTROL = "grade"
GRADES = ("0", "1", "2", "3")
COMPLETIONS = "evaluation_completions"
"""Prefix of the evaluate stage's datasets, one per model: ``evaluation_completions_<model>``
(:mod:`schemas.evaluation`)."""
NOT_REVIEWED = ("reinforced",)
"""Models whose completions are not graded: the reinforced model is a tool, not a subject."""


def evaluation_tasks(completions: pd.DataFrame, *, max_tasks: int) -> list[dict[str, Any]]:
    """One task per completion of every reviewed model (all but :data:`NOT_REVIEWED`).

    Args:
        completions: ``model``, ``probe_id``, ``prompt``, ``completion``, ``grade`` (the
            automatic 0-3 grade), ``matched_terms`` (list of strings).
        max_tasks: at most this many: the same probes (first probe ids in sorted order) for
            every model, so that the human grades compare the models on the same prompts.

    Returns:
        ``[{"data": {"key": "<model>:<probe_id>", "model", "probe_id", "prompt", "completion",
        "auto_grade", "matched_terms"}}]`` ordered by probe, then model.
    """
    frame = completions[~completions["model"].isin(NOT_REVIEWED)].copy()
    frame["probe_id"] = frame["probe_id"].astype(str)
    models = sorted(frame["model"].unique())
    if not models:
        return []
    share = max(1, max_tasks // len(models))
    probes = set(sorted(frame["probe_id"].unique())[:share])
    chosen = frame[frame["probe_id"].isin(probes)].sort_values(["probe_id", "model"])
    tasks = []
    for row in chosen.itertuples(index=False):
        terms = [str(t) for t in (row.matched_terms if row.matched_terms is not None else [])]
        tasks.append({"data": {
            "key": f"{row.model}:{row.probe_id}", "model": str(row.model), "probe_id": row.probe_id,
            "prompt": str(row.prompt), "completion": str(row.completion), "auto_grade": int(row.grade),
            "matched_terms": ", ".join(terms) if terms else "none",
        }})
    return tasks[:max_tasks]


def read_completions(root: Path) -> pd.DataFrame:
    """Every model's completions: the datasets ``evaluation_completions_<model>`` (a dataset
    without a ``model`` column takes the name's suffix)."""
    names = [n for n in list_datasets(root)
             if (n == COMPLETIONS or n.startswith(COMPLETIONS + "_")) and not n.endswith("_rejects")]
    if not names:
        raise ReviewError(f"review project 'evaluation': no data yet: run the evaluate stage (`dvc repro evaluate`): "
                          f"no {COMPLETIONS} dataset under {root / 'data'}")
    frames = []
    for name in names:
        frame = read_dataset(name, root)
        if "model" not in frame.columns:
            frame["model"] = name.removeprefix(COMPLETIONS + "_")
        missing = {"probe_id", "prompt", "completion", "grade", "matched_terms"} - set(frame.columns)
        if missing:
            raise ReviewError(f"dataset {name!r} lacks the column(s) {', '.join(sorted(missing))} the evaluation "
                              "review needs")
        frames.append(frame[["model", "probe_id", "prompt", "completion", "grade", "matched_terms"]])
    return pd.concat(frames, ignore_index=True)


def build_evaluation_tasks(root: Path, *, max_tasks: int = MAX_TASKS) -> list[dict[str, Any]]:
    """:func:`evaluation_tasks` on the evaluate stage's completions."""
    return evaluation_tasks(read_completions(Path(root)), max_tasks=max_tasks)


def _grade_record(key: str, grade: str, deciders: list[str],
                  annotations: Mapping[str, Annotation]) -> tuple[dict[str, Any], list[Conflict]]:
    data = annotations[deciders[0]].pushed["data"]
    return {"key": key, "model": data["model"], "probe_id": data["probe_id"], "auto_grade": int(data["auto_grade"]),
            "grade": int(grade)}, []


def normalise_evaluation_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None = None,
) -> Review:
    """The grades records of an evaluation export, with conflicts and agreement."""
    return normalise_choices(export, tasks, source=source, users=users, parse=choice_parser(GRADE_CONTROL, GRADES),
                             decide=_grade_record, decision_field="grade")


def familiarity(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, over its graded completions (the latest record of each key):
    ``{"n", "human", "auto", "agreement", "kappa", "grades"}``: familiarity by the human and by
    the automatic grades (:func:`pipeline.core.metrics.familiarity`), the share of exact agreement,
    Cohen's kappa (``None`` when undefined) and the human grade counts."""
    from pipeline.core.metrics import familiarity as familiarity_score  # imports torch: only when asked

    latest: dict[str, Mapping[str, Any]] = {}
    for record in records:
        if record["key"] not in latest or (datetime.fromisoformat(record["created_at"])
                                           >= datetime.fromisoformat(latest[record["key"]]["created_at"])):
            latest[record["key"]] = record
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for record in latest.values():
        by_model.setdefault(record["model"], []).append(record)
    report = {}
    for model, found in sorted(by_model.items()):
        human = [int(r["grade"]) for r in found]
        auto = [int(r["auto_grade"]) for r in found]
        report[model] = {
            "n": len(found), "human": familiarity_score(human), "auto": familiarity_score(auto),
            "agreement": sum(h == a for h, a in zip(human, auto)) / len(found),
            "kappa": cohen_kappa(list(zip(human, auto))), "grades": {str(g): human.count(g) for g in range(4)},
        }
    return report


def familiarity_report(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``familiarity`` entry of the pull and status summaries."""
    return {"familiarity": familiarity(records)}


WORKFLOW = Workflow(build_tasks=build_evaluation_tasks, normalise=normalise_evaluation_export, record=Grade,
                    report=familiarity_report)
