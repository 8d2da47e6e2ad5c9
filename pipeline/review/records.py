"""The reviewers' files under ``labels/``: one pydantic model per format, and their readers.

* :class:`Correction` (``corrections_v1``, ``labels/anchors/corrections.jsonl``): decisions on
  the anchor dictionary, applied by the ``dictionary`` stage (:mod:`pipeline.review.corrections`);
* :class:`LinguisticDecision` (``linguistic_decisions_v1``, ``labels/linguistic/decisions.jsonl``):
  verdicts on uncertain generic labels, applied by the ``dataset`` stage
  (:mod:`pipeline.review.decisions`);
* :class:`Grade` (``evaluation_grades_v1``, ``labels/evaluation/grades.jsonl``): human
  familiarity grades of the evaluate stage's completions (:mod:`pipeline.review.evaluation`).

Every record has ``reviewer`` (non-empty) and ``created_at`` (ISO 8601 *with a timezone*), and
may have ``note`` and ``source`` (the export snapshot a pulled record came from; a record
without one was written by hand). The file rules (JSON Lines, strict types, every problem at
once as ``<file>:<line>: <problem>``) are :mod:`pipeline.review.validation`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, field_validator

from pipeline.errors import PipelineError
from pipeline.review.validation import (
    Key, Natural, ReviewRecord, Text, Translations, one_of, read_records,
)
from schemas.anchors import KINDS


class CorrectionsError(PipelineError):
    """The corrections file is malformed, or its corrections do not fit the dictionary."""


class DecisionsError(PipelineError):
    """The linguistic decisions file is malformed or names blocks or positions that do not exist."""


class GradesError(PipelineError):
    """The evaluation grades file is malformed."""


# --------------------------------------------------------------------------------------------
# corrections_v1


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


class Correction(ReviewRecord):
    """One reviewer decision on the anchor dictionary (format ``corrections_v1``).

    Example (one line in the file)::

        {"action": "reject", "anchor": "Toby", "reviewer": "ann@example.org",
         "created_at": "2026-11-27T10:00:00Z", "task": "forget:book.txt#12",
         "note": "a dog's name is fine"}

    ``anchor`` is the dictionary key the decision is about, matched *exactly* (case and spacing
    included) against the keys, never against ``variants``; ``task`` (optional) is the Label
    Studio task. The action decides the other fields:

    =====================  ====================================  ===================================
    action                 fields                                effect
    =====================  ====================================  ===================================
    ``accept``             --                                    the entry is confirmed as proposed
    ``reject``             --                                    the entry leaves the dictionary and
                                                                 goes to the rejects
    ``change_span``        ``new_anchor``; optional ``kind``,    the key becomes ``new_anchor``; the
                           ``translations``                      old key is kept in ``variants``
    ``change_kind``        ``kind``                              the kind changes
    ``change_translation`` ``translations``                      the translations are replaced
    ``add``                ``kind``; optional ``translations``   a missed term joins the dictionary
    =====================  ====================================  ===================================

    ``kind`` is one of :data:`schemas.anchors.KINDS`; ``translations`` a non-empty list of
    non-empty strings without blanks around them (how they are fitted to the dictionary:
    :func:`pipeline.review.corrections.apply_corrections`). ``translations`` is kept as a tuple.
    """

    FORMAT: ClassVar[str] = "corrections_v1"
    WHAT: ClassVar[str] = "corrections file (format corrections_v1, see labels/anchors/README.md)"
    ERROR: ClassVar[type[PipelineError]] = CorrectionsError
    EXPECTED: ClassVar[dict[str, str]] = {"translations": "a list of strings"}

    action: Annotated[Text, AfterValidator(one_of("action", tuple(ACTIONS)))]
    anchor: Key
    new_anchor: Key | None = None
    kind: Annotated[str, AfterValidator(one_of("kind", KINDS))] | None = None
    translations: Translations | None = None
    task: str | None = None

    @classmethod
    def relation_problems(cls, record: Mapping[str, Any]) -> list[str]:
        action = record.get("action")
        problems = []
        if isinstance(action, str) and action in ACTIONS:
            required, optional = ACTIONS[action]
            for name in _ACTION_FIELDS:
                present = record.get(name) is not None
                if name in required and not present:
                    problems.append(f"missing required field {name!r} for action {action!r}")
                elif present and name not in required and name not in optional:
                    problems.append(f"field {name!r} is not used by action {action!r}")
        if record.get("new_anchor") is not None and record.get("new_anchor") == record.get("anchor"):
            problems.append("field 'new_anchor' equals 'anchor' (nothing to change)")
        return problems

    @property
    def timestamp(self) -> datetime:
        """``created_at`` as a timezone-aware datetime (the application order)."""
        return self.moment

    def provenance(self, remark: str | None = None) -> str:
        """``"<created_at> <reviewer> <action> (<file>:<line>)"`` plus ``": <note>"``."""
        parts = [p for p in ((self.note or "").strip(), remark) if p]
        head = f"{self.created_at} {self.reviewer} {self.action} ({self.where})"
        return head + (": " + "; ".join(parts) if parts else "")


# --------------------------------------------------------------------------------------------
# linguistic_decisions_v1

VERDICTS = ("correct", "incorrect", "unsure")


def task_key(block_id: str, first: int) -> str:
    """The key of a linguistic task: ``<block_id>:<first position>``."""
    return f"{block_id}:{first}"


class LinguisticDecision(ReviewRecord):
    """One reviewed linguistic task (format ``linguistic_decisions_v1``). Example (one line)::

        {"key": "forget:canon.txt@3:17", "block_id": "forget:canon.txt@3", "positions": [17, 19],
         "alpha": 5.0, "targets": [1012, 13], "verdict": "incorrect", "fix": " said",
         "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00+00:00",
         "source": "20261127T120000Z.json"}

    * required: ``key`` (``<block_id>:<positions[0]>``), ``block_id``, ``positions`` (strictly
      ascending original positions, the task's uncertain ones), ``verdict`` (``correct``,
      ``incorrect`` or ``unsure``), ``reviewer``, ``created_at``;
    * optional: ``fix`` (only with ``incorrect``: the exact text that should follow the
      translated context, leading space included, e.g. ``" said"``), ``alpha`` and ``targets``
      (the alpha and the generic target ids the reviewer judged, one per position: a decision
      whose alpha or targets no longer match the dataset is *stale*), ``note``, ``source``.

    How the ``dataset`` stage applies them: :mod:`pipeline.review.decisions`.
    """

    FORMAT: ClassVar[str] = "linguistic_decisions_v1"
    WHAT: ClassVar[str] = ("linguistic decisions file (format linguistic_decisions_v1, "
                           "see pipeline/review/records.py)")
    ERROR: ClassVar[type[PipelineError]] = DecisionsError
    EXPECTED: ClassVar[dict[str, str]] = {"positions": "a non-empty list of integers",
                                          "targets": "a list of token ids", "alpha": "a number >= 0"}

    key: Text
    block_id: Text
    positions: list[Natural]
    verdict: Annotated[str, AfterValidator(one_of("verdict", VERDICTS))]
    fix: Text | None = None
    alpha: float | None = None
    targets: list[Natural] | None = None

    @field_validator("positions")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must be a non-empty list of integers, got an empty list")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"must be strictly ascending: {value}")
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must be a number >= 0, got {value!r}")
        return value

    @classmethod
    def relation_problems(cls, record: Mapping[str, Any]) -> list[str]:
        problems = []
        positions = record.get("positions")
        valid = (isinstance(positions, list) and positions
                 and all(isinstance(p, int) and not isinstance(p, bool) for p in positions))
        if valid and isinstance(record.get("block_id"), str) and isinstance(record.get("key"), str):
            expected = task_key(record["block_id"], positions[0])
            if record["key"] != expected:
                problems.append(f"field 'key' is {record['key']!r}, expected {expected!r} "
                                "(<block_id>:<first position>)")
        verdict = record.get("verdict")
        if record.get("fix") is not None and verdict in VERDICTS and verdict != "incorrect":
            problems.append(f"field 'fix' is only used with verdict 'incorrect' (verdict: {verdict!r})")
        targets = record.get("targets")
        if valid and isinstance(targets, list) and len(targets) != len(positions):
            problems.append(f"field 'targets' has {len(targets)} ids for {len(positions)} positions")
        return problems


# --------------------------------------------------------------------------------------------
# evaluation_grades_v1


def _grade(value: int) -> int:
    if not 0 <= value <= 3:
        raise ValueError(f"is {value}, outside 0..3")
    return value


class Grade(ReviewRecord):
    """One human grade of a completion (format ``evaluation_grades_v1``). Example (one line)::

        {"key": "unlearned:p017", "model": "unlearned", "probe_id": "p017", "auto_grade": 2,
         "grade": 3, "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00+00:00",
         "source": "20261127T120000Z.json"}

    ``key`` is ``<model>:<probe_id>``; ``auto_grade`` (the evaluate stage's) and ``grade`` (the
    reviewer's) are integers 0-3. Several records with one key: the latest ``created_at`` wins.
    """

    FORMAT: ClassVar[str] = "evaluation_grades_v1"
    WHAT: ClassVar[str] = "evaluation grades file (format evaluation_grades_v1)"
    ERROR: ClassVar[type[PipelineError]] = GradesError

    key: Text
    model: Text
    probe_id: Text
    auto_grade: Annotated[int, AfterValidator(_grade)]
    grade: Annotated[int, AfterValidator(_grade)]

    @classmethod
    def relation_problems(cls, record: Mapping[str, Any]) -> list[str]:
        if all(isinstance(record.get(n), str) for n in ("key", "model", "probe_id")):
            if record["key"] != f"{record['model']}:{record['probe_id']}":
                return [f"field 'key' is {record['key']!r}, expected '<model>:<probe_id>'"]
        return []


def load_corrections(path: Path | str) -> list[Correction]:
    """The corrections file (``dictionary.corrections``) in file order; :func:`read_records`."""
    return read_records(path, Correction)


def load_decisions(path: Path | str) -> list[LinguisticDecision]:
    """The linguistic decisions file in file order; :func:`read_records`."""
    return read_records(path, LinguisticDecision)


def load_grades(path: Path | str) -> list[Grade]:
    """The evaluation grades file in file order; :func:`read_records`."""
    return read_records(path, Grade)
