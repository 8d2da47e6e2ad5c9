"""Validated JSON Lines records: the pydantic base of the reviewers' file formats
(:mod:`pipeline.review.records`), its problem messages, and the one reader of their files.

A file is JSON Lines, UTF-8, one JSON object a line; blank lines are ignored, a UTF-8 BOM is not
part of the first record, a missing file holds no records. Strict JSON types (no ``"3"`` for 3,
no ``true`` for 1), no unknown or duplicate key; ``null`` counts as absent for optional fields.
:func:`read_records` reports every problem of a file at once, each as ``<file>:<line>:
<problem>``. Relations between fields are checked on the raw record too
(:meth:`ReviewRecord.relation_problems`), so that a line with several problems lists them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, PrivateAttr, TypeAdapter, ValidationError, model_validator,
)

from pipeline.core.jsonl import json_type, parse_jsonl
from pipeline.errors import PipelineError


class Problem(ValueError):
    """A validator's complete message (a plain ``ValueError`` is a predicate: ``"is empty"``,
    prefixed with the field it is about)."""


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    return value


def _key(value: str) -> str:
    _text(value)
    if value != value.strip():
        raise ValueError(f"has leading or trailing blanks ({value!r})")
    return value


def _time(value: str) -> str:
    _text(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"has no timezone: {value!r} (add 'Z' or '+01:00')")
    return value


def natural(value: int) -> int:
    """Refuses a negative integer (positions, token ids)."""
    if value < 0:
        raise ValueError(f"is {value}, outside 0..")
    return value


def one_of(what: str, allowed: tuple[str, ...]):
    """A validator refusing a value outside ``allowed``: ``unknown <what> 'x' (expected one of: ...)``."""
    def check(value: str) -> str:
        if value not in allowed:
            raise Problem(f"unknown {what} {value!r} (expected one of: {', '.join(allowed)})")
        return value
    return check


Text = Annotated[str, AfterValidator(_text)]
"""A non-empty string."""
Key = Annotated[str, AfterValidator(_key)]
"""A non-empty string without blanks around it (dictionary keys, translations)."""
Time = Annotated[str, AfterValidator(_time)]
"""An ISO 8601 time with a timezone."""
Natural = Annotated[int, AfterValidator(natural)]
"""An integer >= 0."""

_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "a boolean",
             "list_type": "a list", "tuple_type": "a list"}

Record = TypeVar("Record", bound="ReviewRecord")


def _message(error: Mapping[str, Any], *, known: tuple[str, ...], expected: Mapping[str, str]) -> str:
    """A pydantic error as this project's problem text: ``field 'x' must be a string, got number``."""
    loc, kind, value = error["loc"], error["type"], error["input"]
    name = str(loc[0])
    where = f"field {name!r}" if len(loc) == 1 else f"{name}[{loc[1]}]"
    if kind == "value_error":
        cause = error["ctx"]["error"]
        return str(cause) if isinstance(cause, Problem) else f"{where} {cause}"
    if kind == "extra_forbidden":
        return f"unknown field {name!r} (known: {', '.join(known)})"
    if kind == "missing" or (value is None and len(loc) == 1):
        return f"missing required field {name!r}"
    wanted = (expected.get(name) if len(loc) == 1 else None) or _EXPECTED.get(kind, error["msg"])
    return f"{where} must be {wanted}, got {json_type(value)}"


