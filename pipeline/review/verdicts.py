"""The two review projects where a reviewer gives one verdict per task: ``linguistic`` (review 2)
and ``evaluation`` (review 3). Task builders, export normalisers, the grades file and the
human-graded familiarity; :mod:`pipeline.review.sync` registers them and does push and pull.

Both read a ``Choices`` control (``verdict``, ``grade``) and, for ``linguistic``, the ``fix``
text box. An annotation must choose exactly one value of the configuration; anything else (an
unknown choice or control, a malformed result) is a problem naming task and annotation, and
pull writes nothing. Each reviewer's latest annotation of a task is their vote; the value with
strictly more votes than any other wins, a tie is a conflict listed for adjudication and left
out of the file (write the adjudicated record by hand: records without a snapshot as ``source``
are kept by every pull). Agreement: percent agreement and Cohen's kappa over the tasks each pair
of reviewers both annotated.

``labels/linguistic/decisions.jsonl``: one record per task, format and effect in
:mod:`pipeline.review.linguistic`. The fix of a task is voted among the reviewers of the winning
``incorrect`` verdict (no fix is a vote too); a tie leaves the fix out (the positions are then
dropped) and is listed as a conflict.

``labels/evaluation/grades.jsonl`` (format ``evaluation_grades_v1``), one record per task::

    {"key": "unlearned:p017", "model": "unlearned", "probe_id": "p017", "auto_grade": 2,
     "grade": 3, "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00+00:00",
     "source": "20261127T120000Z.json"}

(``note`` optional). Several records with one key: the latest ``created_at`` wins.
:func:`familiarity` turns the file into the paper's familiarity, (5 x count(3) + count(2)) / N,
per model, by the human and by the automatic grades over the same completions, with their
agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import DatasetNotFoundError, PipelineError
from pipeline.paths import BASELINE
from pipeline.review.records import field_problems, int_problem, json_type, read_records, string_problem, time_problem
from pipeline.review.linguistic import VERDICTS, decision_problems, fix_text, linguistic_tasks, load_decisions
from pipeline.review.sync import (
    MAX_TASKS, Annotation, Conflict, Review, ReviewError, _latest, _voters, cohen_kappa, latest_annotations,
    majority, pooled_agreement, read_export,
)
from pipeline.store import list_datasets, read_dataset

__all__ = ["decision_problems"]  # the registry reaches it through this module

VERDICT_CONTROL = "verdict"
FIX_CONTROL = "fix"
GRADE_CONTROL = "grade"
GRADES = ("0", "1", "2", "3")
GRADES_FORMAT = "evaluation_grades_v1"
COMPLETIONS = "evaluation_completions"
"""Prefix of the evaluate stage's datasets, one per model: ``evaluation_completions_<model>``
(:mod:`schemas.evaluation`)."""
NOT_REVIEWED = ("reinforced",)
"""Models whose completions are not graded: the reinforced model is a tool, not a subject."""


@dataclass(frozen=True)
class Answer:
    """One annotation of a one-verdict project: the chosen value and the text box (``None``: empty)."""

    choice: str
    text: str | None = None


def choice_parser(control: str, choices: Sequence[str], text_control: str | None = None):
    """A ``parse_result`` for :func:`pipeline.review.sync.read_export`: exactly one of ``choices``
    from ``control``, optionally a text box ``text_control``; every deviation is a problem."""
    def parse(key: str, text: Any, result: list[Any]) -> tuple[list[Answer], list[str]]:
        picked: list[str] = []
        texts: list[str] = []
        problems: list[str] = []
        for number, item in enumerate(result):
            where = f"result #{number}"
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                problems.append(f"{where}: malformed export: a result without a 'value' object")
                continue
            kind, value, name = item.get("type"), item["value"], item.get("from_name")
            if kind == "choices":
                got = value.get("choices")
                if name != control:
                    problems.append(f"{where}: choices from an unknown control {name!r} (expected {control!r})")
                elif not (isinstance(got, list) and len(got) == 1 and isinstance(got[0], str)):
                    problems.append(f"{where}: expected exactly one choice, got {got!r}")
                elif got[0] not in choices:
                    problems.append(f"{where}: unknown choice {got[0]!r} (expected one of: {', '.join(choices)})")
                else:
                    picked.append(got[0])
            elif kind == "textarea" and text_control is not None:
                got = value.get("text")
                if name != text_control:
                    problems.append(f"{where}: text box from an unknown control {name!r} (expected {text_control!r})")
                elif not (isinstance(got, list) and all(isinstance(t, str) for t in got)):
                    problems.append(f"{where}: malformed export: text box value.text is not a list of strings")
                else:
                    texts.extend(got)
            else:
                expected = "choices or textarea" if text_control else "choices"
                problems.append(f"{where}: unknown result type {kind!r} (expected {expected})")
        if not problems and len(picked) != 1:
            problems.append(f"no {control} chosen" if not picked else f"{len(picked)} {control} results (expected one)")
        if problems:
            return [], problems
        typed = " ".join(texts)
        return [Answer(picked[0], typed if typed.strip() else None)], []
    return parse


def _answer(annotation: Annotation) -> Answer:
    return annotation.regions[0]  # type: ignore[return-value]  (choice_parser's single Answer)


def _normalise_choices(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, users: Mapping[int, str] | None, parse,
    decide: Callable[[str, Mapping[str, Annotation]], tuple[dict[str, Any] | None, list[Conflict]]],
    decision_field: str,
) -> Review:
    parsed = read_export(export, tasks, users=users, parse_result=parse)
    latest = latest_annotations(parsed.annotations)
    review = Review(tasks=len(parsed.tasks), annotated=parsed.annotated, annotations=len(parsed.annotations),
                    cancelled=parsed.cancelled, problems=parsed.problems, task_keys=set(parsed.tasks),
                    decision_field=decision_field)
    for key in sorted(latest):
        record, conflicts = decide(key, latest[key])
        if record is not None:
            review.records.append(record)
        review.conflicts.extend(conflicts)
    review.records.sort(key=lambda r: (datetime.fromisoformat(r["created_at"]), r["key"]))
    review.reviewers = sorted({a.reviewer for a in parsed.annotations})
    votes = {key: {r: _answer(a).choice for r, a in by_reviewer.items()} for key, by_reviewer in latest.items()}
    review.agreement = pooled_agreement(
        review.reviewers, lambda a, b: [(v[a], v[b]) for _, v in sorted(votes.items()) if a in v and b in v])
    return review


def _provenance(record: dict[str, Any], voters: list[str], annotations: Mapping[str, Annotation], *,
                reviewers: int, source: str) -> dict[str, Any]:
    record.update(reviewer=", ".join(voters), created_at=_latest([annotations[r] for r in voters]))
    if reviewers > 1:
        record["note"] = f"majority {len(voters)} of {reviewers} reviewers"
    record["source"] = source
    return record


# --------------------------------------------------------------------------------------------
# Linguistic


def _settings(root: Path):
    """``(dataset.alpha, review.linguistic)`` of the project (defaults without a params.yaml)."""
    from pipeline.params import DatasetParams, LinguisticReviewParams, load_params

    path = root / "params.yaml"
    if path.is_file():
        params = load_params(path)
        return params.dataset.alpha, params.review.linguistic
    return DatasetParams().alpha, LinguisticReviewParams()


def build_linguistic_tasks(root: Path, *, max_tasks: int = MAX_TASKS) -> list[dict[str, Any]]:
    """:func:`pipeline.review.linguistic.linguistic_tasks` on the project's ``blocks`` and
    ``generic_labels`` at ``dataset.alpha``, decoded with ``models/baseline``'s tokenizer."""
    root = Path(root)
    alpha, settings = _settings(root)
    try:
        labels = read_dataset("generic_labels", root, columns=["block_id", "alpha", "target", "confidence"])
        blocks = read_dataset("blocks", root, columns=["block_id", "translated_ids", "alignment", "loss_mask"])
    except DatasetNotFoundError as exc:
        raise ReviewError(f"review project 'linguistic': no data yet: run the generic_labels stage "
                          f"(`dvc repro generic_labels`): {exc}") from None
    labels = labels[labels["alpha"] == alpha]
    if labels.empty:
        raise ReviewError(f"review project 'linguistic': generic_labels has no labels at dataset.alpha={alpha} "
                          "(add it to generic_labels.alphas and run `dvc repro generic_labels`)")
    from pipeline.models import load_tokenizer  # imports torch: only once there is data

    tokenizer = load_tokenizer(root / BASELINE)
    return linguistic_tasks(blocks, labels, decode=lambda ids: tokenizer.decode(ids), alpha=alpha,
                            threshold=settings.threshold, gap=settings.gap, span=settings.span,
                            context_tokens=settings.context_tokens, max_tasks=max_tasks)


