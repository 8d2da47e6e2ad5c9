"""Human review in Label Studio: build tasks, push them, pull the reviewers' work, normalise it.

Three review projects (``labels/<project>/config.xml``, Label Studio title ``whp-<project>``):

* ``anchors``: forget passages with the dictionary's anchor spans pre-annotated; reviewers fix
  spans, add missed terms, reject false ones (label ``not an anchor``) and edit the generic
  translations. Pulled into ``labels/anchors/corrections.jsonl`` (format ``corrections_v1``,
  :mod:`pipeline.review.corrections`), which the ``dictionary`` stage applies.
* ``linguistic``: groups of uncertain generic labels (confidence at ``dataset.alpha`` below
  ``review.linguistic.threshold``), with the translated context and the generic continuation;
  reviewers judge ``correct``/``incorrect``/``unsure`` and may type a fix. Pulled into
  ``labels/linguistic/decisions.jsonl``, which the ``dataset`` stage applies (tasks, format and
  effect: :mod:`pipeline.review.linguistic`).
* ``evaluation``: the evaluate stage's completions (all models but the reinforced one, the same
  probes for each) with their automatic 0-3 familiarity grade; reviewers confirm or correct it.
  Pulled into ``labels/evaluation/grades.jsonl``; pull and status also report the human-graded
  familiarity per model and its agreement with the automatic grade.

The two one-verdict projects (normalisers, grades file, familiarity) live in
:mod:`pipeline.review.verdicts`; push, pull, status and the export checks below are shared.

Files under ``labels/<project>/`` (tracked in git):

* ``tasks.jsonl``: our copy of every task on the server, one JSON object a line:
  ``{"key", "data_sha256", "data", "predictions", "anchors", "earlier"}``; ``anchors`` maps each
  pre-annotated region id to its dictionary key (the export gives prediction ids only);
  ``earlier`` (only on tasks updated after they were annotated) keeps the versions those
  annotations were made on;
* ``snapshots/<UTC time>.json``: each pulled export, byte for byte as the server sent it (task
  data, annotations, user ids: no credentials);
* the normalised file: ``corrections.jsonl`` (anchors), ``decisions.jsonl`` (linguistic),
  ``grades.jsonl`` (evaluation).

Push is idempotent by the stable key ``data.key`` (anchors: the passage id; linguistic:
``<block_id>:<first position>``; evaluation: ``<model>:<probe_id>``): a new key is imported (in
batches), an unchanged one (same ``data_sha256``) is skipped, a changed one is updated in place
(data and pre-annotation; ``data`` holds the dictionary version, so a new dictionary updates
every task). Label Studio pre-labels only with the predictions of the project's model version,
so push sets it to the dictionary version. Tasks no longer selected stay on the server (and in
``tasks.jsonl``); push never deletes.

Each annotation is compared with the pre-annotation its reviewer saw: Label Studio stores it
with the annotation (``prediction``), and its ``model_version`` selects the version in
``tasks.jsonl`` (the current one, or one kept in ``earlier``). Tasks without pre-annotation
(linguistic, evaluation) carry no version: their annotations are read against the task's
current data, so a task updated by push after it was annotated is judged as if the reviewer had
seen the new data (a linguistic decision records the targets of that data; the ``dataset``
stage skips it when the labels change later).

Pull validates the whole export before writing anything: every span's ``text`` must equal
``data.text[start:end]`` (the server does not check offsets), every key must be in
``tasks.jsonl`` with the same data, every label must be in the configuration. Any problem is one
:class:`ReviewError` listing task key, annotation id and problem, and ``labels/`` is untouched.
The normalised file is then rewritten: records without a snapshot as ``source`` (written by
hand) are kept first, as they were; a pulled record that an earlier pull already wrote keeps
that pull's ``source``, so a pull changes only the lines whose decisions changed.

Normalisation (anchors), per annotation, against the pre-annotated regions of its task:

* a region labelled ``not an anchor`` rejects every predicted anchor it overlaps (``reject``);
* a region with a predicted region's exact offsets: same kind -> ``accept``, another kind ->
  ``change_kind``;
* otherwise a region overlapping predicted regions -> ``change_span`` of the one it overlaps
  most (ties: the first): ``anchor`` = old key, ``new_anchor`` = the region's text (blanks
  stripped), ``kind`` when it differs;
* a region overlapping no prediction, or only predictions already decided by another region ->
  ``add`` of its text with its kind;
* a predicted region the reviewer deleted (nothing overlaps it) says nothing (no decision); to
  reject, label it ``not an anchor``.

An anchor occurring several times in a passage gets one decision per annotation: the first
non-``accept`` decision in text order, else ``accept``. Translations: the per-region text box is
pre-filled with the proposed translations joined by `` | ``; a box whose translations (split on
``|``, stripped, blanks dropped) differ from the proposed ones is an edit: ``change_translation``
beside ``accept``/``change_kind``, the ``translations`` of a ``change_span`` or ``add``. An
emptied box is no edit. Every record carries ``task`` (the key) and ``source`` (the snapshot).

Several reviewers (majority rule): each reviewer has one vote per task and anchor (their latest
annotation of the task; cancelled ones are skipped and counted). Within a task, the decision on
an anchor is the value ``(action, new_anchor, kind)`` with strictly more votes than any other;
a reviewer who annotated the task but said nothing on the anchor votes "no decision" (so a term
one of two reviewers added is a tie). The translation is then voted among the reviewers of
the winning decision ("as proposed" is a vote too). A tie leaves the anchor (or its translation) out of the corrections and is
reported as a conflict for adjudication; a winning "no decision" writes nothing. A record decided
by several reviewers names them all (``reviewer``: ``"ann@x, bob@y"``), takes the latest
``created_at`` among them and notes ``majority k of n reviewers``. Votes are counted per task:
decisions on one anchor in different tasks are separate records, applied in time order by the
``dictionary`` stage (which reports a record that no longer fits, e.g. an ``accept`` after a
``reject`` of the same key).

Agreement, over reviewer pairs and the tasks both annotated: the items are the anchors either
decided, a missing decision counting as "no decision"; percent agreement is pooled over all pairs,
Cohen's kappa is computed per pair over the decision values and averaged over the pairs where it
is defined (``None`` when a pair's expected agreement is 1).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.review.corrections import load_corrections, record_problems
from pipeline.errors import PipelineError
from pipeline.store import atomic_write_text, read_dataset, read_manifest
from schemas.anchors import KINDS

LABELS_DIR = "labels"
TASKS_FILE = "tasks.jsonl"
CONFIG_FILE = "config.xml"
SNAPSHOTS_DIR = "snapshots"
TITLE_PREFIX = "whp-"
MAX_TASKS = 200
"""Default of ``review.max_tasks``: anchor tasks pushed at most (passages with most anchors)."""
BATCH_SIZE = 50
"""Default of ``review.batch_size``: tasks per import request (SQLite locks under big imports)."""

NOT_AN_ANCHOR = "not an anchor"
ANCHOR_LABELS = (*KINDS, NOT_AN_ANCHOR)
KIND_CONTROL = "kind"
TRANSLATION_CONTROL = "translation"
TEXT_OBJECT = "text"
SEPARATOR = " | "

_SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?\.json$")
_NONE = ("none",)
"""The vote of a reviewer who annotated a task but said nothing about an anchor."""
_MAX_LISTED = 40


class ReviewError(PipelineError):
    """The review server or its export cannot be used; the message names task, annotation, problem."""


# --------------------------------------------------------------------------------------------
# Projects


@dataclass(frozen=True)
class ReviewProject:
    """One review project: its configuration, how its tasks are built and its export normalised.

    ``build_tasks(root, *, max_tasks)`` returns task records (``{"data": {"key", ...}, "predictions": [...],
    ...}``; keys other than ``data`` and ``predictions`` stay in ``tasks.jsonl``);
    ``normalise(export, tasks, source=, users=)`` returns a :class:`Review`; ``output`` is the
    normalised file written by :func:`pull` (inside ``labels/<name>/``); ``load_records(path)``
    reads it back as plain records (a malformed file is an error), ``record_problems(record)``
    checks one record, ``task_field`` names the record field holding the task key, and
    ``report(records)`` (optional) adds figures computed over the whole file to the summary.
    """

    name: str
    build_tasks: Callable[..., list[dict[str, Any]]]
    normalise: Callable[..., "Review"] | None = None
    output: str | None = None
    load_records: Callable[[Path], list[dict[str, Any]]] | None = None
    record_problems: Callable[[Mapping[str, Any]], list[str]] | None = None
    task_field: str = "task"
    report: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]] | None = None

    @property
    def title(self) -> str:
        return TITLE_PREFIX + self.name

    def folder(self, root: Path | str) -> Path:
        return Path(root) / LABELS_DIR / self.name

    def config_path(self, root: Path | str) -> Path:
        return self.folder(root) / CONFIG_FILE


# --------------------------------------------------------------------------------------------
# Anchor tasks (pure)


def data_sha256(data: Mapping[str, Any]) -> str:
    """Hash of a task's ``data`` (canonical JSON): what push compares to skip unchanged tasks."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def region_id(start: int, end: int) -> str:
    """Stable id of a pre-annotated region: its offsets (unique within a passage)."""
    return f"a{start}-{end}"


