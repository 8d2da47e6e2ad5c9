"""Running the model (pipeline/core/generation.py): exact answers on a bigram model with a key/value
cache, and agreement with transformers' own forward and ``generate`` on the tiny random Llama."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.core import generation
from pipeline.core.generation import AnswerScore

V = 10


class Cache:
    """Just enough of a transformers cache: a length that grows and can be cut back."""

    def __init__(self):
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, n: int) -> None:
        assert n < 0, "generation removes positions with a negative crop"
        self.length += n


class BigramLM(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: the next token depends on the last one only, so every
    probability is a softmax of one table row, whatever the padding, batching or cache."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone().float(), requires_grad=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                logits_to_keep=0):
        cache = cache if cache is not None else Cache()
        cache.length += input_ids.shape[1]
        logits = self.table[input_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits, cache=cache)


def _peaked(winner: int = 5, height: float = 10.0) -> BigramLM:
    table = torch.zeros(V, V)
    table[:, winner] = height
    return BigramLM(table)


def test_the_favoured_token_ranks_first_with_its_softmax_probability():
    best, other = generation.answer_probes(_peaked(winner=5), [([1, 2], [5]), ([1, 2], [6])], pad_id=0)
    p_best = math.exp(10) / (math.exp(10) + V - 1)
    assert best.first_rank == 1 and best.top1 and best.greedy == (5,)
    assert best.first_prob == pytest.approx(p_best, rel=1e-5) and best.prob == pytest.approx(p_best, rel=1e-5)
    # token 6 ties with the 8 other zero-logit tokens and is counted last of them, behind token 5
    assert other.first_rank == V and not other.top1 and other.greedy == (5,)
    assert other.first_prob == pytest.approx(1 / (math.exp(10) + V - 1), rel=1e-5)


def test_a_multi_token_answer_sums_its_teacher_forced_log_probs_and_greedy_follows_its_own_path():
    table = torch.zeros(V, V)
    table[3, 4] = 2.0  # after 3, token 4 is likely
    table[4, 7] = 1.0  # after 4, token 7 somewhat likely
    table[8, 9] = 3.0  # after 8, token 9
    (score, diverging) = generation.answer_probes(BigramLM(table), [([1, 3], [4, 7]), ([1, 3], [8, 9])])
    p4, p7 = math.exp(2) / (math.exp(2) + V - 1), math.exp(1) / (math.exp(1) + V - 1)
    assert score.logprob == pytest.approx(math.log(p4) + math.log(p7), rel=1e-5)
    assert score.first_prob == pytest.approx(p4, rel=1e-5) and score.n_tokens == 2
    assert score.greedy == (4, 7)
    # the answer 8 9 is teacher-forced (9 after 8 is likely) while greedy says 4 then 7
    p8, p9 = 1 / (V - 1 + math.exp(2)), math.exp(3) / (math.exp(3) + V - 1)
    assert diverging.logprob == pytest.approx(math.log(p8) + math.log(p9), rel=1e-5)
    assert diverging.greedy == (4, 7)


def test_a_uniform_model_ranks_every_answer_last_not_first():
    (score,) = generation.answer_probes(BigramLM(torch.zeros(V, V)), [([1], [2])])
    assert score.first_rank == V and not score.top1 and score.first_prob == pytest.approx(1 / V)


def test_empty_prompt_or_answer_is_refused():
    with pytest.raises(ValueError, match="pair 1"):
        generation.answer_probes(_peaked(), [([1], [2]), ([1], [])])


def test_greedy_continuations_stop_at_the_end_token():
    table = torch.zeros(V, V)
    table[1, 2] = table[2, 3] = table[3, 0] = table[4, 4] = 5.0  # 1 -> 2 -> 3 -> end (0); 4 -> 4 -> ...
    got = generation.greedy_continuations(BigramLM(table), [[9, 1], [4]], max_new_tokens=5, pad_id=0, eos_id=0)
    assert got == [[2, 3], [4, 4, 4, 4, 4]]


def test_window_scores_teacher_force_the_window_and_continue_its_prefix():
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    windows = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 1]]
    scores = generation.window_scores(BigramLM(table), windows, prefix_tokens=2)
    logp = torch.log_softmax(table, -1).double().numpy()
    for window, score in zip(windows, scores):
        np.testing.assert_allclose(score.logprobs, [logp[a, b] for a, b in zip(window, window[1:])], atol=1e-6)
        expected, last = [], window[1]
        for _ in range(3):
            last = int(table[last].argmax())
            expected.append(last)
        assert score.greedy == tuple(expected)
    with pytest.raises(ValueError, match="share one length"):
        generation.window_scores(BigramLM(table), [[1, 2, 3], [1, 2]], prefix_tokens=1)


def test_token_logprobs_ignore_padding_and_batch_size():
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    texts = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 1, 2]]
    batched = generation.token_logprobs(BigramLM(table), texts, batch_size=3, pad_id=0)
    tiny = generation.token_logprobs(BigramLM(table), texts, batch_size=3, max_batch_tokens=2)
    logp = torch.log_softmax(table, -1).double().numpy()
    for text, got, other in zip(texts, batched, tiny):
        expected = [logp[a, b] for a, b in zip(text, text[1:])]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(other, expected, atol=1e-6)


def test_progress_counts_every_item_once():
    done = []
    generation.answer_probes(_peaked(), [([1], [2])] * 5, batch_size=2, progress=done.append)
    generation.greedy_continuations(_peaked(), [[1]] * 3, max_new_tokens=2, batch_size=2, progress=done.append)
    assert sum(done) == 8


# --------------------------------------------------------------------- a real transformers model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from pipeline.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def test_batches_group_by_steps_first_then_by_length():
    lengths, steps = [5, 9, 2, 7, 3, 8], [1, 1, 4, 1, 4, 2]
    assert generation._batches(lengths, 2) == [[1, 5], [3, 0], [4, 2]]
    # the two rows that decode 4 steps share a batch; the rest decode at most 2
    assert generation._batches(lengths, 2, steps=steps) == [[4, 2], [5, 1], [3, 0]]


def test_batched_left_padded_scores_equal_a_plain_forward(tiny):
    model, _ = tiny
    pairs = [([5, 9, 12, 40], [7]), ([3], [8, 9, 10]), ([11, 12, 13, 14, 15, 16, 17], [2, 3])]
    together = generation.answer_probes(model, pairs, batch_size=3, pad_id=0)
    for (prompt, answer), score in zip(pairs, together):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
        logp = torch.log_softmax(logits, -1)
        expected = sum(logp[len(prompt) - 1 + j, a].item() for j, a in enumerate(answer))
        first = logits[len(prompt) - 1]
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.first_rank == int((first >= first[answer[0]]).sum())
    alone = [generation.answer_probes(model, [pair], batch_size=1)[0] for pair in pairs]
    assert [s.greedy for s in alone] == [s.greedy for s in together]


def test_greedy_decoding_equals_transformers_generate(tiny):
    model, tokenizer = tiny
    prompts = [tokenizer(p)["input_ids"] for p in ["Mr. Hartley walked to the old house", "She",
                                                   "It was a bright cold day in April, and"]]
    ours = generation.greedy_continuations(model, prompts, max_new_tokens=6, pad_id=tokenizer.eos_token_id)
    for prompt, continuation in zip(prompts, ours):
        reference = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                   pad_token_id=tokenizer.eos_token_id, eos_token_id=None)
        assert continuation == reference[0, len(prompt):].tolist()
    assert len({tuple(c) for c in ours}) > 1  # each row continues its own prompt


def test_window_scores_on_a_real_model_match_teacher_forcing_and_generate(tiny):
    model, _ = tiny
    windows = [[5, 9, 12, 40, 7, 8, 3, 2], [11, 12, 13, 14, 15, 16, 17, 18]]
    scores = generation.window_scores(model, windows, prefix_tokens=3, batch_size=2)
    lp = generation.token_logprobs(model, windows)
    for window, score, expected in zip(windows, scores, lp):
        np.testing.assert_allclose(score.logprobs, expected, atol=1e-4)
        reference = model.generate(input_ids=torch.tensor([window[:3]]), max_new_tokens=5, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)
        assert list(score.greedy) == reference[0, 3:].tolist()


def test_answer_score_probability_properties():
    score = AnswerScore(logprob=math.log(0.25), first_logprob=math.log(0.5), first_rank=1, n_tokens=2, greedy=(1, 2))
    assert score.prob == pytest.approx(0.25) and score.first_prob == pytest.approx(0.5) and score.top1
    # a probability far below float32's range keeps its log
    assert AnswerScore(logprob=-200.0, first_logprob=-120.0, first_rank=9, n_tokens=1).first_logprob == -120.0