def _listed(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _filled(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("is an empty list")
    return value


Translations = Annotated[tuple[Key, ...], BeforeValidator(_listed), AfterValidator(_filled)]
"""A non-empty list of keys (JSON array), kept as a tuple."""
_TRANSLATIONS = TypeAdapter(Translations, config=ConfigDict(strict=True))


def translations_problems(value: Any) -> list[str]:
    """Every problem of a list of translations (``[]`` when valid), as in a correction's ``translations``."""
    try:
        _TRANSLATIONS.validate_python(value)
    except ValidationError as exc:
        return [_message({**error, "loc": ("translations", *error["loc"])}, known=(),
                         expected={"translations": "a list of strings"}) for error in exc.errors()]
    return []


class ReviewRecord(BaseModel):
    """What every record of the reviewers' files has; subclasses add their format's fields.

    Strict JSON types (no ``"3"`` for 3, no ``true`` for 1), no unknown field, immutable. A
    record read from a file knows where it came from (:attr:`file`, :attr:`line`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    FORMAT: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""
    """How the file is named in errors."""
    ERROR: ClassVar[type[PipelineError]] = PipelineError
    EXPECTED: ClassVar[dict[str, str]] = {}
    """Field -> what its value must be, where more telling than its type (``"a list of strings"``)."""

    reviewer: Text
    created_at: Time
    note: str | None = None
    source: str | None = None

    _file: str = PrivateAttr(default="")
    _line: int = PrivateAttr(default=0)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def file(self) -> str:
        return self._file

    @property
    def line(self) -> int:
        """1-based line number in :attr:`file` (0: not read from a file)."""
        return self._line

    @property
    def where(self) -> str:
        return f"{self._file}:{self._line}"

    @property
    def raw(self) -> dict[str, Any]:
        """The record as read, keys in the file's order (what a rewrite of the file keeps)."""
        return dict(self._raw) or self.as_record()

    @property
    def moment(self) -> datetime:
        """``created_at`` as a timezone-aware datetime."""
        return datetime.fromisoformat(self.created_at)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The format's field names: its own first, then the common ones."""
        common = tuple(ReviewRecord.model_fields)
        return (*(name for name in cls.model_fields if name not in common), *common)

    def as_record(self) -> dict[str, Any]:
        """The JSON object of this record in its file format (absent fields left out)."""
        values = self.model_dump()
        return {name: list(values[name]) if isinstance(values[name], tuple) else values[name]
                for name in self.fields() if values[name] is not None}

    def to_json(self) -> str:
        """One line of the file (without the newline)."""
        return json.dumps(self.as_record(), ensure_ascii=False)

    @classmethod
    def relation_problems(cls, record: Mapping[str, Any]) -> list[str]:
        """Problems between fields of a raw record (each field's own checks done elsewhere)."""
        return []

    @model_validator(mode="after")
    def _relations(self) -> ReviewRecord:
        if found := self.relation_problems(self.model_dump()):
            raise Problem("; ".join(found))
        return self

    @classmethod
    def problems(cls, record: Mapping[str, Any]) -> list[str]:
        """Every problem of one raw record (``[]`` when valid); the one place that checks the format."""
        try:
            cls.model_validate(dict(record))
        except ValidationError as exc:
            found = [_message(error, known=cls.fields(), expected=cls.EXPECTED)
                     for error in exc.errors() if error["loc"]]
        else:
            return []
        return found + cls.relation_problems(record)

    @classmethod
    def read(cls: type[Record], path: Path | str) -> list[Record]:
        """This format's file (:func:`read_records`)."""
        return read_records(path, cls)

    @classmethod
    def located(cls: type[Record], record: Mapping[str, Any], *, file: str, line: int) -> Record:
        """A validated record that knows where it came from; an invalid one is this format's
        error (:attr:`ERROR`) naming ``<file>:<line>`` and every problem."""
        if found := cls.problems(record):
            raise cls.ERROR(f"{file}:{line}: {'; '.join(found)}")
        made = cls.model_validate(dict(record))
        made._file, made._line, made._raw = file, line, dict(record)
        return made


def read_records(path: Path | str, model: type[Record]) -> list[Record]:
    """The records of a reviewers' file in file order, validated by ``model`` and located.

    A missing file holds none. Every problem of the file (a line :func:`pipeline.core.jsonl.parse_jsonl`
    refuses: invalid UTF-8 or JSON, nested too deep, a duplicate key, not an object; an unknown
    field, a wrong type or value) is collected and raised as one ``model.ERROR``, each as
    ``<file>:<line>: <problem>``.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise model.ERROR(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise model.ERROR(f"{path}: cannot read: {exc.strerror}") from None
    records: list[Record] = []
    problems: list[tuple[int, str]] = []
    for line in parse_jsonl(data, source=str(path)):
        found = [line.problem] if line.problem else model.problems(line.record)
        if found:
            problems.extend((line.number, problem) for problem in found)
        else:
            records.append(model.located(line.record, file=str(path), line=line.number))
    if problems:
        lines = len({number for number, _ in problems})
        head = f"{path}: {len(problems)} problem(s) on {lines} line(s) of the {model.WHAT}"
        raise model.ERROR("\n".join([head, *(f"  - {path}:{number}: {problem}" for number, problem in problems)]))
    return records