def anchor_tasks(
    passages: pd.DataFrame, dictionary: pd.DataFrame, *, max_tasks: int, dictionary_version: str,
) -> list[dict[str, Any]]:
    """Review tasks for the forget passages that contain dictionary anchors.

    Args:
        passages: ``passages`` rows (``passage_id``, ``corpus``, ``text``); retain passages are
            ignored.
        dictionary: ``dictionary`` rows (``anchor``, ``kind``, ``translations``).
        max_tasks: at most this many tasks: passages with the most distinct anchors first, then
            by passage id (deterministic).
        dictionary_version: the pre-annotations' ``model_version`` (dictionary content hash).

    Returns:
        One dict per task: ``data`` (``key`` = ``passage_id``, ``passage_id``, ``text``,
        ``dictionary_version``), ``predictions`` (one, with a ``labels`` result per anchor
        occurrence and a ``textarea`` result with the same region ``id`` holding the
        translations joined by `` | ``), and ``anchors`` (region id -> dictionary key, ours only).
    """
    entries = {row.anchor: row for row in dictionary.itertuples(index=False)}
    matcher = AnchorMatcher(list(entries))
    forget = passages[passages["corpus"] == "forget"]
    found = []
    for passage_id, text in zip(forget["passage_id"], forget["text"]):
        spans = matcher.find(text)
        if spans:
            found.append((-len({s.anchor for s in spans}), passage_id, text, spans))
    found.sort(key=lambda item: (item[0], item[1]))

    tasks = []
    for _, passage_id, text, spans in found[:max_tasks]:
        result, anchors = [], {}
        for span in spans:
            entry = entries[span.anchor]
            rid = region_id(span.start, span.end)
            anchors[rid] = span.anchor
            result.append({
                "id": rid, "from_name": KIND_CONTROL, "to_name": TEXT_OBJECT, "type": "labels",
                "value": {"start": span.start, "end": span.end, "text": span.surface, "labels": [entry.kind]},
            })
            result.append({
                "id": rid, "from_name": TRANSLATION_CONTROL, "to_name": TEXT_OBJECT, "type": "textarea",
                "value": {"start": span.start, "end": span.end, "text": [SEPARATOR.join(entry.translations)]},
            })
        tasks.append({
            "data": {"key": passage_id, "passage_id": passage_id, "text": text,
                     "dictionary_version": dictionary_version},
            "predictions": [{"model_version": dictionary_version, "result": result}],
            "anchors": anchors,
        })
    return tasks


