"""Evaluation metrics of an unlearned model (docs/algorithm.md, Evaluation): pure functions.

The stage ``pipeline/evaluate.py`` does the I/O; running the model for probes and verbatim
windows is :mod:`pipeline.core.generation`, grading completions :mod:`pipeline.core.grading`,
confidence intervals :mod:`pipeline.core.bootstrap`.

* Leakage: :func:`min_k_score` per window (Min-K% Prob, arXiv 2310.16789); the membership AUC
  of text trained on against text never trained on is :func:`pipeline.core.bootstrap.auc_of`,
  perplexity :func:`pipeline.core.bootstrap.perplexity_of` (statistics with intervals).
* Familiarity by completion: :func:`completion_score` per completion, whose mean is the
  paper's :func:`familiarity`, (5 x count(3) + count(2)) / N.
* Verbatim memorisation and greedy answers: :func:`rouge_l` (ROUGE-L F1, ``rouge-score``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


def min_k_score(logprobs: np.ndarray, k_percent: float) -> float:
    """Min-K% Prob of one block: the mean of its lowest ``k_percent`` % token log-probs (at least
    one token). Higher means the model finds even the block's hardest tokens likely: a member."""
    if not len(logprobs):
        raise ValueError("a block needs at least one scored token (two tokens) for Min-K%")
    count = max(1, int(len(logprobs) * k_percent / 100))
    return float(np.sort(logprobs)[:count].mean())


# --------------------------------------------------------------------------- completions and text


def completion_score(grade: int) -> int:
    """A completion's share of :func:`familiarity`: 5 for grade 3, 1 for grade 2, else 0."""
    return {3: 5, 2: 1}.get(grade, 0)


def familiarity(grades: Sequence[int]) -> float | None:
    """The paper's familiarity score, (5 x count(3) + count(2)) / N, in [0, 5]; None if N = 0."""
    if not grades:
        return None
    return sum(completion_score(g) for g in grades) / len(grades)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # No stemming: verbatim memorisation asks for the same words, not related ones.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of ``prediction`` against ``reference`` in [0, 1]: the longest common
    subsequence of their words (lower-cased, letters and digits only, as ``rouge-score``
    tokenizes), as F1 of its precision and recall. 0 when either has no word."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)
