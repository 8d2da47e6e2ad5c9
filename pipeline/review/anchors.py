"""The ``anchors`` review (review 1): tasks with the dictionary's anchors pre-annotated, and the
normaliser that turns reviewers' annotations into ``corrections_v1`` records.

Tasks: forget passages with the dictionary's anchor spans pre-annotated (predictions whose
``model_version`` is the dictionary version, so a new dictionary updates every task); each
region has a text box pre-filled with the proposed translations joined by `` | ``. Reviewers
fix spans, add missed terms, reject false ones (label ``not an anchor``) and edit translations.
The pulled records go to ``labels/anchors/corrections.jsonl``, which the ``dictionary`` stage
applies (:mod:`pipeline.review.corrections`).

Normalisation, per annotation, against the pre-annotated regions the reviewer saw:

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
non-``accept`` decision in text order, else ``accept``. A text box whose translations (split on
``|``, stripped, blanks dropped) differ from the proposed ones is an edit: ``change_translation``
beside ``accept``/``change_kind``, the ``translations`` of a ``change_span`` or ``add``. An
emptied box is no edit. Several reviewers vote (:mod:`pipeline.review.voting`); every record
carries ``task`` (the key) and ``source`` (the snapshot).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.review.export import Region, item_problem, read_export, span_problem
from pipeline.review.projects import MAX_TASKS, Workflow
from pipeline.review.records import Correction
from pipeline.review.voting import SEPARATOR, Decision, Review, agreement, latest_annotations, resolve_task, started_review
from pipeline.store import read_dataset, read_manifest
from schemas.anchors import KINDS

NOT_AN_ANCHOR = "not an anchor"
ANCHOR_LABELS = (*KINDS, NOT_AN_ANCHOR)
KIND_CONTROL = "kind"
TRANSLATION_CONTROL = "translation"
TEXT_OBJECT = "text"


# --------------------------------------------------------------------------------------------
# Tasks


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
# Reading an annotation


def split_translations(texts: Sequence[str]) -> tuple[str, ...] | None:
    """A text box's content as translations: joined, split on ``|``, stripped; ``None`` if empty."""
    parts = [part.strip() for text in texts for part in text.split("|")]
    parts = [part for part in parts if part]
    return tuple(parts) or None


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
        if problem := item_problem(item):
            problems.append(f"{where}: {problem}")
            continue
        kind, value = item.get("type"), item["value"]
        if kind == "labels":
            problem = span_problem(text, value)
            labels = value.get("labels")
            if problem is None and not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
                problem = f"expected exactly one label (a string) in value.labels, got {labels!r}"
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


# --------------------------------------------------------------------------------------------
# Decisions of one annotation


@dataclass(frozen=True)
class Proposed:
    """One pre-annotated anchor occurrence (from ``tasks.jsonl``)."""

    id: str
    start: int
    end: int
    anchor: str
    kind: str
    translations: tuple[str, ...] | None


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
# The export


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
    must not be written (:func:`pipeline.review.sync.pull` refuses).
    """
    parsed = read_export(export, tasks, users=users, parse_result=anchor_regions)
    latest = latest_annotations(parsed.annotations)
    decisions: dict[str, dict[str, dict[str, Decision]]] = {}
    review = started_review(parsed, decision_field="action")
    for key in sorted(latest):
        decisions[key] = {r: anchor_decisions(a.regions, proposed_regions(a.pushed)) for r, a in latest[key].items()}
        records, conflicts = resolve_task(key, decisions[key], latest[key], source=source)
        review.records.extend(records)
        review.conflicts.extend(conflicts)
    review.records.sort(key=_order)
    review.agreement = agreement(decisions)
    return review


WORKFLOW = Workflow(build_tasks=build_anchor_tasks, normalise=normalise_anchor_export, record=Correction)
