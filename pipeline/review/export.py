"""Reading a Label Studio export (pure): tasks, annotations, results, spans, choices.

An export is the JSON list the server sends: each task has ``data``, ``annotations[]`` (each
with ``result[]``, ``completed_by``, ``was_cancelled``, ``created_at`` and, when a
pre-annotation was shown, ``prediction``). The server checks little: a span whose ``text``
differs from ``data.text[start:end]`` is accepted, so every span is validated here.

:func:`read_export` checks every task against ``tasks.jsonl`` (same key, same data) and every
annotation with a project's result parser (:func:`choice_parser` here, the anchors' spans in
:mod:`pipeline.review.anchors`). Every problem is kept as ``task <key> annotation <id>:
<problem>``; a bad annotation is left out, and pull refuses to write anything while there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.core.jsonl import json_type
from pipeline.review.projects import TASKS_FILE
from pipeline.review.tasks import data_sha256, model_version, pushed_versions

ParseResult = Callable[[str, Any, list[Any]], tuple[list[Any], list[str]]]
"""``(task key, data.text, result) -> (regions or answers, problems)``."""


@dataclass(frozen=True)
class Region:
    """One labelled span of an annotation; ``translations`` from its text box (``None``: empty)."""

    id: str | None
    start: int
    end: int
    text: str
    label: str
    translations: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Answer:
    """One annotation of a one-verdict project: the chosen value and the text box (``None``: empty)."""

    choice: str
    text: str | None = None


@dataclass(frozen=True)
class Annotation:
    """One submitted (not cancelled) annotation, validated."""

    task: str
    id: Any
    reviewer: str
    created_at: str
    result: tuple[dict[str, Any], ...]
    regions: tuple[Any, ...] = ()
    """What the project's parser read: :class:`Region` spans or one :class:`Answer`."""
    pushed: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The ``tasks.jsonl`` version of the task that the reviewer saw (data and pre-annotation)."""

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    @property
    def answer(self) -> Answer:
        """The single answer of a one-verdict project (:func:`choice_parser`)."""
        return self.regions[0]


@dataclass
class Export:
    """A parsed export: the tasks by key, their valid annotations, what was skipped and why."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    annotations: list[Annotation] = field(default_factory=list)
    cancelled: int = 0
    problems: list[str] = field(default_factory=list)
    annotators: dict[str, set[str]] = field(default_factory=dict)
    """Task key -> every name of every reviewer with an annotation of it (cancelled ones too):
    their e-mail and their user id, so that a record names them either way."""

    @property
    def annotated(self) -> int:
        return len({a.task for a in self.annotations})


def _reviewer(completed_by: Any, users: Mapping[int, str]) -> str | None:
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        completed_by = completed_by.get("id")
    if isinstance(completed_by, bool) or not isinstance(completed_by, (int, str)) or completed_by == "":
        return None
    if isinstance(completed_by, int) and users.get(completed_by):
        return users[completed_by]
    return str(completed_by)


def _names(completed_by: Any, users: Mapping[int, str]) -> set[str]:
    names = {_reviewer(completed_by, users), _reviewer(completed_by, {})}
    if isinstance(completed_by, dict):
        names.add(_reviewer(completed_by.get("id"), users))
    return {name for name in names if name}


def _created_at(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return value if moment.tzinfo is not None else None


def read_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, users: Mapping[int, str] | None = None,
    parse_result: ParseResult | None = None,
) -> Export:
    """Validate an export (Label Studio JSON: a list of tasks with ``data`` and ``annotations``).

    Args:
        export: the parsed JSON.
        tasks: ``tasks.jsonl`` by key (what was pushed).
        users: user id -> e-mail, to name reviewers whose ``completed_by`` is an id.
        parse_result: project-specific ``(key, text, result) -> (regions, problems)``.

    Every problem (malformed export, unknown or changed task, bad annotation) goes to
    ``Export.problems`` as ``task <key> annotation <id>: <problem>``; a bad annotation is left
    out. Cancelled annotations are counted and skipped.
    """
    users = users or {}
    parsed = Export()
    if not isinstance(export, list):
        parsed.problems.append(f"malformed export: expected a JSON list of tasks, got {type(export).__name__}")
        return parsed
    for index, task in enumerate(export):
        where = f"export task #{index}"
        data = task.get("data") if isinstance(task, dict) else None
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            parsed.problems.append(f"{where}: malformed export: no data.key (a task not pushed by `whp review push`)")
            continue
        if key in parsed.tasks:
            parsed.problems.append(f"task {key}: malformed export: the key is on two tasks of the server "
                                   f"(ids {parsed.tasks[key].get('id')} and {task.get('id')})")
            continue
        parsed.tasks[key] = task
        if key not in tasks:
            parsed.problems.append(f"task {key}: unknown task key: not in {TASKS_FILE} (pushed from another "
                                   "checkout? push from this one, or restore its tasks.jsonl)")
            continue
        if data_sha256(data) != tasks[key]["data_sha256"]:
            parsed.problems.append(f"task {key}: its data on the server differs from {TASKS_FILE} (run push again)")
            continue
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            parsed.problems.append(f"task {key}: malformed export: 'annotations' is not a list")
            continue
        for annotation in annotations:
            _read_annotation(parsed, key, tasks[key], annotation, users, parse_result)
    return parsed