def build_anchor_tasks(root: Path, *, max_tasks: int = MAX_TASKS) -> list[dict[str, Any]]:
    """:func:`anchor_tasks` on the project's ``passages`` and ``dictionary`` datasets."""
    version = read_manifest("dictionary", root)["content_sha256"][:12]
    passages = read_dataset("passages", root, columns=["passage_id", "corpus", "text"])
    dictionary = read_dataset("dictionary", root, columns=["anchor", "kind", "translations"])
    return anchor_tasks(passages, dictionary, max_tasks=max_tasks, dictionary_version=version)


# --------------------------------------------------------------------------------------------
# Reading an export (pure)


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
class Annotation:
    """One submitted (not cancelled) annotation, validated."""

    task: str
    id: Any
    reviewer: str
    created_at: str
    result: tuple[dict[str, Any], ...]
    regions: tuple[Region, ...] = ()
    pushed: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The ``tasks.jsonl`` version of the task that the reviewer saw (data and pre-annotation)."""

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


@dataclass
class Export:
    """A parsed export: the tasks by key, their valid annotations, what was skipped and why."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    annotations: list[Annotation] = field(default_factory=list)
    cancelled: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def annotated(self) -> int:
        return len({a.task for a in self.annotations})


def split_translations(texts: Sequence[str]) -> tuple[str, ...] | None:
    """A text box's content as translations: joined, split on ``|``, stripped; ``None`` if empty."""
    parts = [part.strip() for text in texts for part in text.split("|")]
    parts = [part for part in parts if part]
    return tuple(parts) or None


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
    parse_result: Callable[[str, str, list[Any]], tuple[list[Region], list[str]]] | None = None,
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