def _decide_linguistic(source: str):
    def decide(key: str, annotations: Mapping[str, Annotation]) -> tuple[dict[str, Any] | None, list[Conflict]]:
        reviewers = sorted(annotations)
        votes = {r: _answer(annotations[r]).choice for r in reviewers}
        won = majority(votes)
        if won is None:
            return None, [Conflict(key, "", "verdict", _voters(votes, str))]
        verdict, voters = won
        data = annotations[voters[0]].pushed["data"]
        record: dict[str, Any] = {"key": key, "block_id": data["block_id"], "positions": list(data["positions"]),
                                  "alpha": data["alpha"], "targets": list(data["targets"]), "verdict": verdict}
        conflicts = []
        if verdict == "incorrect":
            fixes = {r: fix_text(_answer(annotations[r]).text, annotations[r].pushed["data"]["translated"])
                     for r in voters}
            won_fix = majority(fixes)
            if won_fix is None:
                conflicts.append(Conflict(key, "", "fix", _voters(fixes, lambda f: "no fix" if f is None else repr(f))))
            elif won_fix[0] is not None:
                record["fix"] = won_fix[0]
        return _provenance(record, voters, annotations, reviewers=len(reviewers), source=source), conflicts
    return decide


def normalise_linguistic_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None = None,
) -> Review:
    """The decisions records of a linguistic export (module docstring), with conflicts and agreement."""
    return _normalise_choices(export, tasks, users=users, parse=choice_parser(VERDICT_CONTROL, VERDICTS, FIX_CONTROL),
                              decide=_decide_linguistic(source), decision_field="verdict")


