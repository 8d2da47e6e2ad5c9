"""Linguistic review (docs/algorithm.md, Human review, review 2): which generic labels reviewers
check, the decisions file they produce, and how the ``dataset`` stage applies it. Pure
functions; :mod:`pipeline.review.verdicts` (Label Studio) and :mod:`pipeline.dataset` do the I/O.

Tasks. A position ``i`` of a forget block is *uncertain* when it is trained on (``loss_mask``
1) and its generic label at ``dataset.alpha`` has a confidence below
``review.linguistic.threshold``. The uncertain positions of a block at most
``review.linguistic.gap`` positions apart share one task, which covers at most
``review.linguistic.span`` positions (first to last). A task shows

* ``translated``: the translated block up to and including token ``j(first)``, its last
  ``context_tokens`` tokens (``…`` in front when cut): what the baseline had read when it
  predicted the task's first target;
* ``continuation``: the generic targets of the trained positions ``first..last``, decoded one
  token at a time and joined, the uncertain ones between ``⟦`` and ``⟧``;
* ``actual``: the translated text's own tokens there (``j(first)+1 .. j(last)+1``), to compare;
* ``uncertain``: each uncertain position with its target token and confidence.

Its key is ``<block_id>:<first position>``; tasks are ordered by their least confident
position (then key) and cut at ``review.max_tasks``.

Decisions file (``labels/linguistic/decisions.jsonl``, format ``linguistic_decisions_v1``):
JSON Lines, one object per reviewed task, e.g. (one line in the file)::

    {"key": "forget:canon.txt@3:17", "block_id": "forget:canon.txt@3", "positions": [17, 19],
     "alpha": 5.0, "targets": [1012, 13], "verdict": "incorrect", "fix": " said",
     "reviewer": "ann@example.org", "created_at": "2026-11-27T10:00:00+00:00",
     "source": "20261127T120000Z.json"}

* required: ``key`` (``<block_id>:<positions[0]>``), ``block_id``, ``positions`` (ascending
  original positions, the task's uncertain ones), ``verdict`` (``correct``, ``incorrect`` or
  ``unsure``), ``reviewer``, ``created_at`` (ISO 8601 with a timezone);
* optional: ``fix`` (only with ``incorrect``: the exact text that should follow the translated
  context, leading space included, e.g. ``" said"``), ``alpha`` and ``targets`` (the alpha and the
  generic target ids the reviewer judged, one per position: a decision whose alpha or targets no
  longer match the dataset is *stale*), ``note``, ``source`` (the export snapshot). Any other
  field is an error.

Applying (the ``dataset`` stage, :func:`apply_decisions`):

* several records with one key: the latest ``created_at`` wins (ties: the later line); the
  others are *superseded*;
* a record naming a block the dataset lacks or a position outside its block is an error (all of
  them listed, ``<file>:<line>: <problem>``); so is a ``fix`` that encodes to no token;
* a winning record is *stale*, and skipped (counted in the dataset card), when its ``alpha``
  differs from ``dataset.alpha``, its ``targets`` differ from the current generic targets, or
  one of its positions is not trained on;
* ``correct`` and ``unsure`` change nothing;
* ``incorrect`` without ``fix``: every position of the task leaves the loss (label ``-100``,
  ``loss_mask`` 0);
* ``incorrect`` with ``fix``: at the first position (where the shown context ends) the first
  token of the tokenized fix becomes the hard target, with a one-hot soft target (``top_ids``
  starts with it, ``top_probs`` is ``[1, 0, ...]``, ``confidence`` 1); the task's other positions
  leave the loss (the fix says what comes next after the context only; the later targets are
  predictions after the *original* next tokens, which the fix does not correct).

Records apply in time order (``created_at``, then line), so a later decision on an overlapping
task overrides an earlier one position by position.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.review.records import field_problems, int_problem, json_type, read_records, string_problem, time_problem
from schemas.dataset import IGNORE

DECISIONS_FORMAT = "linguistic_decisions_v1"
VERDICTS = ("correct", "incorrect", "unsure")
REQUIRED_FIELDS = ("key", "block_id", "positions", "verdict", "reviewer", "created_at")
OPTIONAL_FIELDS = ("fix", "alpha", "targets", "note", "source")
FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
MARK = ("⟦", "⟧")
ELLIPSIS = "…"
END_OF_BLOCK = "(end of block)"

Decode = Callable[[list[int]], str]
Encode = Callable[[str], list[int]]


class DecisionsError(PipelineError):
    """The linguistic decisions file is malformed or names blocks or positions that do not exist."""


# --------------------------------------------------------------------------------------------
# Tasks


def uncertain_positions(confidence: Sequence[float], loss_mask: Sequence[int], *, threshold: float) -> list[int]:
    """Trained positions whose confidence is below ``threshold`` ([n] -> ascending positions)."""
    conf = np.asarray(confidence, dtype=float)
    mask = np.asarray(loss_mask, dtype=int)
    return np.flatnonzero((mask == 1) & (conf < threshold)).tolist()


def group_positions(positions: Sequence[int], *, gap: int, span: int) -> list[list[int]]:
    """Ascending positions cut into groups: a position joins the current group when it is at
    most ``gap`` after the group's last one and within ``span`` positions of its first one."""
    groups: list[list[int]] = []
    for position in positions:
        if groups and position - groups[-1][-1] <= gap and position - groups[-1][0] < span:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def task_key(block_id: str, first: int) -> str:
    return f"{block_id}:{first}"