def _seen_version(record: Mapping[str, Any], annotation: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # Label Studio stores on each annotation the prediction shown when it was made; its
    # model_version names the pushed version (none shown: the current one).
    seen = annotation.get("prediction")
    version = seen.get("model_version") if isinstance(seen, dict) else None
    if not version:
        return record
    return next((v for v in pushed_versions(record) if model_version(v) == version), None)


def _annotation_problem(annotation: Mapping[str, Any]) -> str | None:
    """A malformed field that decides how an annotation is read: its ``was_cancelled`` flag and
    the ``model_version`` of the pre-annotation it was made on."""
    cancelled = annotation.get("was_cancelled")
    if cancelled is not None and not isinstance(cancelled, bool):
        return f"malformed export: 'was_cancelled' is {json_type(cancelled)}, expected true or false"
    seen = annotation.get("prediction")
    version = seen.get("model_version") if isinstance(seen, dict) else None
    if version is not None and not isinstance(version, str):
        return f"malformed export: 'prediction.model_version' is {json_type(version)}, expected a string"
    return None


def _read_annotation(parsed: Export, key: str, record: Mapping[str, Any], annotation: Any,
                     users: Mapping[int, str], parse_result: ParseResult | None) -> None:
    if not isinstance(annotation, dict):
        parsed.problems.append(f"task {key}: malformed export: an annotation is not an object")
        return
    where = f"task {key} annotation {annotation.get('id')}"
    parsed.annotators.setdefault(key, set()).update(_names(annotation.get("completed_by"), users))
    if problem := _annotation_problem(annotation):
        parsed.problems.append(f"{where}: {problem}")
        return
    if annotation.get("was_cancelled"):
        parsed.cancelled += 1
        return
    pushed = _seen_version(record, annotation)
    if pushed is None:
        version = annotation["prediction"]["model_version"]
        parsed.problems.append(f"{where}: made on pre-annotation version {version!r}, which {TASKS_FILE} no longer "
                               "holds (restore it from git)")
        return
    data = pushed["data"]
    problems = []
    reviewer = _reviewer(annotation.get("completed_by"), users)
    if reviewer is None:
        problems.append(f"malformed export: no reviewer (completed_by: {annotation.get('completed_by')!r})")
    created_at = _created_at(annotation.get("created_at"))
    if created_at is None:
        problems.append(f"malformed export: created_at is not an ISO time with a timezone: "
                        f"{annotation.get('created_at')!r}")
    result = annotation.get("result")
    if not isinstance(result, list):
        problems.append("malformed export: 'result' is not a list")
        result = []
    regions, found = parse_result(key, data.get("text", ""), result) if parse_result else ([], [])
    problems.extend(found)
    if problems:
        parsed.problems.extend(f"{where}: {problem}" for problem in problems)
        return
    parsed.annotations.append(Annotation(key, annotation.get("id"), reviewer, created_at, tuple(result),
                                         tuple(regions), pushed))


_RESULT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "a string or an integer"), "type": ((str,), "a string"), "from_name": ((str,), "a string"),
    "to_name": ((str,), "a string"),
}
"""The fields of a result item that must have these types when present, and how to say so."""


def item_problem(item: Any) -> str | None:
    """What is wrong with the shape of one ``result`` item (``None`` if it is usable): an object
    with a ``value`` object, and ``id``, ``type``, ``from_name``, ``to_name`` strings (``id`` may
    be an integer) when present."""
    if not isinstance(item, dict):
        return f"malformed export: a result is {json_type(item)}, expected an object"
    if not isinstance(item.get("value"), dict):
        return f"malformed export: a result without a 'value' object ('value' is {json_type(item.get('value'))})"
    for name, (types, expected) in _RESULT_FIELDS.items():
        value = item.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"malformed export: '{name}' is {json_type(value)}, expected {expected}"
    return None


def span_problem(text: str, value: Mapping[str, Any]) -> str | None:
    """What is wrong with a span ``value`` (``start``, ``end``, ``text``) of ``text``; ``None`` if right."""
    start, end, span = value.get("start"), value.get("end"), value.get("text")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return f"malformed export: span offsets are not integers (start={start!r}, end={end!r})"
    if not isinstance(span, str):
        return f"malformed export: span text is not a string ({span!r})"
    if not 0 <= start < end <= len(text):
        return f"span offsets {start}-{end} outside the passage (length {len(text)})"
    if text[start:end] != span:
        return f"span text {span!r} differs from the passage at {start}-{end} ({text[start:end]!r})"
    return None


def choice_parser(control: str, choices: Sequence[str], text_control: str | None = None) -> ParseResult:
    """A ``parse_result`` for :func:`read_export`: exactly one of ``choices`` from ``control``,
    optionally a text box ``text_control``; every deviation is a problem. Gives one :class:`Answer`."""
    def parse(key: str, text: Any, result: list[Any]) -> tuple[list[Answer], list[str]]:
        picked: list[str] = []
        texts: list[str] = []
        problems: list[str] = []
        for number, item in enumerate(result):
            where = f"result #{number}"
            if problem := item_problem(item):
                problems.append(f"{where}: {problem}")
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