def load_decision_records(path: Path) -> list[dict[str, Any]]:
    """The decisions file's records as plain dicts (malformed file: an error naming its lines)."""
    return [dict(d.record) for d in load_decisions(path)]


# --------------------------------------------------------------------------------------------
# Evaluation


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


def _decide_grade(source: str):
    def decide(key: str, annotations: Mapping[str, Annotation]) -> tuple[dict[str, Any] | None, list[Conflict]]:
        reviewers = sorted(annotations)
        votes = {r: _answer(annotations[r]).choice for r in reviewers}
        won = majority(votes)
        if won is None:
            return None, [Conflict(key, "", "grade", _voters(votes, str))]
        grade, voters = won
        data = annotations[voters[0]].pushed["data"]
        record = {"key": key, "model": data["model"], "probe_id": data["probe_id"],
                  "auto_grade": int(data["auto_grade"]), "grade": int(grade)}
        return _provenance(record, voters, annotations, reviewers=len(reviewers), source=source), []
    return decide


def normalise_evaluation_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None = None,
) -> Review:
    """The grades records of an evaluation export, with conflicts and agreement."""
    return _normalise_choices(export, tasks, users=users, parse=choice_parser(GRADE_CONTROL, GRADES),
                              decide=_decide_grade(source), decision_field="grade")


GRADE_REQUIRED = ("key", "model", "probe_id", "auto_grade", "grade", "reviewer", "created_at")
GRADE_FIELDS = (*GRADE_REQUIRED, "note", "source")


class GradesError(PipelineError):
    """The evaluation grades file is malformed."""


def grade_problems(record: Mapping[str, Any]) -> list[str]:
    """Every problem of one record of the grades file (``[]`` when valid)."""
    problems = field_problems(record, GRADE_FIELDS, GRADE_REQUIRED)
    for name in ("key", "model", "probe_id", "reviewer"):
        if record.get(name) is not None and (problem := string_problem(name, record[name])):
            problems.append(problem)
    for name in ("auto_grade", "grade"):
        if record.get(name) is not None and (problem := int_problem(name, record[name], low=0, high=3)):
            problems.append(problem)
    if record.get("created_at") is not None and (problem := time_problem("created_at", record["created_at"])):
        problems.append(problem)
    if all(isinstance(record.get(n), str) for n in ("key", "model", "probe_id")):
        if record["key"] != f"{record['model']}:{record['probe_id']}":
            problems.append(f"field 'key' is {record['key']!r}, expected '<model>:<probe_id>'")
    for name in ("note", "source"):
        if record.get(name) is not None and not isinstance(record[name], str):
            problems.append(f"field {name!r} must be a string, got {json_type(record[name])}")
    return problems


def load_grade_records(path: Path) -> list[dict[str, Any]]:
    """The grades file's records in file order (missing file: none); a malformed file is a
    :class:`GradesError` naming every bad line."""
    return [record for _, record in read_records(path, check=grade_problems, what=f"evaluation grades file "
                                                  f"(format {GRADES_FORMAT})", error=GradesError)]


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

