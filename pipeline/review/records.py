"""Reading the reviewers' JSON Lines files under ``labels/`` (linguistic decisions, evaluation
grades): one validated JSON object a line, every problem of the file reported at once as
``<file>:<line>: <problem>``.

A missing file holds no records. Blank lines are ignored; a UTF-8 BOM is not part of the first
record; a duplicate key in an object is an error (``json`` would keep the last one silently).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def string_problem(name: str, value: Any) -> str | None:
    """A required non-empty string field."""
    if not isinstance(value, str):
        return f"field {name!r} must be a string, got {json_type(value)}"
    if not value.strip():
        return f"field {name!r} is empty"
    return None


def time_problem(name: str, value: Any) -> str | None:
    """An ISO 8601 time with a timezone."""
    if problem := string_problem(name, value):
        return problem
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"field {name!r} is not an ISO 8601 time: {value!r}"
    if moment.tzinfo is None:
        return f"field {name!r} has no timezone: {value!r} (add 'Z' or '+01:00')"
    return None


def int_problem(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> str | None:
    """An integer (not a boolean) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"field {name!r} must be an integer, got {json_type(value)}"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"field {name!r} is {value}, outside {low}..{high if high is not None else ''}"
    return None


def field_problems(record: Mapping[str, Any], known: tuple[str, ...], required: tuple[str, ...]) -> list[str]:
    """Unknown and missing fields (``None`` counts as absent)."""
    problems = [f"unknown field {key!r} (known: {', '.join(known)})" for key in record if key not in known]
    problems += [f"missing required field {name!r}" for name in required if record.get(name) is None]
    return problems


def _unique_keys(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            duplicates.append(key)
        record[key] = value
    return record


def read_records(
    path: Path | str, *, check: Callable[[Mapping[str, Any]], list[str]], what: str,
    error: type[PipelineError] = PipelineError,
) -> list[tuple[int, dict[str, Any]]]:
    """The valid records of a JSON Lines file as ``[(line number, record), ...]``, in file order.

    Args:
        path: the file; missing means no records.
        check: ``record -> problems`` (``[]`` when valid).
        what: how the file is named in the error (``"linguistic decisions file (format ...)"``).
        error: the exception raised, with every problem of the file, when any line is invalid.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise error(f"{path}: not a file")
    try:
        data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append((number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"))
            continue
        duplicates: list[str] = []
        try:
            record = json.loads(text, object_pairs_hook=lambda pairs, seen=duplicates: _unique_keys(pairs, seen))
        except json.JSONDecodeError as exc:
            problems.append((number, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append((number, f"expected a JSON object, got {json_type(record)}"))
            continue
        found = [f"duplicate field {key!r}" for key in duplicates] + check(record)
        if found:
            problems.extend((number, problem) for problem in found)
            continue
        records.append((number, record))
    if problems:
        lines = len({line for line, _ in problems})
        head = f"{path}: {len(problems)} problem(s) on {lines} line(s) of the {what}"
        raise error("\n".join([head, *(f"  - {path}:{line}: {problem}" for line, problem in problems)]))
    return records
