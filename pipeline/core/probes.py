"""Probe files of the evaluation, parsed from their text (pure: the stage reads the files).

Formats (``corpora/probes/README.md``): JSON Lines, one object a line, UTF-8.

* ``familiarity``: ``{"id", "prompt", "answer", "story"}`` and optionally ``"tier"``; ``answer``
  is the true continuation of ``prompt``, ``story`` the title of the story it comes from (the
  title of a forget document, :func:`pipeline.core.provenance.story_documents`), ``tier`` one of
  :data:`TIERS`: ``known`` for the corpus's famous facts (what a general model has likely seen),
  ``detail`` for facts that need the story itself.
* ``completion``: ``{"id", "prompt", "keywords": [...]}``.
* ``general``: ``{"id", "prompt", "answer", "kind": "general" | "near"}``.

Every problem of a file is reported at once, each as ``<file>, line <n>: <problem>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.grading import TermMatcher
from pipeline.errors import PipelineError
from schemas.evaluation import TIERS

KINDS = ("familiarity", "completion", "general")
GENERAL_KINDS = ("general", "near")
_REQUIRED = {"familiarity": ("answer", "story"), "completion": ("keywords",), "general": ("answer", "kind")}
_OPTIONAL = {"familiarity": ("tier",), "completion": (), "general": ()}
_TEXT_FIELDS = ("id", "prompt", "answer", "story", "kind", "tier")


class ProbeError(PipelineError):
    """A probe file is missing or malformed; the message names the file, line and problem."""


@dataclass(frozen=True)
class Probe:
    """One probe: ``answer`` for probability probes, ``keywords`` for completion probes,
    ``story`` (familiarity) the story it tests and ``tier`` its tier (None: untiered),
    ``kind`` (general) ``general`` or ``near``."""

    id: str
    prompt: str
    answer: str | None = None
    keywords: tuple[str, ...] = field(default=())
    kind: str | None = None
    story: str | None = None
    tier: str | None = None


def _problems(record: dict[str, Any], kind: str) -> list[str]:
    problems = []
    allowed = ("id", "prompt", *_REQUIRED[kind], *_OPTIONAL[kind])
    problems += [f"unknown field {name!r} (known: {', '.join(allowed)})" for name in record if name not in allowed]
    for name in ("id", "prompt", *_REQUIRED[kind]):
        if name not in record:
            problems.append(f"missing field {name!r}")
    for name in _TEXT_FIELDS:
        if name in record and name in allowed:
            value = record[name]
            if not isinstance(value, str):
                problems.append(f"field {name!r} must be a string (got {type(value).__name__})")
            elif not value.strip():
                problems.append(f"field {name!r} is empty")
    if "keywords" in record:
        value = record["keywords"]
        if not isinstance(value, list) or not value or not all(isinstance(k, str) and k.strip() for k in value):
            problems.append(f"field 'keywords' must be a non-empty list of non-empty strings (got {value!r})")
    if kind == "general" and isinstance(record.get("kind"), str) and record["kind"] not in GENERAL_KINDS:
        problems.append(f"field 'kind' must be one of {', '.join(GENERAL_KINDS)} (got {record['kind']!r})")
    if kind == "familiarity" and isinstance(record.get("tier"), str) and record["tier"] not in TIERS:
        problems.append(f"field 'tier' must be one of {', '.join(TIERS)} (got {record['tier']!r})")
    return problems


def parse_probes(text: str, kind: str, *, source: str) -> list[Probe]:
    """The probes of a file of ``kind`` whose content is ``text``; ``source`` names it in errors.

    Raises :class:`ProbeError` listing every bad line (not JSON, not an object, a missing,
    empty, unknown or mistyped field, a duplicate id) or saying the file holds no probe.
    """
    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")
    probes: list[Probe] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
            continue
        found = _problems(record, kind)
        probe_id = record.get("id")
        if isinstance(probe_id, str) and probe_id in seen:
            found.append(f"duplicate id {probe_id!r} (first on line {seen[probe_id]})")
        elif isinstance(probe_id, str):
            seen[probe_id] = number
        if found:
            problems += [f"{where}: {problem}" for problem in found]
            continue
        probes.append(Probe(
            id=record["id"], prompt=record["prompt"], answer=record.get("answer"),
            keywords=tuple(record.get("keywords", ())), kind=record.get("kind"), story=record.get("story"),
            tier=record.get("tier"),
        ))
    if problems:
        raise ProbeError("\n".join(problems))
    if not probes:
        raise ProbeError(f"{source}: no probes (an empty file)")
    return probes


def parse_terms(text: str) -> list[str]:
    """One term a line; blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def answer_terms(probe: Probe, terms: TermMatcher) -> list[str]:
    """The terms of ``terms`` that the probe's answer says or completes: whole-word occurrences
    in ``prompt + answer`` that reach into the answer's text, in order ("Scotland" + " Yard"
    completes "Scotland Yard"; " Hugo" says "Hugo")."""
    # The evaluation reads general and near-collateral probes answered by a forget-dictionary
    # term apart: the fine-tune was asked to forget that term in the corpus's contexts, so losing
    # it elsewhere is a cost of the dictionary's scope, not of the method's reach.
    if not probe.answer or not probe.answer.strip():
        return []
    text = probe.prompt + probe.answer
    answer_start = len(probe.prompt) + len(probe.answer) - len(probe.answer.lstrip())
    return list(dict.fromkeys(term for term, _, end in terms.occurrences(text) if end > answer_start))
