"""Choosing training blocks, on tiny hand-made candidates (pipeline.core.block_selection)."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.core.block_selection import (
    Candidate,
    anchor_weights,
    coverage_summary,
    replay_gains,
    select,
    select_anchors,
    select_first,
    select_spread,
)

ONE = {"x": 1.0, "y": 1.0, "z": 1.0, "h": 1.0, "m": 1.0}


def _c(doc: str, i: int, **counts: int) -> Candidate:
    return Candidate(f"{doc}@{i}", doc, counts)


def test_greedy_picks_the_block_that_covers_most():
    candidates = [_c("d", 0, x=1), _c("d", 1, x=1, y=1), _c("d", 2, z=1)]
    chosen = select_anchors(candidates, 2, weights=ONE, document_penalty=0.0)
    assert chosen.order == [1, 2]  # x and y at once, then the z nobody else has
    assert chosen.gains == [2.0, 1.0]


def test_a_frequent_anchor_has_diminishing_returns():
    # Two blocks full of "h", one with a single "m": after the first "h" block, the second adds
    # sqrt(8) - sqrt(4) = 0.83 < the 1.0 of a first "m" (a linear gain would say 4 > 1).
    candidates = [_c("d", 0, h=4), _c("d", 1, h=4), _c("d", 2, m=1)]
    chosen = select_anchors(candidates, 3, weights=ONE, document_penalty=0.0)
    assert chosen.order == [0, 2, 1]
    assert chosen.gains == pytest.approx([2.0, 1.0, math.sqrt(8) - 2.0])


def test_weights_decide_between_equal_counts():
    candidates = [_c("d", 0, x=1), _c("d", 1, y=1)]
    assert select_anchors(candidates, 1, weights={"x": 1.0, "y": 3.0}).order == [1]


def test_the_document_penalty_spreads_the_choice_over_documents():
    # One long story rich in anchors, one shorter story a little poorer.
    candidates = [_c("a", 0, x=1), _c("a", 1, y=1), _c("a", 2, z=1), _c("b", 0, h=1), _c("b", 1, m=1)]
    weights = {"x": 1.0, "y": 1.0, "z": 1.0, "h": 0.8, "m": 0.8}
    assert select_anchors(candidates, 3, weights=weights, document_penalty=0.0).order == [0, 1, 2]
    # Penalty 1: a second block of "a" is worth 1 / 2 < 0.8, so "b" takes its turn.
    assert select_anchors(candidates, 3, weights=weights, document_penalty=1.0).order == [0, 3, 1]
    with pytest.raises(ValueError, match="document_penalty"):
        select_anchors(candidates, 3, weights=weights, document_penalty=-1.0)


def test_ties_go_to_the_earlier_block_and_the_choice_is_deterministic():
    # 1 and 2 tie at 1.0, 0 and 3 at 0.0 (no anchor): each tie goes to the earlier block.
    candidates = [_c("d", 0), _c("d", 1, y=1), _c("d", 2, x=1), _c("d", 3)]
    assert select_anchors(candidates, 4, weights=ONE, document_penalty=0.0).order == [1, 2, 0, 3]
    assert select_anchors(list(reversed(candidates)), 1, weights=ONE).order == [1]  # "d@2" is now second
    # The order of anchors inside a block's counts changes nothing.
    forward = [_c("d", 0, x=2, y=1, z=3), _c("d", 1, z=3, y=1, x=2)]
    backward = [Candidate("d@0", "d", dict(reversed(forward[0].anchor_counts.items()))), forward[1]]
    assert select_anchors(forward, 2, weights=ONE).order == select_anchors(backward, 2, weights=ONE).order == [0, 1]


def test_more_blocks_than_exist_gives_all_of_them():
    candidates = [_c("d", 0, x=1), _c("d", 1), _c("e", 0, y=2)]
    for method in ("first", "spread", "anchors"):
        for k in (3, 10, None):
            assert sorted(select(candidates, k, method=method, weights=ONE).order) == [0, 1, 2], (method, k)
    assert select(candidates, 0, method="anchors", weights=ONE).order == []
    with pytest.raises(ValueError, match="unknown block selection"):
        select(candidates, 1, method="best", weights=ONE)


def _naive_greedy(candidates, k, weights, penalty):
    chosen, covered, per_doc = [], {}, {}
    for _ in range(k):
        best, best_gain = None, -1.0
        for position, c in enumerate(candidates):
            if position in chosen:
                continue
            gain = sum(weights.get(a, 0.0) * (math.sqrt(covered.get(a, 0) + n) - math.sqrt(covered.get(a, 0)))
                       for a, n in c.anchor_counts.items()) / (1 + penalty * per_doc.get(c.doc_id, 0))
            if gain > best_gain + 1e-12:
                best, best_gain = position, gain
        chosen.append(best)
        for a, n in candidates[best].anchor_counts.items():
            covered[a] = covered.get(a, 0) + n
        per_doc[candidates[best].doc_id] = per_doc.get(candidates[best].doc_id, 0) + 1
    return chosen


@pytest.mark.parametrize("seed", range(8))
def test_the_lazy_greedy_picks_what_the_plain_greedy_picks(seed: int):
    rng = random.Random(seed)
    anchors = [f"a{i}" for i in range(15)]
    weights = {a: rng.choice([0.5, 1.0, 2.0, 3.5]) for a in anchors}
    candidates = [
        _c(f"doc{rng.randrange(3)}", i, **{a: rng.randint(1, 4) for a in rng.sample(anchors, rng.randint(0, 5))})
        for i in range(30)
    ]
    candidates.sort(key=lambda c: c.doc_id)  # block order: documents by id
    for penalty in (0.0, 1.0):
        lazy = select_anchors(candidates, 12, weights=weights, document_penalty=penalty)
        assert lazy.order == _naive_greedy(candidates, 12, weights, penalty)
        assert lazy.gains == pytest.approx(replay_gains(candidates, lazy.order, weights=weights, document_penalty=penalty))


def test_first_and_spread():
    candidates = [_c("a", i) for i in range(5)] + [_c("b", i) for i in range(2)]
    assert select_first(candidates, 3) == [0, 1, 2]
    # Turns a, b, a, b: a takes 2 of its 5 blocks (evenly spaced: 0 and 2), b both of its 2.
    assert select_spread(candidates, 4) == [0, 5, 2, 6]
    # A fifth: b has run out, a takes a third turn (0, 1, 3 of its 5).
    assert select_spread(candidates, 5) == [0, 5, 1, 6, 3]
    assert sorted(select_spread(candidates, None)) == list(range(7))


def test_anchor_weights_by_frequency_and_specificity():
    weights = anchor_weights(["Holmes", "Moor", "Added", "Never"], [99, 3, 7, 0], [4.0, 1.0, None, 2.0])
    # The median of the known scores (1.0, 2.0, 4.0) stands in for the missing one.
    assert weights == pytest.approx({"Holmes": math.sqrt(math.log(100) * 4.0), "Moor": math.sqrt(math.log(4) * 1.0),
                                     "Added": math.sqrt(math.log(8) * 2.0), "Never": 0.0})
    assert anchor_weights(["a"], [1], [float("nan")]) == pytest.approx({"a": math.sqrt(math.log(2))})
    assert anchor_weights(["a"], [1], [-3.0]) == {"a": 0.0}


def test_coverage_summary_counts_what_the_choice_covers():
    candidates = [_c("a", 0, x=2), _c("a", 1, y=1), _c("b", 0, x=1)]
    weights = {"x": 3.0, "y": 1.0, "w": 4.0}  # "w" occurs in no block at all
    summary = coverage_summary(candidates, [0], weights=weights)
    assert summary == {
        "anchors": 3, "anchors_in_candidates": 2, "anchors_covered": 1,
        "anchor_weight_share": 0.375, "anchor_weight_share_reachable": 0.75,
        "anchor_occurrences": 4, "anchor_occurrences_covered": 2, "documents": 2, "documents_covered": 1,
    }
