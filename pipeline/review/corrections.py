"""Reviewers' corrections of the anchor dictionary: the file format, its reader, and how the
corrections are applied to the proposed dictionary (pure functions; the ``dictionary`` stage
does the I/O).

Corrections are an *overlay*: the proposed dictionary (``anchor_candidates`` joined with
``anchor_translations``) is never edited in place. Reviewers' decisions live in
``labels/anchors/corrections.jsonl`` (``dictionary.corrections`` in params, tracked in git) and
one stage applies them with :func:`apply_corrections`. ``labels/anchors/README.md`` documents the
same format for reviewers and for whoever writes an exporter.

File format (``corrections_v1``): JSON Lines, UTF-8, one JSON object per line, blank lines
ignored::

    {"action": "reject", "anchor": "Toby", "reviewer": "ann@example.org",
     "created_at": "2026-11-27T10:00:00Z", "task": "forget:book.txt#12",
     "note": "a dog's name is fine"}

(one line in the file). Fields every record has:

* ``action``: one of the actions below;
* ``anchor``: the dictionary key the decision is about, matched *exactly* (case and spacing
  included) against the keys, never against ``variants``;
* ``reviewer``: who decided (non-empty string, e.g. an e-mail address);
* ``created_at``: when, ISO 8601 *with a timezone* (``2026-11-27T10:00:00Z``,
  ``2026-11-27T11:00:00+01:00``).

Optional everywhere: ``task`` (the Label Studio task), ``note`` (free text, shown in the review
provenance and in the reject reason), ``source`` (e.g. the export snapshot the record came
from). ``null`` means absent for optional fields. Any other key is an error.

Actions:

=====================  ====================================  =====================================
action                 fields                                effect
=====================  ====================================  =====================================
``accept``             --                                    the entry is confirmed as proposed
``reject``             --                                    the entry leaves the dictionary and
                                                             goes to the rejects (reviewer, time
                                                             and note as the reason)
``change_span``        ``new_anchor``; optional ``kind``,    the key becomes ``new_anchor``; the
                       ``translations``                      old key is kept in ``variants``;
                                                             without ``translations`` the
                                                             proposer translates the new key
``change_kind``        ``kind``                              the kind changes (translations kept)
``change_translation`` ``translations``                      the translations are replaced
``add``                ``kind``; optional ``translations``   a missed term joins the dictionary
=====================  ====================================  =====================================

``kind`` is one of :data:`schemas.anchors.KINDS`. ``translations`` is a non-empty list of
non-empty strings without leading or trailing blanks. Translations are index-aligned (translation
``i`` of every anchor belongs to substitute world ``i``), so every entry has the same number
``n`` of them: a reviewer's list shorter than ``n`` is *cycled* to length ``n``
(``["Jon"]`` with n=3 becomes ``["Jon", "Jon", "Jon"]``, ``["A", "B"]`` becomes
``["A", "B", "A"]``), a longer one is cut to its first ``n``; either is said in the entry's
review note.

Order: corrections apply in chronological order of ``created_at`` (compared as instants, so
time zones are honoured), ties broken by file name and then line number. A later decision
therefore overrides an earlier one, and for distinct timestamps the result does not depend on
the order of the lines in the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import PipelineError
from schemas.anchors import KINDS, DictionarySchema

CORRECTIONS_FORMAT = "corrections_v1"
REVIEW = "review"
"""``proposer`` of translations written by a reviewer, ``proposed_by`` of added entries."""

REQUIRED_FIELDS = ("action", "anchor", "reviewer", "created_at")
OPTIONAL_FIELDS = ("task", "note", "source")
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # action: (required fields, optional fields) besides the common ones
    "accept": ((), ()),
    "reject": ((), ()),
    "change_span": (("new_anchor",), ("kind", "translations")),
    "change_kind": (("kind",), ()),
    "change_translation": (("translations",), ()),
    "add": (("kind",), ("translations",)),
}
_ACTION_FIELDS = ("new_anchor", "kind", "translations")
_KNOWN_FIELDS = (*REQUIRED_FIELDS, *_ACTION_FIELDS, *OPTIONAL_FIELDS)
DICTIONARY_COLUMNS = tuple(DictionarySchema.to_schema().columns)
_MAX_RECORD_CHARS = 500

Propose = Callable[[list[tuple[str, str]]], dict[str, tuple[list[str], str]]]
"""``[(anchor, kind), ...] -> {anchor: (translations, proposer_name)}``."""


class CorrectionsError(PipelineError):
    """The corrections file is malformed, or its corrections do not fit the dictionary."""


@dataclass(frozen=True)
class Correction:
    """One reviewer decision: a validated record of the corrections file.

    ``file`` and ``line`` say where it came from (1-based line number). Constructing one with
    invalid fields raises :class:`CorrectionsError` (the same checks as :func:`load_corrections`).
    ``translations`` is stored as a tuple (a list is converted).
    """

    action: str
    anchor: str
    reviewer: str
    created_at: str
    file: str
    line: int
    new_anchor: str | None = None
    kind: str | None = None
    translations: tuple[str, ...] | None = None
    task: str | None = None
    note: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.translations, list):
            object.__setattr__(self, "translations", tuple(self.translations))
        problems = record_problems(self.as_record())
        if problems:
            raise CorrectionsError(f"{self.where}: {'; '.join(problems)}")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def timestamp(self) -> datetime:
        """``created_at`` as a timezone-aware datetime."""
        return datetime.fromisoformat(self.created_at)

    def as_record(self) -> dict[str, Any]:
        """The JSON object of this correction in the file format (absent fields left out)."""
        record: dict[str, Any] = {}
        for name in _KNOWN_FIELDS:
            value = getattr(self, name)
            if value is not None:
                record[name] = list(value) if isinstance(value, tuple) else value
        return record

    def to_json(self) -> str:
        """One line of the corrections file (without the newline)."""
        return json.dumps(self.as_record(), ensure_ascii=False)

    def provenance(self, remark: str | None = None) -> str:
        """``"<created_at> <reviewer> <action> (<file>:<line>)"`` plus ``": <note>"``."""
        parts = [p for p in ((self.note or "").strip(), remark) if p]
        head = f"{self.created_at} {self.reviewer} {self.action} ({self.where})"
        return head + (": " + "; ".join(parts) if parts else "")


def _json_type(value: Any) -> str:
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


def _string_problem(name: str, value: Any, *, key: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"field {name!r} must be a string, got {_json_type(value)}"
    if not value.strip():
        return f"field {name!r} is empty"
    if key and value != value.strip():
        return f"field {name!r} has leading or trailing blanks ({value!r})"
    return None


def _translations_problems(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return [f"field 'translations' must be a list of strings, got {_json_type(value)}"]
    if not value:
        return ["field 'translations' is an empty list"]
    problems = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"translations[{i}] must be a string, got {_json_type(item)}")
        elif not item.strip():
            problems.append(f"translations[{i}] is empty")
        elif item != item.strip():
            problems.append(f"translations[{i}] has leading or trailing blanks ({item!r})")
    return problems


def record_problems(record: Mapping[str, Any]) -> list[str]:
    """Every problem of one record of the corrections file (``[]`` when it is valid).

    The one place that checks the format; ``None`` values count as absent.
    """
    problems = [
        f"unknown field {key!r} (known: {', '.join(_KNOWN_FIELDS)})" for key in record if key not in _KNOWN_FIELDS
    ]
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if value is None:
            problems.append(f"missing required field {name!r}")
        elif problem := _string_problem(name, value, key=name == "anchor"):
            problems.append(problem)

    action = record.get("action")
    if isinstance(action, str) and action.strip() and action not in ACTIONS:
        problems.append(f"unknown action {action!r} (expected one of: {', '.join(ACTIONS)})")

    created_at = record.get("created_at")
    if isinstance(created_at, str) and created_at.strip():
        try:
            moment = datetime.fromisoformat(created_at)
        except ValueError:
            problems.append(f"field 'created_at' is not an ISO 8601 time: {created_at!r}")
        else:
            if moment.tzinfo is None:
                problems.append(f"field 'created_at' has no timezone: {created_at!r} (add 'Z' or '+01:00')")

    if action in ACTIONS:
        required, optional = ACTIONS[action]
        for name in _ACTION_FIELDS:
            present = record.get(name) is not None
            if name in required and not present:
                problems.append(f"missing required field {name!r} for action {action!r}")
            elif present and name not in required and name not in optional:
                problems.append(f"field {name!r} is not used by action {action!r}")

    if record.get("new_anchor") is not None:
        if problem := _string_problem("new_anchor", record["new_anchor"], key=True):
            problems.append(problem)
        elif record["new_anchor"] == record.get("anchor"):
            problems.append("field 'new_anchor' equals 'anchor' (nothing to change)")
    kind = record.get("kind")
    if kind is not None:
        if not isinstance(kind, str):
            problems.append(f"field 'kind' must be a string, got {_json_type(kind)}")
        elif kind not in KINDS:
            problems.append(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    if record.get("translations") is not None:
        problems.extend(_translations_problems(record["translations"]))
    for name in OPTIONAL_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"field {name!r} must be a string, got {_json_type(value)}")
    return problems


def load_corrections(path: Path | str) -> list[Correction]:
    """Read a corrections file (format in the module docstring), in file order.

    A missing file means no corrections (``[]``). Every problem of the file (invalid UTF-8 or
    JSON, not an object, duplicate or unknown field, unknown action or kind, missing or empty
    required field, bad ``created_at``, bad ``translations``) is collected and reported in one
    :class:`CorrectionsError`, each as ``<file>:<line>: <problem>``.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise CorrectionsError(f"{path}: corrections path is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorrectionsError(f"{path}: cannot read: {exc.strerror}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM is not part of the first record

    corrections: list[Correction] = []
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
            problems.append((number, f"expected a JSON object, got {_json_type(record)}"))
            continue
        found = [f"duplicate field {key!r}" for key in duplicates] + record_problems(record)
        if found:
            problems.extend((number, problem) for problem in found)
            continue
        corrections.append(Correction(file=str(path), line=number, **record))

    if problems:
        lines = sorted({line for line, _ in problems})
        head = (
            f"{path}: {len(problems)} problem(s) on {len(lines)} line(s) of the corrections file "
            f"(format {CORRECTIONS_FORMAT}, see labels/anchors/README.md)"
        )
        raise CorrectionsError("\n".join([head, *(f"  - {path}:{line}: {problem}" for line, problem in problems)]))
    return corrections


def _unique_keys(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently: a reviewer's record must not lose a field.
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            duplicates.append(key)
        record[key] = value
    return record


def correction_order(correction: Correction) -> tuple[datetime, str, int]:
    """Sort key of the application order: ``created_at`` (as an instant), file, line."""
    return (correction.timestamp, correction.file, correction.line)


def apply_corrections(
    proposed: pd.DataFrame,
    corrections: Sequence[Correction],
    *,
    propose: Propose,
    forget_counts: Mapping[str, int] | None = None,
    per_anchor: int | None = None,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Apply reviewers' corrections to the proposed dictionary.

    Args:
        proposed: the dictionary before review: exactly the ``DictionarySchema`` columns, one
            row per anchor (status ``proposed``, ``review`` empty lists). Never mutated.
        corrections: in any order; they are applied by :func:`correction_order`
            (``created_at``, then file, then line), so a later decision overrides an earlier one.
        propose: translates the entries whose translations no reviewer gave (``add`` or
            ``change_span`` without ``translations``, not replaced later):
            ``[(anchor, kind), ...] -> {anchor: (translations, proposer_name)}``. Called at most
            once, after the whole sequence, with the entries' final key and kind; each list
            must hold ``n`` non-empty strings.
        forget_counts: forget-corpus occurrences of keys introduced by review (``add``, the new
            key of ``change_span``); an added key not in it counts 0, a renamed entry not in it
            keeps its count.
        per_anchor: ``n``, translations per anchor; only needed when ``proposed`` is empty
            (otherwise taken from it). Without either, the first list applied sets it.

    Returns:
        ``(dictionary, rejects)``: the dictionary frame (``DictionarySchema`` columns, proposed
        entries in their order, added ones after them, fresh RangeIndex) and one dict per
        rejected key with the ``RejectSchema`` keys ``source`` (the corrections file),
        ``location`` (``"line N"``), ``reason`` (reviewer, time, note) and ``record`` (the key).

    Effects, per action: ``accept`` sets status ``accepted`` (only from ``proposed``);
    ``change_*`` sets ``changed`` (an added entry stays ``added``); ``add`` creates an entry
    with status ``added``, ``proposed_by ['review']``, ``variants [key]``, rank after the last
    rank, score null; ``reject`` removes the entry. Status thus says how the proposal fared
    (``changed`` stays ``changed`` when accepted later); the full history is in ``review``,
    where every applied correction appends :meth:`Correction.provenance`. Translations written
    by a reviewer get proposer ``review``. A key that comes back after a reject (``add`` or a
    ``change_span`` onto it) leaves the rejects, and its entry inherits the rejected entry's
    review history, reject included.

    Raises:
        CorrectionsError: listing every correction that does not fit the dictionary at its
            point in the sequence (unknown key, with a hint when it is a variant of an entry, was
            rejected, or differs only in case; ``add`` of an existing key; ``change_span`` onto
            an existing key), or unusable proposer output. Nothing is applied then.
        ValueError: ``proposed`` lacks or has extra columns, or ``per_anchor`` contradicts it.
    """
    columns = list(proposed.columns)
    if set(columns) != set(DICTIONARY_COLUMNS):
        missing = sorted(set(DICTIONARY_COLUMNS) - set(columns))
        extra = sorted(set(columns) - set(DICTIONARY_COLUMNS))
        raise ValueError(
            f"proposed dictionary: columns differ from DictionarySchema (missing {missing}, extra {extra})"
        )
    lengths = {len(t) for t in proposed["translations"]}
    n = max(lengths) if lengths else per_anchor
    if per_anchor is not None and n != per_anchor:
        raise ValueError(f"per_anchor={per_anchor} but the proposed dictionary has {n} translations per anchor")

    sequence = _Sequence(proposed, n, forget_counts or {})
    for correction in sorted(corrections, key=correction_order):
        sequence.apply(correction)
    if sequence.problems:
        head = (
            f"{len(sequence.problems)} correction(s) do not fit the proposed dictionary; nothing was "
            "applied (listed in the order they apply: created_at, file, line)"
        )
        rows = [f"  - {c.where}: {c.action} {c.anchor!r}: {problem}" for c, problem in sequence.problems]
        raise CorrectionsError("\n".join([head, *rows]))
    sequence.translate(propose)

    kept = [entry for entry in sequence.entries if not entry["_removed"]]
    frame = pd.DataFrame([{c: entry[c] for c in DICTIONARY_COLUMNS} for entry in kept], columns=list(DICTIONARY_COLUMNS))
    frame = frame.astype({"rank": "int64", "forget_count": "int64", "score": "float64"})
    # Keep the caller's dtypes (e.g. a nullable or narrower integer) so that no correction means
    # an identical frame.
    frame = frame.astype({c: proposed.dtypes[c] for c in DICTIONARY_COLUMNS if proposed.dtypes[c] != object})
    return frame, sequence.rejects()


class _Sequence:
    """The dictionary while the corrections are simulated: rows as dicts, keys exact."""

    def __init__(self, proposed: pd.DataFrame, n: int | None, forget_counts: Mapping[str, int]):
        self.entries: list[dict[str, Any]] = []
        for row in proposed.to_dict("records"):
            entry = {column: _copy(value) for column, value in row.items()}
            entry.update(_removed=False, _propose=False)
            self.entries.append(entry)
        self.by_key = {entry["anchor"]: entry for entry in self.entries}
        self.removed: dict[str, tuple[dict[str, Any], Correction]] = {}
        self.next_rank = max((int(e["rank"]) for e in self.entries), default=0) + 1
        self.n = n
        self.forget_counts = forget_counts
        self.problems: list[tuple[Correction, str]] = []

    def apply(self, c: Correction) -> None:
        entry = self.by_key.get(c.anchor)
        if c.action == "add":
            if entry is not None:
                self.problems.append((c, f"already a key of the dictionary (status {entry['status']}); "
                                         "use change_kind, change_translation or change_span"))
                return
        elif entry is None:
            self.problems.append((c, self._unknown(c.anchor)))
            return
        if c.action == "change_span" and c.new_anchor in self.by_key:
            self.problems.append((c, f"new_anchor {c.new_anchor!r} is already a key of the dictionary"))
            return
        getattr(self, f"_{c.action}")(c, entry)

    def _unknown(self, anchor: str) -> str:
        message = "not a key of the dictionary at this point (anchors match keys exactly)"
        holders = [key for key, entry in self.by_key.items() if anchor in entry["variants"]]
        if holders:
            message += f"; it is a variant of {', '.join(map(repr, holders))}: name that key"
        if anchor in self.removed:
            rejected = self.removed[anchor][1]
            message += f"; it was rejected by {rejected.reviewer} ({rejected.where})"
        similar = [key for key in self.by_key if key.casefold() == anchor.casefold()]
        if similar:
            message += f"; did you mean {', '.join(map(repr, similar))}?"
        return message

    def _fit(self, translations: tuple[str, ...]) -> tuple[list[str], str | None]:
        given = list(translations)
        if self.n is None:
            self.n = len(given)
        if len(given) == self.n:
            return given, None
        verb = "cycled" if len(given) < self.n else "cut"
        fitted = [given[i % len(given)] for i in range(self.n)]
        return fitted, f"translations {verb} from {len(given)} to {self.n} (index-aligned worlds)"

    def _record(self, entry: dict[str, Any], c: Correction, remark: str | None = None) -> None:
        entry["review"].append(c.provenance(remark))

    def _mark_changed(self, entry: dict[str, Any]) -> None:
        if entry["status"] != "added":
            entry["status"] = "changed"

    def _set_translations(self, entry: dict[str, Any], c: Correction) -> str | None:
        if c.translations is None:  # the proposer translates it after the sequence
            entry.update(translations=None, proposer="", _propose=True)
            return None
        entry["translations"], remark = self._fit(c.translations)
        entry.update(proposer=REVIEW, _propose=False)
        return remark

    def _inherit(self, entry: dict[str, Any], key: str) -> None:
        if key in self.removed:  # the key comes back: its reject is overridden, not lost
            rejected, _ = self.removed.pop(key)
            entry["review"].extend(rejected["review"])

    def _accept(self, c: Correction, entry: dict[str, Any]) -> None:
        if entry["status"] == "proposed":
            entry["status"] = "accepted"
        self._record(entry, c)

    def _reject(self, c: Correction, entry: dict[str, Any]) -> None:
        self._record(entry, c)
        entry["_removed"] = True
        del self.by_key[c.anchor]
        self.removed[c.anchor] = (entry, c)

    def _change_span(self, c: Correction, entry: dict[str, Any]) -> None:
        assert c.new_anchor is not None
        del self.by_key[c.anchor]
        self._inherit(entry, c.new_anchor)
        entry["anchor"] = c.new_anchor
        entry["variants"] = list(dict.fromkeys([c.new_anchor, *entry["variants"], c.anchor]))
        if c.kind is not None:
            entry["kind"] = c.kind
        if c.new_anchor in self.forget_counts:
            entry["forget_count"] = int(self.forget_counts[c.new_anchor])
        remark = self._set_translations(entry, c)
        self.by_key[c.new_anchor] = entry
        self._mark_changed(entry)
        self._record(entry, c, remark)

    def _change_kind(self, c: Correction, entry: dict[str, Any]) -> None:
        entry["kind"] = c.kind
        self._mark_changed(entry)
        self._record(entry, c)

    def _change_translation(self, c: Correction, entry: dict[str, Any]) -> None:
        remark = self._set_translations(entry, c)
        self._mark_changed(entry)
        self._record(entry, c, remark)

    def _add(self, c: Correction, _: None) -> None:
        entry: dict[str, Any] = {
            "anchor": c.anchor, "kind": c.kind, "translations": None, "variants": [c.anchor],
            "rank": self.next_rank, "score": None, "forget_count": int(self.forget_counts.get(c.anchor, 0)),
            "status": "added", "proposed_by": [REVIEW], "proposer": "", "review": [],
            "_removed": False, "_propose": False,
        }
        self.next_rank += 1
        self._inherit(entry, c.anchor)
        remark = self._set_translations(entry, c)
        self.entries.append(entry)
        self.by_key[c.anchor] = entry
        self._record(entry, c, remark)

    def translate(self, propose: Propose) -> None:
        pending = [e for e in self.entries if e["_propose"] and not e["_removed"]]
        if not pending:
            return
        proposals = propose([(e["anchor"], e["kind"]) for e in pending])
        problems = []
        for entry in pending:
            anchor = entry["anchor"]
            proposal = proposals.get(anchor) if isinstance(proposals, Mapping) else None
            if not (isinstance(proposal, (tuple, list)) and len(proposal) == 2):
                problems.append(f"{anchor!r}: no (translations, proposer) pair returned")
                continue
            translations, name = proposal
            found = _translations_problems(translations)
            if not found and self.n is None:
                self.n = len(translations)
            if not found and len(translations) != self.n:
                found = [f"{len(translations)} translations, the dictionary has {self.n} per anchor"]
            if not (isinstance(name, str) and name.strip()):
                found.append(f"proposer name must be a non-empty string, got {name!r}")
            if found:
                problems.append(f"{anchor!r}: {'; '.join(found)}")
                continue
            entry.update(translations=list(translations), proposer=name, _propose=False)
        if problems:
            raise CorrectionsError(
                "\n".join([f"the translation proposer returned unusable translations for {len(problems)} "
                           "anchor(s) added or renamed by review; nothing was applied",
                           *(f"  - {p}" for p in problems)])
            )

    def rejects(self) -> list[dict[str, str]]:
        rows = []
        for key, (_, c) in self.removed.items():
            reason = f"rejected by {c.reviewer} at {c.created_at}"
            if c.task:
                reason += f" (task {c.task})"
            note = (c.note or "").strip()
            reason += f": {note}" if note else " (no note)"
            rows.append({"source": c.file, "location": f"line {c.line}", "reason": reason,
                         "record": key[:_MAX_RECORD_CHARS]})
        return rows


def _copy(value: Any) -> Any:
    # List cells (lists, or numpy arrays when read from Parquet) must not be shared with the
    # caller's frame: the simulation appends to them.
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes, dict)):
        return list(value)
    return value
