"""``labels/<project>/tasks.jsonl``: our copy of every task on the server.

One JSON object a line, sorted by key: ``{"key", "data_sha256", "data", "predictions", ...}``;
projects may keep more (anchors: ``anchors``, each pre-annotated region id -> its dictionary
key, since the export gives prediction ids only). ``earlier`` (only on tasks updated after they
were annotated) keeps the versions those annotations were made on: each annotation is compared
with the pre-annotation its reviewer saw, selected by the ``model_version`` Label Studio stores
with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.jsonl import parse_jsonl
from pipeline.review.projects import ReviewError
from pipeline.store import atomic_write_text


def data_sha256(data: Mapping[str, Any]) -> str:
    """Hash of a task's ``data`` (canonical JSON): what push compares to skip unchanged tasks."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_record(task: Mapping[str, Any]) -> dict[str, Any]:
    """A built task (``{"data": {"key", ...}, "predictions": [...], ...}``) as a ``tasks.jsonl`` record."""
    record = {"key": task["data"]["key"], "data_sha256": data_sha256(task["data"])}
    record.update(task)
    return record


def studio_task(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the server gets of a record: its ``data`` and ``predictions``."""
    return {name: record[name] for name in ("data", "predictions") if name in record}


def read_tasks(path: Path) -> dict[str, dict[str, Any]]:
    """``tasks.jsonl`` by key (``{}`` when absent); a malformed line is a :class:`ReviewError`."""
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = {}
    for line in parse_jsonl(path.read_bytes(), source=str(path)):
        record = line.record or {}
        problem = line.problem or _task_problem(record)
        if problem:
            raise ReviewError(f"{line.where}: not a task record ({problem}); restore it from git")
        records[record["key"]] = record
    return records


def _task_problem(record: Mapping[str, Any]) -> str | None:
    key, data = record.get("key"), record.get("data")
    if not isinstance(key, str) or not key:
        return "no 'key' string"
    if not isinstance(data, dict) or data.get("key") != key:
        return "'data.key' differs from 'key'"
    if not isinstance(record.get("data_sha256"), str):
        return "no 'data_sha256' string"
    return None


def write_tasks(path: Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``tasks.jsonl`` atomically, sorted by key (stable diffs)."""
    lines = [json.dumps(records[key], ensure_ascii=False, sort_keys=False) for key in sorted(records)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def pushed_versions(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A ``tasks.jsonl`` record's current version, then the earlier ones annotations were made on."""
    return [record, *record.get("earlier", [])]


def model_version(record: Mapping[str, Any]) -> str | None:
    """The ``model_version`` of a pushed version's pre-annotation (``None`` without one)."""
    predictions = record.get("predictions") or [{}]
    return predictions[0].get("model_version")


def earlier_versions(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The versions to keep when ``record`` is replaced: itself (without history), then its own
    earlier ones, one per model version."""
    versions, seen = [], set()
    for version in pushed_versions(record):
        entry = {k: v for k, v in version.items() if k not in ("earlier", "key")}
        if model_version(entry) not in seen:
            seen.add(model_version(entry))
            versions.append(entry)
    return versions
