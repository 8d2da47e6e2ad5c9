"""Per-unit evaluation metrics (pipeline/core/metrics.py) against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import metrics


def test_min_k_averages_the_lowest_k_percent_of_token_log_probs():
    logprobs = -np.arange(1, 11, dtype=float)  # -1 ... -10
    assert metrics.min_k_score(logprobs, 20) == pytest.approx(-9.5)  # mean of -9, -10
    assert metrics.min_k_score(logprobs, 100) == pytest.approx(-5.5)
    assert metrics.min_k_score(logprobs, 1) == pytest.approx(-10.0)  # at least one token
    with pytest.raises(ValueError):
        metrics.min_k_score(np.array([]), 20)


def test_familiarity_is_five_times_grade_three_plus_grade_two_over_n():
    assert metrics.familiarity([3, 3, 2, 1, 0]) == pytest.approx((5 * 2 + 1) / 5)
    assert metrics.familiarity([0, 1, 1]) == 0.0
    assert metrics.familiarity([3]) == 5.0
    assert metrics.familiarity([]) is None



def test_completion_score_is_each_completions_share_of_familiarity():
    grades = [3, 2, 1, 0, 3]
    assert [metrics.completion_score(g) for g in grades] == [5, 1, 0, 0, 5]
    assert np.mean([metrics.completion_score(g) for g in grades]) == pytest.approx(metrics.familiarity(grades))


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("the red-headed league", "the red-headed league", 1.0),
    ("The Red Headed League!", "the red-headed league", 1.0),  # case and punctuation are not words
    ("a b c d", "a x c y", 0.5),  # LCS "a c": precision 2/4, recall 2/4
    (" Street, London", " Street", 2 / 3),  # P = 1/2, R = 1: F1 = 2/3
    ("Moriarty", "Holmes", 0.0),
    ("", "Holmes", 0.0),
])
def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence(prediction, reference, expected):
    assert metrics.rouge_l(prediction, reference) == pytest.approx(expected)


def test_rouge_l_keeps_word_order():
    # same words, reversed: the longest common subsequence is one word
    assert metrics.rouge_l("c b a", "a b c") == pytest.approx(1 / 3)