def pushed_versions(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A ``tasks.jsonl`` record's current version, then the earlier ones annotations were made on."""
    return [record, *record.get("earlier", [])]


def model_version(record: Mapping[str, Any]) -> str | None:
    """The ``model_version`` of a pushed version's pre-annotation (``None`` without one)."""
    predictions = record.get("predictions") or [{}]
    return predictions[0].get("model_version")


def _seen_version(record: Mapping[str, Any], annotation: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # Label Studio stores on each annotation the prediction shown when it was made; its
    # model_version names the pushed version (none shown: the current one).
    seen = annotation.get("prediction")
    version = seen.get("model_version") if isinstance(seen, dict) else None
    if not version:
        return record
    return next((v for v in pushed_versions(record) if model_version(v) == version), None)


def _read_annotation(parsed: Export, key: str, record: Mapping[str, Any], annotation: Any,
                     users: Mapping[int, str], parse_result) -> None:
    if not isinstance(annotation, dict):
        parsed.problems.append(f"task {key}: malformed export: an annotation is not an object")
        return
    where = f"task {key} annotation {annotation.get('id')}"
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


def anchor_regions(key: str, text: Any, result: list[Any]) -> tuple[list[Region], list[str]]:
    """The labelled spans of an anchors annotation (with their text boxes), and every problem.

    A span must have integer offsets inside ``text``, ``value.text == text[start:end]`` and one
    label of the configuration (:data:`ANCHOR_LABELS`); a text box holds a list of strings.
    """
    if not isinstance(text, str):
        return [], ["malformed export: data.text is not a string"]
    spans, boxes, problems = [], defaultdict(list), []
    for number, item in enumerate(result):
        where = f"result #{number}"
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            problems.append(f"{where}: malformed export: a result without a 'value' object")
            continue
        kind, value = item.get("type"), item["value"]
        if kind == "labels":
            problem = _span_problem(text, value)
            labels = value.get("labels")
            if problem is None and not (isinstance(labels, list) and len(labels) == 1):
                problem = f"expected exactly one label, got {labels!r}"
            if problem is None and labels[0] not in ANCHOR_LABELS:
                problem = f"unknown label {labels[0]!r} (expected one of: {', '.join(ANCHOR_LABELS)})"
            if problem is None and item.get("from_name") != KIND_CONTROL:
                problem = f"labels from an unknown control {item.get('from_name')!r} (expected {KIND_CONTROL!r})"
            if problem is None and not value["text"].strip():
                problem = f"blank span at {value['start']}-{value['end']}"
            if problem:
                problems.append(f"{where}: {problem}")
            else:
                spans.append((item.get("id"), value))
        elif kind == "textarea":
            texts = value.get("text")
            if item.get("from_name") != TRANSLATION_CONTROL:
                problems.append(f"{where}: text box from an unknown control {item.get('from_name')!r}")
            elif not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
                problems.append(f"{where}: malformed export: text box value.text is not a list of strings")
            else:
                boxes[item.get("id")].extend(texts)
        else:
            problems.append(f"{where}: unknown result type {kind!r} (expected labels or textarea)")
    regions = [
        Region(rid, value["start"], value["end"], value["text"], value["labels"][0],
               split_translations(boxes[rid]) if rid is not None and rid in boxes else None)
        for rid, value in spans
    ]
    return sorted(regions, key=lambda r: (r.start, r.end, r.label)), problems


def _span_problem(text: str, value: Mapping[str, Any]) -> str | None:
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


# --------------------------------------------------------------------------------------------
# Anchor decisions (pure)


@dataclass(frozen=True)
class Proposed:
    """One pre-annotated anchor occurrence (from ``tasks.jsonl``)."""

    id: str
    start: int
    end: int
    anchor: str
    kind: str
    translations: tuple[str, ...] | None


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on one anchor of one task; ``translations`` only when edited."""

    action: str
    new_anchor: str | None = None
    kind: str | None = None
    translations: tuple[str, ...] | None = None

    @property
    def entry(self) -> tuple[str, ...]:
        """The voted value, translations aside."""
        return (self.action, self.new_anchor or "", self.kind or "")


def proposed_regions(task: Mapping[str, Any]) -> list[Proposed]:
    """The pre-annotated anchor occurrences of a ``tasks.jsonl`` record, in text order."""
    anchors = task.get("anchors", {})
    result = [r for p in task.get("predictions", []) for r in p["result"]]
    boxes = {r["id"]: split_translations(r["value"]["text"]) for r in result if r["type"] == "textarea"}
    regions = [
        Proposed(r["id"], r["value"]["start"], r["value"]["end"], anchors[r["id"]], r["value"]["labels"][0],
                 boxes.get(r["id"]))
        for r in result if r["type"] == "labels"
    ]
    return sorted(regions, key=lambda p: (p.start, p.end))


def _overlap(a: Region, p: Proposed) -> int:
    return min(a.end, p.end) - max(a.start, p.start)


def _edited(region: Region, proposed: Proposed | None) -> tuple[str, ...] | None:
    if region.translations is None or (proposed is not None and region.translations == proposed.translations):
        return None
    return region.translations


def anchor_decisions(regions: Sequence[Region], proposed: Sequence[Proposed]) -> dict[str, Decision]:
    """One annotation's decisions, by anchor (dictionary key, or the added term); rules in the
    module docstring."""
    deciding: dict[str, Region] = {}  # proposed id -> the region that decides it
    rejected: set[str] = set()
    used: set[int] = set()
    for number, region in enumerate(regions):
        if region.label == NOT_AN_ANCHOR:
            rejected.update(p.id for p in proposed if _overlap(region, p) > 0)
            used.add(number)
    for number, region in enumerate(regions):  # exact offsets first: they keep their region
        if number in used:
            continue
        for p in proposed:
            if (p.start, p.end) == (region.start, region.end) and p.id not in deciding:
                deciding[p.id] = region
                used.add(number)
                break
    adds: list[Region] = []
    for number, region in enumerate(regions):
        if number in used:
            continue
        free = [p for p in proposed if _overlap(region, p) > 0 and p.id not in deciding and p.id not in rejected]
        if free:
            best = max(free, key=lambda p: (_overlap(region, p), -p.start))
            deciding[best.id] = region
        else:
            adds.append(region)

    occurrences: dict[str, list[Decision]] = defaultdict(list)
    for p in proposed:
        if p.id in rejected:
            occurrences[p.anchor].append(Decision("reject"))
            continue
        region = deciding.get(p.id)
        if region is None:
            continue  # deleted: no decision
        edit = _edited(region, p)
        new_text = region.text.strip()
        kind = region.label
        if (region.start, region.end) == (p.start, p.end) or new_text == p.anchor:
            action = "accept" if kind == p.kind else "change_kind"
            occurrences[p.anchor].append(Decision(action, kind=kind if action == "change_kind" else None,
                                                  translations=edit))
        else:
            occurrences[p.anchor].append(Decision("change_span", new_anchor=new_text,
                                                  kind=kind if kind != p.kind else None, translations=edit))
    decisions = {anchor: _combine(found) for anchor, found in occurrences.items()}
    keys = {p.anchor for p in proposed}
    for region in adds:
        term = region.text.strip()
        if term not in decisions and term not in keys:  # a key is never added again
            decisions[term] = Decision("add", kind=region.label, translations=_edited(region, None))
    return decisions


def _combine(found: list[Decision]) -> Decision:
    """Several occurrences of one anchor: the first non-accept decision, else accept; the first
    translation edit."""
    chosen = next((d for d in found if d.action != "accept"), found[0])
    if chosen.action == "reject" or chosen.translations is not None:
        return chosen
    edit = next((d.translations for d in found if d.translations is not None), None)
    return Decision(chosen.action, chosen.new_anchor, chosen.kind, edit)


# --------------------------------------------------------------------------------------------
# Several reviewers (pure)


@dataclass(frozen=True)
class Conflict:
    """A tie between reviewers on one anchor of one task (``aspect``: decision or translation).

    ``votes`` maps each voted value (``"accept"``, ``"change_span -> Sherlock Holmes"``,
    ``"no decision"``, ``"translations: A | B"``, ``"translations as proposed"``) to its reviewers.
    """

    task: str
    anchor: str
    aspect: str
    votes: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "anchor": self.anchor, "aspect": self.aspect, "votes": self.votes}


@dataclass
class Review:
    """What an export says, normalised: the records of the output file and the review figures."""

    records: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    tasks: int = 0
    annotated: int = 0
    annotations: int = 0
    cancelled: int = 0
    reviewers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    task_keys: set[str] = field(default_factory=set)
    decision_field: str = "action"
    """The record field counted in the summary's ``decisions`` (``verdict``, ``grade`` elsewhere)."""

    def summary(self) -> dict[str, Any]:
        anchors = self.decision_field == "action"
        return {
            "tasks": self.tasks, "annotated": self.annotated, "annotations": self.annotations,
            "cancelled": self.cancelled, "reviewers": self.reviewers,
            "decisions": dict(Counter(str(r[self.decision_field]) for r in self.records)),
            "conflicts": [c.as_dict() for c in self.conflicts], "agreement": self.agreement,
            "disagreements": disagreements(self.records) if anchors else [],
        }


def disagreements(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anchors decided differently in different tasks: ``[{"anchor", "decisions": {decision:
    [tasks]}}]``. Not conflicts (each task has its majority), but the ``dictionary`` stage applies
    them in time order and refuses one that no longer fits: adjudicate them in Label Studio."""
    by_anchor: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in records:
        if record["action"] != "change_translation":
            value = (record["action"], record.get("new_anchor") or "", record.get("kind") or "")
            by_anchor[record["anchor"]][_describe(value)].add(record["task"])
    return [{"anchor": anchor, "decisions": {d: sorted(tasks) for d, tasks in sorted(found.items())}}
            for anchor, found in sorted(by_anchor.items()) if len(found) > 1]


def _describe(value: tuple[str, ...]) -> str:
    if value == _NONE:
        return "no decision"
    action, new_anchor, kind = value
    text = action + (f" -> {new_anchor}" if new_anchor else "")
    return text + (f" ({kind})" if kind and action != "accept" else "")


def _describe_translations(value: tuple[str, ...] | None) -> str:
    return "translations as proposed" if value is None else "translations: " + SEPARATOR.join(value)


def majority(votes: Mapping[str, Any]) -> tuple[Any, list[str]] | None:
    """The value with strictly more votes than any other and its voters (sorted); ``None`` on a tie.

    ``votes``: reviewer -> voted value (hashable).
    """
    counts = Counter(votes.values())
    ranked = counts.most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    winner = ranked[0][0]
    return winner, sorted(r for r, v in votes.items() if v == winner)


def _latest(annotations: Sequence[Annotation]) -> str:
    return max(annotations, key=lambda a: a.moment).created_at


def resolve_task(
    key: str, decisions: Mapping[str, Mapping[str, Decision]], annotations: Mapping[str, Annotation], *,
    source: str,
) -> tuple[list[dict[str, Any]], list[Conflict]]:
    """The corrections records and conflicts of one task (majority rule, module docstring).

    Args:
        decisions: reviewer -> anchor -> decision (every reviewer who annotated the task).
        annotations: reviewer -> their annotation of the task (for ``created_at``).
    """
    reviewers = sorted(decisions)
    records: list[dict[str, Any]] = []
    conflicts: list[Conflict] = []
    anchors = sorted({anchor for found in decisions.values() for anchor in found})
    for anchor in anchors:
        votes = {r: decisions[r][anchor].entry if anchor in decisions[r] else _NONE for r in reviewers}
        won = majority(votes)
        if won is None:
            conflicts.append(Conflict(key, anchor, "decision", _voters(votes, _describe)))
            continue
        value, voters = won
        if value == _NONE:
            continue
        decision = decisions[voters[0]][anchor]
        translations: tuple[str, ...] | None = None
        translators = voters
        if decision.action != "reject":
            edits = {r: decisions[r][anchor].translations for r in voters}
            won_edit = majority(edits)
            if won_edit is None:
                conflicts.append(Conflict(key, anchor, "translation", _voters(edits, _describe_translations)))
            else:
                translations, translators = won_edit

        def record(action: str, who: list[str], **fields: Any) -> dict[str, Any]:
            rec: dict[str, Any] = {"action": action, "anchor": anchor}
            rec.update({name: list(v) if isinstance(v, tuple) else v for name, v in fields.items() if v is not None})
            rec.update(reviewer=", ".join(who), created_at=_latest([annotations[r] for r in who]), task=key)
            if len(reviewers) > 1:
                rec["note"] = f"majority {len(who)} of {len(reviewers)} reviewers"
            rec["source"] = source
            return rec

        if decision.action in ("change_span", "add"):
            records.append(record(decision.action, voters, new_anchor=decision.new_anchor, kind=decision.kind,
                                  translations=translations))
            continue
        records.append(record(decision.action, voters, kind=decision.kind))
        if translations is not None:
            records.append(record("change_translation", translators, translations=translations))
    return records, conflicts


def _voters(votes: Mapping[str, Any], describe: Callable[[Any], str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for reviewer, value in sorted(votes.items()):
        grouped[describe(value)].append(reviewer)
    return dict(grouped)


def cohen_kappa(pairs: Sequence[tuple[Any, Any]]) -> float | None:
    """Cohen's kappa of two raters over ``[(value_a, value_b), ...]``; ``None`` when undefined
    (no items, or an expected agreement of 1)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[v] * second[v] for v in first) / (n * n)
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def agreement(decisions: Mapping[str, Mapping[str, Mapping[str, Decision]]]) -> dict[str, Any]:
    """Inter-annotator agreement on the decision values (rule in the module docstring).

    Args:
        decisions: task -> reviewer -> anchor -> decision.

    Returns:
        ``{"pairs": [{"reviewers": [a, b], "items", "agreement", "kappa"}], "items",
        "percent_agreement", "kappa"}``: agreement is a fraction (0-1), ``None`` when no task has
        two reviewers; ``kappa`` is the mean over the pairs where it is defined.
    """
    def items(a: str, b: str) -> list[tuple[Any, Any]]:
        found = []
        for by_reviewer in decisions.values():
            if a in by_reviewer and b in by_reviewer:
                for anchor in sorted(set(by_reviewer[a]) | set(by_reviewer[b])):
                    found.append(tuple(by_reviewer[r][anchor].entry if anchor in by_reviewer[r] else _NONE
                                       for r in (a, b)))
        return found

    return pooled_agreement(sorted({r for by_reviewer in decisions.values() for r in by_reviewer}), items)


def pooled_agreement(reviewers: Sequence[str], items: Callable[[str, str], list[tuple[Any, Any]]]) -> dict[str, Any]:
    """Percent agreement pooled over reviewer pairs and Cohen's kappa averaged over the pairs
    (shape of :func:`agreement`); ``items(a, b)`` gives the pair's ``(value_a, value_b)`` items."""
    pairs, agreed, total = [], 0, 0
    for a, b in combinations(reviewers, 2):
        found = items(a, b)
        if not found:
            continue
        same = sum(x == y for x, y in found)
        agreed, total = agreed + same, total + len(found)
        pairs.append({"reviewers": [a, b], "items": len(found), "agreement": same / len(found),
                      "kappa": cohen_kappa(found)})
    kappas = [p["kappa"] for p in pairs if p["kappa"] is not None]
    return {"pairs": pairs, "items": total, "percent_agreement": agreed / total if total else None,
            "kappa": sum(kappas) / len(kappas) if kappas else None}


def latest_annotations(annotations: Sequence[Annotation]) -> dict[str, dict[str, Annotation]]:
    """task -> reviewer -> their latest annotation of the task (a reviewer's vote)."""
    latest: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for annotation in annotations:
        mine = latest[annotation.task].get(annotation.reviewer)
        if mine is None or (annotation.moment, str(annotation.id)) > (mine.moment, str(mine.id)):
            latest[annotation.task][annotation.reviewer] = annotation
    return latest


def _order(record: Mapping[str, Any]) -> tuple:
    return (datetime.fromisoformat(record["created_at"]), record["task"], record["anchor"], record["action"])


def normalise_anchor_export(
    export: Any, tasks: Mapping[str, Mapping[str, Any]], *, source: str, users: Mapping[int, str] | None = None,
) -> Review:
    """The ``corrections_v1`` records of an anchors export, with conflicts and agreement.

    Args:
        export: the parsed Label Studio JSON export.
        tasks: ``tasks.jsonl`` by key.
        source: the snapshot file name, written into every record.
        users: user id -> e-mail (reviewers' names).

    ``Review.problems`` lists every validation problem; the records are then incomplete and
    must not be written (:func:`pull` refuses).
    """
    parsed = read_export(export, tasks, users=users, parse_result=anchor_regions)
    latest = latest_annotations(parsed.annotations)
    decisions: dict[str, dict[str, dict[str, Decision]]] = {}
    review = Review(tasks=len(parsed.tasks), annotated=parsed.annotated, annotations=len(parsed.annotations),
                    cancelled=parsed.cancelled, problems=parsed.problems, task_keys=set(parsed.tasks))
    for key in sorted(latest):
        decisions[key] = {r: anchor_decisions(a.regions, proposed_regions(a.pushed)) for r, a in latest[key].items()}
        records, conflicts = resolve_task(key, decisions[key], latest[key], source=source)
        review.records.extend(records)
        review.conflicts.extend(conflicts)
    review.records.sort(key=_order)
    review.reviewers = sorted({a.reviewer for a in parsed.annotations})
    review.agreement = agreement(decisions)
    return review


# --------------------------------------------------------------------------------------------
# The registry


def _load_corrections(path: Path) -> list[dict[str, Any]]:
    return [c.as_record() for c in load_corrections(path)]


def _verdicts(name: str) -> Callable[..., Any]:
    """A function of :mod:`pipeline.review.verdicts`, imported when called (it imports this module)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        from pipeline.review import verdicts as review_verdicts

        return getattr(review_verdicts, name)(*args, **kwargs)
    call.__name__ = name
    return call


PROJECTS: dict[str, ReviewProject] = {
    project.name: project for project in (
        ReviewProject("anchors", build_anchor_tasks, normalise_anchor_export, "corrections.jsonl",
                      _load_corrections, record_problems, "task"),
        ReviewProject("linguistic", _verdicts("build_linguistic_tasks"), _verdicts("normalise_linguistic_export"),
                      "decisions.jsonl", _verdicts("load_decision_records"), _verdicts("decision_problems"), "key"),
        ReviewProject("evaluation", _verdicts("build_evaluation_tasks"), _verdicts("normalise_evaluation_export"),
                      "grades.jsonl", _verdicts("load_grade_records"), _verdicts("grade_problems"), "key",
                      _verdicts("familiarity_report")),
    )
}


def review_project(name: str) -> ReviewProject:
    """The registered project called ``name``; an unknown name is a :class:`ReviewError`."""
    try:
        return PROJECTS[name]
    except KeyError:
        raise ReviewError(f"unknown review project {name!r} (known: {', '.join(PROJECTS)})") from None


# --------------------------------------------------------------------------------------------
# Files under labels/<project>/


def read_tasks(path: Path) -> dict[str, dict[str, Any]]:
    """``tasks.jsonl`` by key (``{}`` when absent); a malformed line is a :class:`ReviewError`."""
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = record["key"]
            if record["data"]["key"] != key or not isinstance(record["data_sha256"], str):
                raise ValueError("key and data.key differ")
        except (ValueError, KeyError, TypeError) as exc:
            raise ReviewError(f"{path}:{number}: not a task record ({exc}); restore it from git") from None
        records[key] = record
    return records


def write_tasks(path: Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``tasks.jsonl`` atomically, sorted by key (stable diffs)."""
    lines = [json.dumps(records[key], ensure_ascii=False, sort_keys=False) for key in sorted(records)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def task_record(task: Mapping[str, Any]) -> dict[str, Any]:
    record = {"key": task["data"]["key"], "data_sha256": data_sha256(task["data"])}
    record.update(task)
    return record


def _studio_task(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in ("data", "predictions") if name in record}


def _snapshot_name(folder: Path, now: datetime) -> str:
    base = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, number = f"{base}.json", 1
    while (folder / name).exists():
        number += 1
        name = f"{base}-{number}.json"
    return name


def merge_corrections(previous: Sequence[Mapping[str, Any]], pulled: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The new corrections file: hand-written records (``source`` not a snapshot) as they were,
    then the pulled ones; a pulled record identical to an earlier pulled one but for ``source``
    keeps the earlier ``source`` (so a pull changes only the lines whose decisions changed)."""
    kept = [dict(r) for r in previous if not _SNAPSHOT_NAME.match(str(r.get("source") or ""))]
    earlier = {
        _canonical({k: v for k, v in r.items() if k != "source"}): r["source"]
        for r in previous if _SNAPSHOT_NAME.match(str(r.get("source") or ""))
    }
    merged = []
    for record in pulled:
        record = dict(record)
        record["source"] = earlier.get(_canonical({k: v for k, v in record.items() if k != "source"}), record["source"])
        merged.append(record)
    return kept + merged


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# The server


def _base_url(client: Any) -> str:
    wrapper = getattr(client, "_client_wrapper", None)
    try:
        return str(wrapper.get_base_url())
    except AttributeError:
        return "the Label Studio server"


@contextmanager
def _server(client: Any, what: str) -> Iterator[None]:
    """Turn the SDK's transport and HTTP errors into a :class:`ReviewError` (no credentials)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    url = _base_url(client)
    try:
        yield
    except ApiError as exc:
        body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
        hint = " (check LABEL_STUDIO_API_KEY)" if exc.status_code in (401, 403) else ""
        raise ReviewError(f"Label Studio at {url}: {what} failed: HTTP {exc.status_code}{hint}: {body[:500]}") from None
    except httpx.HTTPError as exc:
        raise ReviewError(
            f"cannot reach Label Studio at {url} ({what}): {type(exc).__name__}: {exc or 'no answer'}; "
            "is the server running? (`whp studio status`, `whp studio start`)"
        ) from None


def _find_project(client: Any, title: str) -> Any | None:
    with _server(client, f"listing projects to find {title!r}"):
        found = [p for p in client.projects.list(title=title) if p.title == title]
    if len(found) > 1:
        raise ReviewError(f"Label Studio has {len(found)} projects titled {title!r} (ids {[p.id for p in found]}): "
                          "delete or rename all but one")
    return found[0] if found else None


def find_project(client: Any, title: str) -> int | None:
    """The id of the server project titled exactly ``title`` (``None`` if there is none)."""
    found = _find_project(client, title)
    return None if found is None else found.id


def _ensure_project(client: Any, project: ReviewProject, config: str) -> tuple[int, str | None]:
    """The project's id and model version, created or its configuration brought up to date."""
    found = _find_project(client, project.title)
    if found is None:
        with _server(client, f"creating project {project.title!r}"):
            created = client.projects.create(title=project.title, label_config=config,
                                             description=f"whp review: {project.name} (labels/{project.name})")
        return created.id, None
    if found.label_config != config:
        with _server(client, f"updating the configuration of {project.title!r}"):
            client.projects.update(id=found.id, label_config=config)
    return found.id, found.model_version or None


def _server_tasks(client: Any, pid: int) -> dict[str, tuple[int, str, int]]:
    """key -> (task id, data hash, annotations) of the project's tasks."""
    found: dict[str, tuple[int, str, int]] = {}
    with _server(client, "listing tasks"):
        for task in client.tasks.list(project=pid, fields="task_only"):
            data = task.data or {}
            key = data.get("key")
            if not isinstance(key, str):
                raise ReviewError(f"task {task.id} of project {pid} has no data.key: not pushed by `whp review push`; "
                                  "delete it in Label Studio")
            if key in found:
                raise ReviewError(f"task key {key!r} is on two tasks of project {pid} (ids {found[key][0]} and "
                                  f"{task.id}): delete one in Label Studio")
            done = (task.total_annotations or 0) + (task.cancelled_annotations or 0)
            found[key] = (task.id, data_sha256(data), done)
    return found


def push(project: str, root: Path | str, client: Any, *, max_tasks: int = MAX_TASKS,
         batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Create or update the server project ``whp-<project>`` and its tasks, idempotently by key.

    A new key is imported (in batches of ``batch_size``), an unchanged task (same data hash) is
    skipped, a changed one is updated in place (data and pre-annotation). When a changed task
    already has annotations, ``tasks.jsonl`` keeps the version they were made on (``earlier``)
    so that pull compares them with what their reviewers saw. The project's model version
    (which pre-annotations Label Studio shows) becomes the tasks' ``model_version``.

    Returns:
        ``{"project_id", "created", "updated", "unchanged", "untracked"}``: counts of tasks
        imported, updated, left as they were; ``untracked`` lists keys on the server that
        ``tasks.jsonl`` does not describe (pull will refuse them).
    """
    spec = review_project(project)
    root = Path(root)
    config_path = spec.config_path(root)
    try:
        config = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"{config_path}: cannot read the review configuration: {exc.strerror}") from None
    built = [task_record(task) for task in spec.build_tasks(root, max_tasks=max_tasks)]
    tasks_path = spec.folder(root) / TASKS_FILE
    tracked = read_tasks(tasks_path)

    pid, current_version = _ensure_project(client, spec, config)
    on_server = _server_tasks(client, pid)
    records: dict[str, dict[str, Any]] = {}
    create, update, unchanged = [], [], []
    for record in built:
        key = record["key"]
        old = tracked.get(key)
        if key not in on_server:
            create.append(record)
        elif on_server[key][1] == record["data_sha256"]:
            unchanged.append(key)
            if old is not None and old["data_sha256"] == record["data_sha256"] and old.get("earlier"):
                record["earlier"] = old["earlier"]
        else:
            update.append(record)
            if on_server[key][2] and old is not None and old["data_sha256"] == on_server[key][1]:
                record["earlier"] = _earlier(old)
        records[key] = record
    untracked = []
    for key, (_, sha, _) in on_server.items():
        if key not in records:
            if key in tracked and tracked[key]["data_sha256"] == sha:
                records[key] = tracked[key]
            else:
                untracked.append(key)
    # Written before the server changes: after a push that fails halfway, the file still
    # describes every task that may be there (pull checks each task's data against it).
    write_tasks(tasks_path, records)

    progress = tqdm(total=len(create) + len(update), desc=f"push {spec.title}", unit="task")
    with progress:
        for start in range(0, len(create), batch_size):
            batch = create[start:start + batch_size]
            with _server(client, f"importing tasks {start + 1}-{start + len(batch)} of {len(create)}"):
                client.projects.import_tasks(id=pid, request=[_studio_task(r) for r in batch])
            progress.update(len(batch))
        for record in update:
            task_id = on_server[record["key"]][0]
            with _server(client, f"updating task {record['key']}"):
                client.tasks.update(id=str(task_id), data=record["data"])
                for old_prediction in client.predictions.list(task=task_id):
                    client.predictions.delete(id=old_prediction.id)
                for prediction in record.get("predictions", []):
                    client.predictions.create(task=task_id, result=prediction["result"],
                                              model_version=prediction.get("model_version"))
            progress.update(1)
    # Label Studio pre-labels with the predictions of the project's model version only (and
    # refuses a version no prediction has yet): set it once the predictions are there.
    versions = {model_version(r) for r in built} - {None}
    if len(versions) == 1 and versions != {current_version}:
        with _server(client, f"setting the model version of {spec.title!r}"):
            client.projects.update(id=pid, model_version=versions.pop())
    return {"project_id": pid, "created": len(create), "updated": len(update), "unchanged": len(unchanged),
            "untracked": sorted(untracked)}


def _earlier(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The versions to keep when ``record`` is replaced: itself (without history), then its own
    earlier ones, one per model version."""
    versions, seen = [], set()
    for version in pushed_versions(record):
        entry = {k: v for k, v in version.items() if k not in ("earlier", "key")}
        if model_version(entry) not in seen:
            seen.add(model_version(entry))
            versions.append(entry)
    return versions


def _export(client: Any, spec: ReviewProject) -> tuple[bytes, Any, dict[int, str]]:
    pid = find_project(client, spec.title)
    if pid is None:
        raise ReviewError(f"Label Studio at {_base_url(client)} has no project {spec.title!r}: "
                          f"run `whp review push {spec.name}` first")
    with _server(client, f"exporting {spec.title!r}"):
        raw = b"".join(client.projects.exports.download_sync(id=pid, export_type="JSON", download_all_tasks=True))
    try:
        export = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReviewError(f"malformed export of {spec.title!r}: not UTF-8 JSON ({exc})") from None
    users: dict[int, str] = {}
    try:
        with _server(client, "listing users"):
            users = {u.id: u.email for u in client.users.list() if getattr(u, "email", None)}
    except ReviewError:
        pass  # reviewers are then named by their ids
    return raw, export, users


def _problems_error(spec: ReviewProject, problems: Sequence[str], action: str) -> ReviewError:
    head = f"{action} {spec.title}: {len(problems)} problem(s) in the export; nothing was written"
    lines = [f"  - {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return ReviewError("\n".join([head, *lines]))


def pull(project: str, root: Path | str, client: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """Export the project, validate everything, then write the snapshot and the normalised file.

    Returns:
        :meth:`Review.summary` plus ``snapshot`` and ``output`` (paths relative to ``root``) and
        ``records`` (lines written, hand-written ones included).
    """
    spec = review_project(project)
    root = Path(root)
    folder = spec.folder(root)
    tracked = read_tasks(folder / TASKS_FILE)
    raw, export, users = _export(client, spec)
    snapshots = folder / SNAPSHOTS_DIR
    name = _snapshot_name(snapshots, now or datetime.now(timezone.utc))
    review = spec.normalise(export, tracked, source=name, users=users)
    if review.problems:
        raise _problems_error(spec, review.problems, "pull")
    output = folder / spec.output
    previous = spec.load_records(output)
    task = spec.task_field
    lost = sorted({r[task] for r in previous if _SNAPSHOT_NAME.match(str(r.get("source") or ""))
                   and r.get(task) and r[task] not in review.task_keys})
    if lost:
        raise ReviewError(f"pull {spec.title}: {output.relative_to(root)} holds pulled decisions on {len(lost)} task(s) "
                          f"that are not on {_base_url(client)} ({', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}): "
                          "a different or reset server? Pull from the server that holds them, or remove those "
                          "lines by hand; nothing was written")
    records = merge_corrections(previous, review.records)
    for number, record in enumerate(records, start=1):
        if problems := spec.record_problems(record):  # a bug here, never the reviewers' fault
            raise ReviewError(f"pull {spec.title}: record {number} would be invalid ({'; '.join(problems)}): {record}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # pragma: no cover - json.loads above decoded it
        raise ReviewError(f"malformed export: {exc}") from None
    atomic_write_text(snapshots / name, text)
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary = review.summary()
    summary.update(snapshot=str((snapshots / name).relative_to(root)), output=str(output.relative_to(root)),
                   records=len(records))
    if spec.report is not None:
        summary.update(spec.report(records))
    return summary


def status(project: str, root: Path | str, client: Any) -> dict[str, Any]:
    """Where the review stands, from a fresh export (nothing written).

    Returns:
        ``{"project", "tasks", "tracked", "annotated", "annotations", "cancelled", "reviewers",
        "conflicts", "agreement", "decisions", "problems"}`` (conflicts, agreement and decisions
        only for projects with a normaliser; ``problems``: what pull would refuse).
    """
    spec = review_project(project)
    root = Path(root)
    tracked = read_tasks(spec.folder(root) / TASKS_FILE)
    _, export, users = _export(client, spec)
    if spec.normalise is not None:
        review = spec.normalise(export, tracked, source="status", users=users)
    else:
        parsed = read_export(export, tracked, users=users)
        review = Review(tasks=len(parsed.tasks), annotated=parsed.annotated, annotations=len(parsed.annotations),
                        cancelled=parsed.cancelled, problems=parsed.problems,
                        reviewers=sorted({a.reviewer for a in parsed.annotations}))
    summary = {"project": spec.title, "tracked": len(tracked), **review.summary(), "problems": review.problems}
    if spec.report is not None:
        summary.update(spec.report(review.records))
    return summary
