"""Generic logits, rule 2 and labels against hand-computed values."""

from __future__ import annotations

import torch

from pipeline.core.generic import gather_aligned, generic_logits, labels_from_logits, suppress_used_translations, block_labels, used_translation_entries


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