def linguistic_tasks(
    blocks: pd.DataFrame, labels: pd.DataFrame, *, decode: Decode, alpha: float, threshold: float, gap: int,
    span: int, context_tokens: int, max_tasks: int,
) -> list[dict[str, Any]]:
    """Review tasks for the uncertain generic labels (rules in the module docstring).

    Args:
        blocks: ``blocks`` rows (``block_id``, ``translated_ids`` [m], ``alignment`` [n],
            ``loss_mask`` [n]).
        labels: ``generic_labels`` rows at ``alpha`` (``block_id``, ``target`` [n],
            ``confidence`` [n]).
        decode: token ids -> text (the baseline's tokenizer).

    Returns:
        One dict per task, ``{"data": {...}}``, the least confident first.
    """
    by_block = labels.set_index("block_id")
    found = []
    for block in blocks.itertuples(index=False):
        if block.block_id not in by_block.index:
            continue
        row = by_block.loc[block.block_id]
        targets = [int(t) for t in row["target"]]
        confidence = [float(c) for c in row["confidence"]]
        mask = [int(m) for m in block.loss_mask]
        alignment = [int(j) for j in block.alignment]
        translated = [int(t) for t in block.translated_ids]
        trained = [m == 1 and j >= 0 for m, j in zip(mask, alignment)]
        uncertain = uncertain_positions(confidence, trained, threshold=threshold)
        for positions in group_positions(uncertain, gap=gap, span=span):
            found.append((min(confidence[p] for p in positions), task_key(block.block_id, positions[0]),
                          _task_data(block.block_id, positions, targets, confidence, trained, alignment,
                                     translated, decode=decode, alpha=alpha, context_tokens=context_tokens)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [{"data": data} for _, _, data in found[:max_tasks]]


def _task_data(block_id: str, positions: list[int], targets: list[int], confidence: list[float], trained: list[bool],
               alignment: list[int], translated: list[int], *, decode: Decode, alpha: float,
               context_tokens: int) -> dict[str, Any]:
    first, last = positions[0], positions[-1]
    end = alignment[first] + 1
    start = max(0, end - context_tokens)
    context = (ELLIPSIS if start > 0 else "") + decode(translated[start:end])
    marked = set(positions)
    pieces = []
    for p in range(first, last + 1):
        if trained[p]:
            token = decode([targets[p]])
            pieces.append(f"{MARK[0]}{token}{MARK[1]}" if p in marked else token)
    actual = decode(translated[end:alignment[last] + 2])
    if alignment[last] + 1 >= len(translated):
        actual += END_OF_BLOCK
    details = "; ".join(f"{p}: {json.dumps(decode([targets[p]]), ensure_ascii=False)} p={confidence[p]:.3f}"
                        for p in positions)
    return {
        "key": task_key(block_id, first), "block_id": block_id, "positions": positions, "alpha": alpha,
        "targets": [targets[p] for p in positions], "confidence": [round(confidence[p], 4) for p in positions],
        "translated": context, "continuation": "".join(pieces), "actual": actual, "uncertain": details,
    }


def fix_text(typed: str | None, context: str) -> str | None:
    """A reviewer's fix as the exact text that follows ``context`` (``None`` when blank).

    Blanks around it are stripped; it gets one leading space when the reviewer typed one, or
    when it starts with a letter or digit and the context ends with neither a blank nor an
    opening bracket or quote (a reviewer types ``said``, meaning the next word).
    """
    if typed is None or not typed.strip():
        return None
    text = typed.strip()
    if typed[0].isspace():
        return " " + text
    if text[0].isalnum() and context and not context[-1].isspace() and context[-1] not in "([{\"'“‘":
        return " " + text
    return text


# --------------------------------------------------------------------------------------------
# The decisions file


def decision_problems(record: Mapping[str, Any]) -> list[str]:
    """Every problem of one record of the decisions file (``[]`` when valid); ``None`` is absent."""
    problems = field_problems(record, FIELDS, REQUIRED_FIELDS)
    for name in ("key", "block_id", "reviewer"):
        if record.get(name) is not None and (problem := string_problem(name, record[name])):
            problems.append(problem)
    if record.get("created_at") is not None and (problem := time_problem("created_at", record["created_at"])):
        problems.append(problem)
    verdict = record.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        problems.append(f"unknown verdict {verdict!r} (expected one of: {', '.join(VERDICTS)})")
    positions = record.get("positions")
    positions_ok = False
    if positions is not None:
        if not isinstance(positions, list) or not positions:
            problems.append(f"field 'positions' must be a non-empty list of integers, got {json_type(positions)}")
        elif found := [p for p in (int_problem("positions[]", v, low=0) for v in positions) if p]:
            problems.append(found[0])
        elif any(b <= a for a, b in zip(positions, positions[1:])):
            problems.append(f"field 'positions' must be strictly ascending: {positions}")
        else:
            positions_ok = True
    if positions_ok and isinstance(record.get("block_id"), str) and isinstance(record.get("key"), str):
        expected = task_key(record["block_id"], positions[0])
        if record["key"] != expected:
            problems.append(f"field 'key' is {record['key']!r}, expected {expected!r} (<block_id>:<first position>)")
    fix = record.get("fix")
    if fix is not None:
        if problem := string_problem("fix", fix):
            problems.append(problem)
        elif verdict != "incorrect":
            problems.append(f"field 'fix' is only used with verdict 'incorrect' (verdict: {verdict!r})")
    alpha = record.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0):
        problems.append(f"field 'alpha' must be a number >= 0, got {alpha!r}")
    targets = record.get("targets")
    if targets is not None:
        if not isinstance(targets, list) or any(int_problem("targets[]", t, low=0) for t in targets):
            problems.append(f"field 'targets' must be a list of token ids, got {targets!r}")
        elif positions_ok and len(targets) != len(positions):
            problems.append(f"field 'targets' has {len(targets)} ids for {len(positions)} positions")
    for name in ("note", "source"):
        if record.get(name) is not None and not isinstance(record[name], str):
            problems.append(f"field {name!r} must be a string, got {json_type(record[name])}")
    return problems


@dataclass(frozen=True)
class LinguisticDecision:
    """One validated record of the decisions file, with where it came from (1-based line)."""

    record: Mapping[str, Any]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.record["created_at"])

    def __getattr__(self, name: str) -> Any:  # record fields as attributes (absent: None)
        if name in FIELDS:
            return self.record.get(name)
        raise AttributeError(name)


