"""Generic logits, rule 2 and labels against hand-computed values."""

from __future__ import annotations

import torch

from pipeline.core.generic import (
    block_labels, gather_aligned, generic_logits, labels_from_logits, reinforcement_boost, suppress_used_translations,
    used_translation_entries,
)


def test_alpha_formula_by_hand():
    base = torch.tensor([[1.0, 2.0, 3.0]])
    reinforced = torch.tensor([[3.0, 1.0, 3.5]])
    # ReLU(reinf - base) = [2, 0, 0.5]; alpha 5 -> base - [10, 0, 2.5]
    assert torch.equal(generic_logits(base, reinforced, 5.0), torch.tensor([[-9.0, 2.0, 0.5]]))
    assert torch.equal(generic_logits(base, reinforced, 0.0), base)


def test_gather_aligned_follows_j_and_zeroes_dropped():
    translated = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    gathered = gather_aligned(translated, [2, -1, 0])
    assert torch.equal(gathered, torch.tensor([[6.0, 7.0, 8.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]))


def test_rule_2_sets_used_token_to_the_mean_after_its_use_only():
    logits = torch.tensor([[0.0, 3.0, 6.0], [1.0, 4.0, 7.0], [2.0, 5.0, 11.0]])
    # translated positions of the 3 original positions: 0, 2, 5; translation first token id 2 used at 2
    out = suppress_used_translations(logits, [0, 2, 5], used_positions=[2], used_token_ids=[2])
    assert torch.equal(out[0], logits[0])  # before the use: untouched
    assert out[1, 2] == logits[1].mean() and out[2, 2] == logits[2].mean()
    assert torch.equal(out[1, :2], logits[1, :2])
    assert torch.equal(logits[1], torch.tensor([1.0, 4.0, 7.0]))  # input not modified


def test_rule_2_ignores_dropped_positions():
    logits = torch.ones(2, 3)
    out = suppress_used_translations(logits * torch.tensor([1.0, 2.0, 3.0]), [-1, 4], [1], [0])
    assert out[0, 0] == 1.0 and out[1, 0] == 2.0


def test_labels_top_k_and_confidence():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    labels = labels_from_logits(logits, top_k=2)
    probs = torch.softmax(logits, dim=-1)[0]
    assert labels["target"].tolist() == [3]
    assert labels["top_ids"].tolist() == [[3, 2]]
    assert torch.allclose(labels["top_probs"][0], probs[[3, 2]])
    assert torch.allclose(labels["confidence"], probs[3:4])


def test_block_labels_equal_the_reference_composition_for_every_alpha():
    torch.manual_seed(0)
    n, vocab, k = 12, 50, 5
    baseline, reinforced = torch.randn(n, vocab), torch.randn(n, vocab) * 2
    alignment = [0, 1, -1, 2, 3, 4, 5, -1, 6, 7, 8, 9]
    used_positions, used_token_ids = [3, 6], [17, 4]
    entries = used_translation_entries(alignment, used_positions, used_token_ids)
    fused = block_labels(baseline.clone(), reinforced.clone(), alphas=[2.5, 5.0, 10.0], entries=entries, top_k=k)
    for alpha, got in zip([2.5, 5.0, 10.0], fused):
        logits = suppress_used_translations(generic_logits(baseline, reinforced, alpha), alignment, used_positions, used_token_ids)
        want = labels_from_logits(logits, k)
        assert torch.equal(got["top_ids"], want["top_ids"]) and torch.equal(got["target"], want["target"])
        assert torch.allclose(got["top_probs"], want["top_probs"], atol=1e-6)
    # rule 2 covers every aligned row at or after each use (and none before)
    assert entries[0].numel() == sum(1 for j in alignment if j >= 3) + sum(1 for j in alignment if j >= 6)


def test_logprob_boost_ignores_a_per_position_logit_offset():
    # The reinforced logits are the baseline's plus a constant per row: no probability changed,
    # so nothing was reinforced. As log-probabilities the boost is zero; as raw logits every
    # token of the first row passes the ReLU (with any sharpening on top, the surest tokens
    # would then fall most).
    baseline = torch.tensor([[4.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    reinforced = baseline + torch.tensor([[3.0], [-2.0]])
    assert torch.equal(generic_logits(baseline, reinforced, 5.0, space="logprob"), baseline)
    shifted = generic_logits(baseline, reinforced, 5.0, space="logit")
    assert torch.equal(shifted[0], baseline[0] - 15.0) and torch.equal(shifted[1], baseline[1])


def test_sharper_reinforced_distribution_lowers_only_what_it_raised():
    baseline = torch.tensor([[2.0, 1.0, 0.0]])
    reinforced = torch.tensor([[4.0, 1.0, 0.0]])  # token 0 reinforced, the others lose probability
    boost = reinforcement_boost(reinforced.clone(), baseline, space="logprob")
    assert boost[0, 0] > 0 and boost[0, 1] == 0 and boost[0, 2] == 0


def test_boost_reads_the_reference_not_the_translated_baseline():
    # Same text for reinforced and reference, another context for the translated baseline: the
    # boost comes from the first two only.
    translated = torch.tensor([[0.0, 5.0, 0.0]])
    original = torch.tensor([[1.0, 1.0, 1.0]])
    reinforced = torch.tensor([[1.0, 1.0, 3.0]])
    out = generic_logits(translated, reinforced, 2.0, reference=original, space="logit")
    assert torch.equal(out, torch.tensor([[0.0, 5.0, -4.0]]))
    with_translated = generic_logits(translated, reinforced, 2.0, space="logit")
    assert torch.equal(with_translated, torch.tensor([[-2.0, 5.0, -6.0]]))


def test_block_labels_with_a_reference_in_logprob_space_equal_the_composition():
    torch.manual_seed(1)
    n, vocab, k = 8, 40, 4
    baseline, reinforced, reference = torch.randn(n, vocab), torch.randn(n, vocab) * 2, torch.randn(n, vocab)
    alignment = list(range(n))
    entries = used_translation_entries(alignment, [2], [5])
    fused = block_labels(baseline.clone(), reinforced.clone(), alphas=[5.0], entries=entries, top_k=k,
                         reference=reference, space="logprob")
    logits = suppress_used_translations(
        generic_logits(baseline, reinforced, 5.0, reference=reference, space="logprob"), alignment, [2], [5])
    want = labels_from_logits(logits, k)
    assert torch.equal(fused[0]["top_ids"], want["top_ids"])
    assert torch.allclose(fused[0]["top_probs"], want["top_probs"], atol=1e-6)


def test_unknown_boost_space_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="boost space"):
        reinforcement_boost(torch.zeros(1, 2), torch.zeros(1, 2), space="prob")
