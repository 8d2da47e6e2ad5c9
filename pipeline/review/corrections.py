"""How reviewers' corrections are applied to the proposed anchor dictionary (pure functions; the
``dictionary`` stage does the I/O).

Corrections are an *overlay*: the proposed dictionary (``anchor_candidates`` joined with
``anchor_translations``) is never edited in place. Reviewers' decisions live in
``labels/anchors/corrections.jsonl`` (``dictionary.corrections`` in params, tracked in git; format
``corrections_v1``: :class:`pipeline.review.records.Correction`, and ``labels/anchors/README.md``
for reviewers and for whoever writes an exporter) and one stage applies them with
:func:`apply_corrections`.

Translations are index-aligned (translation ``i`` of every anchor belongs to substitute world
``i``), so every entry has the same number ``n`` of them: a reviewer's list shorter than ``n`` is
*cycled* to length ``n`` (``["Jon"]`` with n=3 becomes ``["Jon", "Jon", "Jon"]``, ``["A", "B"]``
becomes ``["A", "B", "A"]``), a longer one is cut to its first ``n``; either is said in the
entry's review note.

Order: corrections apply in chronological order of ``created_at`` (compared as instants, so
time zones are honoured), ties broken by file name and then line number. A later decision
therefore overrides an earlier one, and for distinct timestamps the result does not depend on
the order of the lines in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from pipeline.review.records import Correction, CorrectionsError, load_corrections
from pipeline.review.validation import translations_problems
from schemas.anchors import DictionarySchema

__all__ = ["Correction", "CorrectionsError", "apply_corrections", "correction_order", "load_corrections"]
# (Correction, CorrectionsError and load_corrections are the dictionary stage's, from records.)

REVIEW = "review"
"""``proposer`` of translations written by a reviewer, ``proposed_by`` of added entries."""
DICTIONARY_COLUMNS = tuple(DictionarySchema.to_schema().columns)
_MAX_RECORD_CHARS = 500

Propose = Callable[[list[tuple[str, str]]], dict[str, tuple[list[str], str]]]
"""``[(anchor, kind), ...] -> {anchor: (translations, proposer_name)}``."""


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
            found = translations_problems(translations)
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