def load_decisions(path: Path | str) -> list[LinguisticDecision]:
    """The decisions file's records in file order (missing file: none); every problem of the
    file in one :class:`DecisionsError`, each as ``<file>:<line>: <problem>``."""
    found = read_records(path, check=decision_problems, what=f"linguistic decisions file (format {DECISIONS_FORMAT}, "
                         "see pipeline/review/linguistic.py)", error=DecisionsError)
    return [LinguisticDecision(record, str(path), line) for line, record in found]


# --------------------------------------------------------------------------------------------
# Applying the decisions (the dataset stage)


@dataclass
class ReviewOutcome:
    """What the decisions did to the dataset (counts for the card and the manifest)."""

    decisions: int = 0
    """Records in the file."""
    applied: int = 0
    """Winning, not stale records (any verdict)."""
    incorrect: int = 0
    """Applied records with verdict ``incorrect``."""
    dropped: int = 0
    """Positions the review left out of the loss."""
    fixed: int = 0
    """Positions whose target is a reviewer's fix."""
    superseded: int = 0
    stale: list[str] = field(default_factory=list)
    """``<file>:<line>: <why>`` of each stale decision."""

    def as_dict(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "applied": self.applied, "incorrect": self.incorrect,
                "dropped_positions": self.dropped, "fixed_positions": self.fixed, "superseded": self.superseded,
                "stale": len(self.stale)}


