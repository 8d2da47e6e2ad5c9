"""Choosing the forget blocks to train on (pure functions; the ``blocks`` stage does the I/O).

The forget corpus yields more blocks than a run trains on (``blocks.max_blocks``). Which ones
decides what the model is taught to forget: the first N pages of the first book hold few of the
corpus's names. Three ways to choose ``k`` of the ``n`` candidate blocks:

* ``first``: the first ``k`` in block order (documents by id, blocks by index).
* ``spread``: documents take turns (by id) until ``k`` are taken; each document's share is
  spread evenly over it (:func:`pipeline.core.sampling.evenly_spaced`).
* ``anchors``: weighted greedy maximum coverage of the dictionary's anchors. With ``c_a`` the
  occurrences of anchor ``a`` in the blocks chosen so far and ``n_ab`` its occurrences in block
  ``b``, the next block is the one with the largest

      gain(b) = sum_a w_a * (sqrt(c_a + n_ab) - sqrt(c_a)) / (1 + document_penalty * m_d(b))

  where ``m_d(b)`` counts the blocks already chosen from ``b``'s document. The square root gives
  diminishing returns (a first occurrence of an anchor is worth more than a tenth of a
  frequent one), the penalty spreads the choice over documents so one story does not take
  every block. Ties go to the earlier block (block order), so the choice is deterministic.
  Both factors only shrink as blocks are chosen, so a stale gain is an upper bound and the
  lazy greedy (a heap re-evaluating only the top) picks exactly what the plain greedy picks.

Anchor weights (:func:`anchor_weights`): ``w_a = sqrt(log(1 + forget_count_a) * max(score_a, 0))``,
the geometric mean of the anchor's frequency in the forget corpus (dampened) and its
specificity (the miner's score: weighted log-odds of forget against reference text); an anchor
without a score (added by a reviewer) takes the median score. The geometric mean keeps the
weights within a factor of about 12 on the Sherlock Holmes dictionary: with the plain product
(a factor of 145) the first picks chase the blocks densest in "Holmes" and "Watson", which every
block mentions anyway, and 16 blocks covered 106 distinct anchors instead of 181.

Candidates come in block order; positions in that list are what these functions return.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.sampling import evenly_spaced

Method = Literal["first", "spread", "anchors"]
METHODS: tuple[str, ...] = ("first", "spread", "anchors")


@dataclass(frozen=True)
class Candidate:
    """A block that could be trained on: its document and its anchor occurrences
    (``anchor -> count`` of occurrences lying wholly inside the block)."""

    block_id: str
    doc_id: str
    anchor_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """Chosen candidates in the order they were chosen, with each one's gain when chosen
    (the formula above, whatever the method)."""

    order: list[int]
    gains: list[float]


def anchor_weights(
    anchors: Sequence[str], forget_counts: Sequence[int], scores: Sequence[float | None],
) -> dict[str, float]:
    """``w_a = sqrt(log(1 + forget_count) * max(score, 0))``; a missing score (None or NaN)
    counts as the median of the others (1.0 when none has one)."""
    known = sorted(float(s) for s in scores if s is not None and not math.isnan(s))
    median = (known[(len(known) - 1) // 2] + known[len(known) // 2]) / 2 if known else 1.0
    weights = {}
    for anchor, count, score in zip(anchors, forget_counts, scores, strict=True):
        specificity = median if score is None or math.isnan(score) else float(score)
        weights[anchor] = math.sqrt(math.log1p(max(int(count), 0)) * max(specificity, 0.0))
    return weights


def _gain(candidate: Candidate, covered: Mapping[str, int], weights: Mapping[str, float], doc_share: float) -> float:
    # sorted(): one summation order, so an unchanged candidate recomputes to the same bits.
    total = 0.0
    for anchor in sorted(candidate.anchor_counts):
        weight = weights.get(anchor, 0.0)
        if weight:
            before = covered.get(anchor, 0)
            total += weight * (math.sqrt(before + candidate.anchor_counts[anchor]) - math.sqrt(before))
    return total / doc_share


class _Coverage:
    """What the blocks chosen so far cover: occurrences per anchor, blocks per document."""

    def __init__(self, weights: Mapping[str, float], document_penalty: float) -> None:
        self.weights, self.document_penalty = weights, document_penalty
        self.anchors: dict[str, int] = {}
        self.documents: dict[str, int] = {}

    def gain(self, candidate: Candidate) -> float:
        share = 1.0 + self.document_penalty * self.documents.get(candidate.doc_id, 0)
        return _gain(candidate, self.anchors, self.weights, share)

    def add(self, candidate: Candidate) -> None:
        for anchor, count in candidate.anchor_counts.items():
            self.anchors[anchor] = self.anchors.get(anchor, 0) + count
        self.documents[candidate.doc_id] = self.documents.get(candidate.doc_id, 0) + 1


def select_first(candidates: Sequence[Candidate], k: int | None) -> list[int]:
    """The first ``k`` candidates (all when ``k`` is None or larger)."""
    return list(range(len(candidates) if k is None else min(k, len(candidates))))


def select_spread(candidates: Sequence[Candidate], k: int | None) -> list[int]:
    """Documents take turns (by id) until ``k`` are taken; within a document its share is
    evenly spaced. Returned in the order of the turns."""
    by_doc: dict[str, list[int]] = {}
    for position, candidate in enumerate(candidates):
        by_doc.setdefault(candidate.doc_id, []).append(position)
    docs = sorted(by_doc)
    quota = dict.fromkeys(docs, 0)
    remaining = len(candidates) if k is None else min(k, len(candidates))
    turn = 0
    while remaining:
        for doc in docs:
            if remaining and turn < len(by_doc[doc]):
                quota[doc] += 1
                remaining -= 1
        turn += 1
    picked = {doc: [by_doc[doc][i] for i in evenly_spaced(len(by_doc[doc]), quota[doc])] for doc in docs}
    return [picked[doc][t] for t in range(turn) for doc in docs if t < len(picked[doc])]


def select_anchors(
    candidates: Sequence[Candidate], k: int | None, *, weights: Mapping[str, float], document_penalty: float = 1.0,
) -> Selection:
    """Greedy weighted anchor coverage (module docstring), lazily evaluated; ties to the
    earlier candidate. ``k`` None or above ``len(candidates)``: all of them, in greedy order."""
    if document_penalty < 0:
        raise ValueError(f"document_penalty must be >= 0, got {document_penalty}")
    k = len(candidates) if k is None else min(k, len(candidates))
    coverage = _Coverage(weights, document_penalty)
    # (-gain, position, round the gain was computed in): the heap's order is the tie rule.
    heap = [(-coverage.gain(c), position, 0) for position, c in enumerate(candidates)]
    heapq.heapify(heap)
    order: list[int] = []
    gains: list[float] = []
    while len(order) < k:
        negative_gain, position, computed_in = heapq.heappop(heap)
        if computed_in == len(order):  # fresh: no other candidate can beat it
            order.append(position)
            gains.append(-negative_gain)
            coverage.add(candidates[position])
        else:
            heapq.heappush(heap, (-coverage.gain(candidates[position]), position, len(order)))
    return Selection(order, gains)


def replay_gains(
    candidates: Sequence[Candidate], order: Sequence[int], *, weights: Mapping[str, float], document_penalty: float = 1.0,
) -> list[float]:
    """The gain of each chosen candidate at its turn, for a choice made any way."""
    coverage = _Coverage(weights, document_penalty)
    gains = []
    for position in order:
        gains.append(coverage.gain(candidates[position]))
        coverage.add(candidates[position])
    return gains


def select(
    candidates: Sequence[Candidate], k: int | None, *, method: Method, weights: Mapping[str, float],
    document_penalty: float = 1.0,
) -> Selection:
    """Choose with ``method``; gains are reported with the same weights for every method."""
    if method == "anchors":
        return select_anchors(candidates, k, weights=weights, document_penalty=document_penalty)
    if method == "first":
        order = select_first(candidates, k)
    elif method == "spread":
        order = select_spread(candidates, k)
    else:
        raise ValueError(f"unknown block selection {method!r} (one of {', '.join(METHODS)})")
    return Selection(order, replay_gains(candidates, order, weights=weights, document_penalty=document_penalty))


def coverage_summary(
    candidates: Sequence[Candidate], chosen: Sequence[int], *, weights: Mapping[str, float],
) -> dict[str, float | int]:
    """What a choice covers, against the whole dictionary (``weights``) and against what the
    candidates hold at all (``reachable``): distinct anchors, their weight, occurrences,
    documents."""
    def anchors_of(positions) -> dict[str, int]:
        counts: dict[str, int] = {}
        for position in positions:
            for anchor, count in candidates[position].anchor_counts.items():
                counts[anchor] = counts.get(anchor, 0) + count
        return counts

    everywhere, covered = anchors_of(range(len(candidates))), anchors_of(chosen)
    total_weight = sum(weights.values())
    reachable_weight = sum(weights.get(a, 0.0) for a in everywhere)
    covered_weight = sum(weights.get(a, 0.0) for a in covered)
    return {
        "anchors": len(weights),
        "anchors_in_candidates": len(everywhere),
        "anchors_covered": len(covered),
        "anchor_weight_share": round(covered_weight / total_weight, 6) if total_weight else 0.0,
        "anchor_weight_share_reachable": round(covered_weight / reachable_weight, 6) if reachable_weight else 0.0,
        "anchor_occurrences": sum(everywhere.values()),
        "anchor_occurrences_covered": sum(covered.values()),
        "documents": len({c.doc_id for c in candidates}),
        "documents_covered": len({candidates[p].doc_id for p in chosen}),
    }
