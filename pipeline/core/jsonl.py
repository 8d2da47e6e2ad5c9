"""The project's one JSON Lines parser, and its JSON document parser (pure: bytes in, values out).

JSON Lines here: UTF-8, one JSON *object* a line, blank lines skipped, ``\\r\\n`` line ends fine,
a UTF-8 BOM before the first line ignored. Two checks ``json`` does not make:

* a key twice in one object is refused (``json`` would silently keep the last value, and a
  record would lose a field);
* nesting deeper than :data:`MAX_DEPTH` is refused before parsing (``json`` would raise
  ``RecursionError`` on a line nested 100,000 deep; nothing this project reads nests beyond 10).

Every problem names the source, the line and what is wrong. :func:`parse_jsonl` never raises
for a bad line: it returns each line with its record or its problem, and the caller decides
(the corpus reader keeps bad lines as rejects; the reviewers' files refuse the whole file).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted (well below Python's recursion limit)."""
BOM = b"\xef\xbb\xbf"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonError(PipelineError):
    """A JSON document cannot be read; the message names the source and the problem."""


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSON Lines text: its record (a dict) or its problem.

    ``number`` is 1-based; ``offset`` is the byte offset of the line's first byte in the data.
    """

    source: str
    number: int
    offset: int
    raw: bytes = field(repr=False)
    record: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def where(self) -> str:
        """``<source>:<line>``."""
        return f"{self.source}:{self.number}"

    @property
    def text(self) -> str:
        """The line as text (undecodable bytes replaced): what a rejects table keeps."""
        return self.raw.decode("utf-8", "replace")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages (``object``, ``array``, ``number``...)."""
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


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings ignored)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _too_deep(text: str, max_depth: int) -> bool:
    # Counting openers is cheap (C speed); only a text with that many is scanned properly.
    return text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth


class _Duplicates(list):
    """The object keys seen twice while one text is decoded."""

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                self.append(key)
            found[key] = value
        return found


def _decode(text: str, *, max_depth: int) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, problem)``."""
    if _too_deep(text, max_depth):
        return None, f"nested deeper than {max_depth} levels of arrays and objects ({nesting_depth(text)})"
    duplicates = _Duplicates()
    try:
        value = json.loads(text, object_pairs_hook=duplicates.hook)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        return None, f"invalid JSON: {exc.msg} ({where})"
    if duplicates:
        return None, "; ".join(f"duplicate field {key!r}" for key in dict.fromkeys(duplicates))
    return value, None


def parse_jsonl(data: bytes, *, source: str, max_depth: int = MAX_DEPTH) -> list[JsonLine]:
    """Every non-blank line of a JSON Lines text, in order, with its record or its problem.

    Args:
        data: the whole text as bytes (a BOM at its start is ignored).
        source: how the text is named in problems (a file path).
        max_depth: deepest nesting accepted.

    A line's problem is one of: not valid UTF-8 (with the byte offset in ``data``), invalid
    JSON (with the column), nested too deep, a duplicate key, not a JSON object.
    """
    lines: list[JsonLine] = []
    offset = len(BOM) if data.startswith(BOM) else 0
    for number, raw in enumerate(data[offset:].split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = (f"not valid UTF-8 at byte offset {start + exc.start} "
                       f"(byte 0x{raw[exc.start]:02x}, column {exc.start + 1})")
            lines.append(JsonLine(source, number, start, raw, problem=problem))
            continue
        value, problem = _decode(text, max_depth=max_depth)
        if problem is None and not isinstance(value, dict):
            problem = f"expected a JSON object, got {json_type(value)}"
        lines.append(JsonLine(source, number, start, raw, record=value if problem is None else None, problem=problem))
    return lines


def parse_json(data: bytes | str, *, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """One JSON document (any value), with the checks of :func:`parse_jsonl`.

    Raises:
        JsonError: ``<source>: <problem>`` (not UTF-8, invalid JSON, too deep, a duplicate key).
    """
    if isinstance(data, bytes):
        try:
            data = data.removeprefix(BOM).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(f"{source}: not valid UTF-8 at byte offset {exc.start}") from None
    value, problem = _decode(data, max_depth=max_depth)
    if problem is not None:
        raise JsonError(f"{source}: {problem}")
    return value