def apply_decisions(
    frame: pd.DataFrame, decisions: Sequence[LinguisticDecision], *, targets: Mapping[str, Sequence[int]],
    alpha: float, encode: Callable[[], Encode] | None = None,
) -> tuple[pd.DataFrame, ReviewOutcome]:
    """Apply linguistic decisions to the training rows (rules in the module docstring).

    Args:
        frame: one row per block: ``block_id``, ``labels`` [n], ``loss_mask`` [n], ``top_ids``
            [n][k], ``top_probs`` [n][k], ``confidence`` [n], before any decision.
        decisions: the decisions file's records.
        targets: block id -> the generic argmax targets [n] at ``alpha`` (what reviewers judged).
        alpha: the dataset's alpha.
        encode: returns the text -> token ids function (called only when a fix is applied, so
            the tokenizer loads only then).

    Returns:
        A new frame (rows without decisions untouched) and the :class:`ReviewOutcome`.
    """
    outcome = ReviewOutcome(decisions=len(decisions))
    rows = {block: index for index, block in enumerate(frame["block_id"])}
    lengths = [len(v) for v in frame["labels"]]
    problems = []
    for d in decisions:
        if d.block_id not in rows:
            problems.append(f"{d.where}: block {d.block_id!r} is not in the dataset (a different corpus, "
                            "blocks.block_size or blocks.max_blocks than when it was reviewed?)")
        elif outside := [p for p in d.positions if p >= lengths[rows[d.block_id]]]:
            problems.append(f"{d.where}: position {outside[0]} is outside block {d.block_id!r} "
                            f"({lengths[rows[d.block_id]]} positions)")
    if problems:
        raise DecisionsError("\n".join([f"{len(problems)} linguistic decision(s) name blocks or positions that do "
                                        "not exist; nothing was written", *(f"  - {p}" for p in problems)]))

    latest: dict[str, LinguisticDecision] = {}
    for d in decisions:
        if d.key not in latest or d.moment >= latest[d.key].moment:
            latest[d.key] = d
    outcome.superseded = len(decisions) - len(latest)
    columns = {name: list(frame[name]) for name in ("labels", "loss_mask", "top_ids", "top_probs", "confidence")}
    trained = {b: columns["loss_mask"][i] for b, i in rows.items()}
    winners = []
    for d in sorted(latest.values(), key=lambda d: (d.moment, d.line)):
        reason = _stale(d, alpha=alpha, targets=targets[d.block_id], mask=trained[d.block_id])
        if reason:
            outcome.stale.append(f"{d.where}: {reason}")
        else:
            winners.append(d)
    outcome.applied = len(winners)

    encoder: Encode | None = None
    state: dict[tuple[str, int], str] = {}
    copied: set[int] = set()
    for d in winners:
        if d.verdict != "incorrect":
            continue
        outcome.incorrect += 1
        row = rows[d.block_id]
        if row not in copied:  # lists of the rows we change only; the others stay as read
            for name, values in columns.items():
                values[row] = [list(map(_plain, v)) if _is_list(v) else _plain(v) for v in values[row]]
            copied.add(row)
        drop = list(d.positions)
        if d.fix is not None:
            if encoder is None:
                if encode is None:
                    raise DecisionsError(f"{d.where}: a fix needs the tokenizer, and none was given")
                encoder = encode()
            ids = encoder(d.fix)
            if not ids:
                raise DecisionsError(f"{d.where}: the fix {d.fix!r} encodes to no token")
            first, drop = drop[0], drop[1:]
            k = len(columns["top_ids"][row][first])
            columns["labels"][row][first] = int(ids[0])
            columns["loss_mask"][row][first] = 1
            columns["top_ids"][row][first] = ([int(ids[0])] + [t for t in columns["top_ids"][row][first]
                                                               if t != ids[0]])[:max(k, 1)]
            columns["top_probs"][row][first] = [1.0] + [0.0] * (max(k, 1) - 1)
            columns["confidence"][row][first] = 1.0
            state[(d.block_id, first)] = "fixed"
        for p in drop:
            columns["labels"][row][p] = IGNORE
            columns["loss_mask"][row][p] = 0
            state[(d.block_id, p)] = "dropped"
    outcome.dropped = sum(v == "dropped" for v in state.values())
    outcome.fixed = sum(v == "fixed" for v in state.values())
    result = frame.copy()
    for name, values in columns.items():
        result[name] = values
    return result, outcome


def _stale(d: LinguisticDecision, *, alpha: float, targets: Sequence[int], mask: Sequence[int]) -> str | None:
    if d.alpha is not None and float(d.alpha) != float(alpha):
        return f"made at alpha {d.alpha}, the dataset uses alpha {alpha}"
    if not_trained := [p for p in d.positions if int(mask[p]) != 1]:
        return f"position {not_trained[0]} is not trained on (the alignment drops it now)"
    if d.targets is not None:
        now = [int(targets[p]) for p in d.positions]
        if now != list(d.targets):
            return f"the generic targets changed since the review ({list(d.targets)} then, {now} now)"
    return None


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (lists we edit hold one type)."""
    return value.item() if isinstance(value, np.generic) else value
