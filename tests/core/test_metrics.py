"""Evaluation metrics (pipeline/core/metrics.py) against hand-computed answers.

A bigram "model" whose logits are a fixed table row per input token gives exact probabilities,
ranks and perplexities; the tiny random Llama checks the same functions through a real
transformers model (padding, batching, generation).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.core import metrics as evaluation
from pipeline.core.metrics import AnswerScore, TermMatcher

V = 10


class BigramLM(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: the next-token distribution depends on the last token only."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone().float(), requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _peaked(winner: int = 5, height: float = 10.0) -> BigramLM:
    """After any token, ``winner`` has logit ``height`` and every other token 0."""
    table = torch.zeros(V, V)
    table[:, winner] = height
    return BigramLM(table)


# ------------------------------------------------------------------ probabilities and ranks


def test_the_favoured_token_ranks_first_with_its_softmax_probability():
    model = _peaked(winner=5, height=10.0)
    best, other = evaluation.score_answers(model, [([1, 2], [5]), ([1, 2], [6])], pad_id=0)
    p_best = math.exp(10) / (math.exp(10) + V - 1)
    assert best.first_rank == 1 and best.top1
    assert best.first_prob == pytest.approx(p_best, rel=1e-5)
    assert best.prob == pytest.approx(p_best, rel=1e-5)
    # token 6 ties with the 8 other zero-logit tokens and is counted last of them, behind token 5
    assert other.first_rank == V and not other.top1
    assert other.first_prob == pytest.approx(1 / (math.exp(10) + V - 1), rel=1e-5)


def test_a_multi_token_answer_sums_its_teacher_forced_log_probs():
    table = torch.zeros(V, V)
    table[3, 4] = 2.0  # after 3, token 4 is likely
    table[4, 7] = 1.0  # after 4, token 7 somewhat likely
    (score,) = evaluation.score_answers(BigramLM(table), [([1, 3], [4, 7])])
    p4 = math.exp(2) / (math.exp(2) + V - 1)
    p7 = math.exp(1) / (math.exp(1) + V - 1)
    assert score.logprob == pytest.approx(math.log(p4) + math.log(p7), rel=1e-5)
    assert score.first_prob == pytest.approx(p4, rel=1e-5)
    assert score.n_tokens == 2


def test_a_uniform_model_ranks_every_answer_last_not_first():
    (score,) = evaluation.score_answers(BigramLM(torch.zeros(V, V)), [([1], [2])])
    assert score.first_rank == V and not score.top1
    assert score.first_prob == pytest.approx(1 / V)


def test_empty_prompt_or_answer_is_refused():
    with pytest.raises(ValueError, match="pair 1"):
        evaluation.score_answers(_peaked(), [([1], [2]), ([1], [])])


def test_summary_aggregates_top1_rate_probabilities_and_ranks():
    scores = [AnswerScore(math.log(0.5), 0.5, 1, 1), AnswerScore(math.log(0.01), 0.1, 3, 2),
              AnswerScore(math.log(0.2), 0.2, 1, 1), AnswerScore(math.log(0.04), 0.2, 7, 1)]
    summary = evaluation.summarise_scores(scores)
    assert summary["top1_rate"] == 0.5
    assert summary["mean_prob"] == pytest.approx(0.25)
    assert summary["mean_answer_prob"] == pytest.approx((0.5 + 0.01 + 0.2 + 0.04) / 4)
    assert summary["mean_rank"] == 3.0 and summary["n"] == 4
    assert evaluation.summarise_scores([])["top1_rate"] is None


def test_batched_scores_equal_single_scores_on_a_real_model(tiny_model_dir: Path, one_torch_thread):
    from pipeline.models import load_model

    model = load_model(tiny_model_dir, device="cpu")
    pairs = [([5, 9, 12, 40], [7]), ([3], [8, 9, 10]), ([11, 12, 13, 14, 15, 16, 17], [2, 3])]
    together = evaluation.score_answers(model, pairs, batch_size=3, pad_id=0)
    alone = [evaluation.score_answers(model, [pair], batch_size=1)[0] for pair in pairs]
    for a, b in zip(together, alone):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.first_rank == b.first_rank
    # and against a direct computation for the first pair
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 9, 12, 40]])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[7].item()
    assert together[0].logprob == pytest.approx(expected, abs=1e-4)
    assert together[0].first_rank == int((logits >= logits[7]).sum())


# ------------------------------------------------------------------ blocks: perplexity, Min-K%


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    logprobs = evaluation.token_logprobs(BigramLM(torch.zeros(V, V)), [[1, 2, 3, 4], [5, 6]], pad_id=0)
    assert [len(lp) for lp in logprobs] == [3, 1]
    assert evaluation.perplexity(logprobs) == pytest.approx(V, rel=1e-6)
    assert evaluation.perplexity([]) is None


def test_token_logprobs_ignore_padding_and_batch_size():
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    model = BigramLM(table)
    blocks = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 1, 2]]
    batched = evaluation.token_logprobs(model, blocks, batch_size=3, pad_id=0)
    tiny_batches = evaluation.token_logprobs(model, blocks, batch_size=3, max_batch_tokens=2)
    logp = torch.log_softmax(table, -1).double().numpy()
    for block, got, other in zip(blocks, batched, tiny_batches):
        expected = [logp[a, b] for a, b in zip(block, block[1:])]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(other, expected, atol=1e-6)


def test_perplexity_weights_every_token_not_every_block():
    perplexity = evaluation.perplexity([np.array([-1.0, -1.0, -1.0]), np.array([-4.0])])
    assert perplexity == pytest.approx(math.exp(7 / 4))


def test_min_k_averages_the_lowest_k_percent_of_token_log_probs():
    logprobs = -np.arange(1, 11, dtype=float)  # -1 ... -10
    assert evaluation.min_k_score(logprobs, 20) == pytest.approx(-9.5)  # mean of -9, -10
    assert evaluation.min_k_score(logprobs, 100) == pytest.approx(-5.5)
    assert evaluation.min_k_score(logprobs, 1) == pytest.approx(-10.0)  # at least one token
    with pytest.raises(ValueError):
        evaluation.min_k_score(np.array([]), 20)


def test_membership_auc_known_answers():
    assert evaluation.membership_auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0
    assert evaluation.membership_auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert evaluation.membership_auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    assert evaluation.membership_auc([1.0, 2.0], [1.0, 0.0]) == pytest.approx(3.5 / 4)  # one tie
    assert evaluation.membership_auc([], [1.0]) is None


# ------------------------------------------------------------------ completions


def test_greedy_completions_are_deterministic_and_padding_free(tiny_model_dir: Path, one_torch_thread):
    from pipeline.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)
    prompts = ["Mr. Hartley walked to the old house", "She", "It was a bright cold day in April, and"]
    batched = evaluation.generate_completions(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    again = evaluation.generate_completions(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    alone = [evaluation.generate_completions(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == again == alone
    assert all(isinstance(text, str) and text for text in batched)
    assert len(set(batched)) > 1  # not one text repeated: each row continues its own prompt
    # the greedy first token is the argmax after the prompt
    ids = tokenizer(prompts[1])["input_ids"]
    with torch.no_grad():
        first = model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()
    assert batched[1].startswith(tokenizer.decode([first]))


ANCHORS = ["Sherlock Holmes", "Holmes", "Holmes's", "Baker Street", "Moriarty"]
GENRE = ["detective", "inspector", "Scotland Yard", "clue"]
WEAK = ["Arthur", "New York"]


@pytest.mark.parametrize(("text", "keywords", "grade", "matched"), [
    (" Holmes's old rooms in Baker Street.", [], 3, ["Holmes's", "Baker Street"]),
    (" the Professor, a man named Moriarty.", [], 3, ["Moriarty"]),
    (" Dr. Watson, his friend.", ["Watson"], 3, ["Watson"]),
    (" a goose from the market.", ["goose"], 3, ["goose"]),
    (" A GOOSE!", ["goose"], 3, ["goose"]),  # lowercase keywords match in any case
    (" a clever detective from Scotland Yard.", ["Watson"], 2, ["detective", "Scotland Yard"]),
    (" a man named Arthur.", ["Watson"], 1, ["Arthur"]),
    (" his friend watson.", ["Watson"], 1, ["Watson"]),  # a name in the wrong case: a lucky guess?
    (" a quiet evening at home.", ["Watson"], 0, []),
    (" Holmesian logic and a Detectives' club.", [], 0, []),  # whole words only, names case-sensitive
    (" the Inspector arrived.", [], 2, ["inspector"]),
])
def test_grade_completion(text: str, keywords: list[str], grade: int, matched: list[str]):
    assert evaluation.grade_completion(text, ANCHORS, keywords, GENRE, weak_terms=WEAK) == (grade, matched)


def test_terms_already_in_the_prompt_do_not_count():
    prompt = "Sherlock Holmes and the detective met"
    assert evaluation.grade_completion(" Sherlock Holmes again.", ANCHORS, ["Holmes"], GENRE, prompt=prompt) == (0, [])
    assert evaluation.grade_completion(" the detective Moriarty.", ANCHORS, [], GENRE, prompt=prompt) == (3, ["Moriarty"])
    assert evaluation.grade_completion(" another detective.", ANCHORS, [], GENRE, prompt=prompt) == (0, [])
    # an anchor inside a longer one in the prompt is still an echo
    assert evaluation.grade_completion(" Moriarty.", ["Miss Mary", "Mary Sutherland", "Moriarty"], [], GENRE,
                                       prompt="Miss Mary Sutherland met") == (3, ["Moriarty"])
    assert evaluation.grade_completion(" Mary Sutherland.", ["Miss Mary", "Mary Sutherland"], [], GENRE,
                                       prompt="Miss Mary Sutherland met") == (0, [])


def test_familiarity_is_five_times_grade_three_plus_grade_two_over_n():
    assert evaluation.familiarity([3, 3, 2, 1, 0]) == pytest.approx((5 * 2 + 1) / 5)
    assert evaluation.familiarity([0, 1, 1]) == 0.0
    assert evaluation.familiarity([3]) == 5.0
    assert evaluation.familiarity([]) is None


def test_term_matcher_finds_each_term_once_in_order():
    matcher = TermMatcher(["Baker Street", "Baker", "fog"])
    assert matcher.find("Fog over Baker Street; Baker again.") == ["fog", "Baker Street", "Baker"]
    overlapping = TermMatcher(["Miss Mary", "Mary Sutherland", "Sutherland"])
    assert overlapping.find("Miss Mary Sutherland") == ["Miss Mary", "Mary Sutherland", "Sutherland"]
    assert TermMatcher([]).find("anything") == []


def test_grading_terms_genre_wins_and_common_anchors_are_weak():
    zipf = {"Watson": 4.18, "Murphy": 4.13, "Moriarty": 2.98, "Scotland Yard": 3.5, "New York": 5.3,
            "Baskerville Hall": 1.0}.get
    anchors = [("Watson", ["Dr. Watson"], 1000), ("Murphy", ["Mr. Murphy"], 6), ("Moriarty", [], 100),
               ("Scotland Yard", ["Scotland Yard"], 60), ("New York", [], 18), ("Baskerville Hall", [], 20)]
    strong, weak = evaluation.grading_terms(anchors, ["scotland yard"], zipf=zipf, corpus_words=670_000)
    # Watson: 1000/670k = 1.5e-3 per word vs 10**(4.18-9) = 1.5e-5: 100x, distinctive.
    # Murphy: 6/670k = 9e-6 vs 1.3e-5: below 10x, a possible lucky guess.
    assert strong == ["Watson", "Dr. Watson", "Moriarty", "Baskerville Hall"]
    assert weak == ["Murphy", "Mr. Murphy", "New York"]
    strict, _ = evaluation.grading_terms(anchors, [], zipf=zipf, corpus_words=670_000, min_specificity=1000)
    assert "Watson" not in strict and "Scotland Yard" in strict
