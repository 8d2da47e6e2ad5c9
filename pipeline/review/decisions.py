"""How the ``dataset`` stage applies the linguistic review's decisions (pure; the stage does the I/O).

The decisions file is ``labels/linguistic/decisions.jsonl`` (format ``linguistic_decisions_v1``:
:class:`pipeline.review.records.LinguisticDecision`; the review that writes it:
:mod:`pipeline.review.linguistic`). :func:`apply_decisions`:

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.review.records import DecisionsError, LinguisticDecision, load_decisions
from schemas.dataset import IGNORE

__all__ = ["DecisionsError", "ReviewOutcome", "apply_decisions", "load_decisions"]
# (DecisionsError and load_decisions are the dataset stage's, from records.)

Encode = Callable[[str], list[int]]


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
