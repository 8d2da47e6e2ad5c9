"""The fine-tune's losses against values computed by hand (numpy), and the objective on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.losses import (
    UnlearningLoss, forget_loss, hard_label_loss, kl_to_reference, next_token_loss, soft_label_loss,
)
from pipeline.models import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# One block, 3 positions, vocabulary of 4.
LOGITS = np.array([[[1.0, 2.0, 0.0, -1.0], [0.5, 0.5, 3.0, 0.0], [2.0, -2.0, 1.0, 1.0]]])


def _log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def _t(array, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(array), dtype=dtype)


def test_hard_labels_are_cross_entropy_at_the_same_position_without_shift():
    labels = _t([[1, -100, 0]], torch.long)  # position 1 dropped
    mask = _t([[1, 1, 1]], torch.bool)
    loss, n = hard_label_loss(_t(LOGITS), labels, mask)
    expected = -_log_softmax(LOGITS[0, 0])[1] - _log_softmax(LOGITS[0, 2])[0]
    assert n == 2 and loss.item() == pytest.approx(expected, rel=1e-6)

    # loss_mask 0 at position 2 takes it out as well
    loss, n = hard_label_loss(_t(LOGITS), labels, _t([[1, 1, 0]], torch.bool))
    assert n == 1 and loss.item() == pytest.approx(-_log_softmax(LOGITS[0, 0])[1], rel=1e-6)


def test_soft_labels_renormalised_over_the_top_k_use_the_full_softmax():
    top_ids = _t([[[1, 0], [2, 3], [0, 2]]], torch.long)
    top_probs = np.array([[[0.6, 0.2], [0.5, 0.0], [0.3, 0.3]]])  # sums 0.8, 0.5, 0.6: renormalised
    mask = _t([[1, 0, 1]], torch.bool)  # position 1 masked out
    loss, n = soft_label_loss(_t(LOGITS), top_ids, _t(top_probs), mask, tail="renormalise")

    expected = 0.0
    for i in (0, 2):
        p = top_probs[0, i] / top_probs[0, i].sum()
        log_q = _log_softmax(LOGITS[0, i])[np.asarray(top_ids[0, i])]
        expected += sum(pk * (math.log(pk) - lq) for pk, lq in zip(p, log_q) if pk > 0)
    assert n == 2 and loss.item() == pytest.approx(expected, rel=1e-6)
    # by hand for position 0: p = (0.75, 0.25)
    p0 = 0.75 * (math.log(0.75) - _log_softmax(LOGITS[0, 0])[1]) + 0.25 * (math.log(0.25) - _log_softmax(LOGITS[0, 0])[0])
    p2 = 0.5 * (math.log(0.5) - _log_softmax(LOGITS[0, 2])[0]) + 0.5 * (math.log(0.5) - _log_softmax(LOGITS[0, 2])[2])
    assert loss.item() == pytest.approx(p0 + p2, rel=1e-6)

    # a zero probability contributes nothing (and no NaN): position 1 alone
    loss, n = soft_label_loss(_t(LOGITS), top_ids, _t(top_probs), _t([[0, 1, 0]], torch.bool), tail="renormalise")
    assert n == 1 and loss.item() == pytest.approx(-_log_softmax(LOGITS[0, 1])[2], rel=1e-6)


def test_soft_labels_keep_the_mass_outside_the_top_k_as_one_outcome():
    top_ids = _t([[[1, 0], [2, 3], [0, 2]]], torch.long)
    top_probs = np.array([[[0.6, 0.2], [0.5, 0.0], [0.3, 0.3]]])  # tails 0.2, 0.5, 0.4
    mask = _t([[1, 1, 1]], torch.bool)
    loss, n = soft_label_loss(_t(LOGITS), top_ids, _t(top_probs), mask, tail="keep")
    expected = 0.0
    for i in range(3):
        log_q = _log_softmax(LOGITS[0, i])
        ids, probs = np.asarray(top_ids[0, i]), top_probs[0, i]
        rest = [v for v in range(4) if v not in ids]
        p_tail, log_q_tail = 1 - probs.sum(), math.log(np.exp(log_q[rest]).sum())
        expected += sum(pk * (math.log(pk) - log_q[v]) for pk, v in zip(probs, ids) if pk > 0)
        expected += p_tail * (math.log(p_tail) - log_q_tail)
    assert n == 3 and loss.item() == pytest.approx(expected, rel=1e-6)


def test_a_model_equal_to_the_generic_distribution_has_no_soft_loss_only_if_the_tail_is_kept():
    # the generic distribution over 6 tokens, its top 3 stored: a quarter of its mass is outside
    generic = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    logits, ids, mask = _t(np.log(generic)[None, None]), _t([[[0, 1, 2]]], torch.long), _t([[1]], torch.bool)
    probs = _t([[[0.4, 0.2, 0.15]]])
    kept, _ = soft_label_loss(logits, ids, probs, mask, tail="keep")
    assert abs(kept.item()) < 1e-6
    renormalised, _ = soft_label_loss(logits, ids, probs, mask, tail="renormalise")
    assert renormalised.item() == pytest.approx(-math.log(0.75), rel=1e-5)  # log(1 / top-3 mass) > 0
    # ...and its gradient drains the tail: it raises the top-3 logits against the other three
    logits.requires_grad_(True)
    soft_label_loss(logits, ids, probs, mask, tail="renormalise")[0].backward()
    assert (logits.grad[0, 0, 3:] > 0).all() and logits.grad[0, 0, :3].sum() < 0
    logits.grad = None
    soft_label_loss(logits, ids, probs, mask, tail="keep")[0].backward()
    assert logits.grad.abs().max() < 1e-6
    with pytest.raises(ValueError, match="soft tail"):
        soft_label_loss(logits, ids, probs, mask, tail="bucket")


def test_soft_loss_is_zero_when_the_model_matches_the_targets():
    probs = np.array([0.5, 0.3, 0.2, 0.0])
    logits = _t(np.log(np.maximum(probs, 1e-30))[None, None])
    loss, n = soft_label_loss(logits, _t([[[0, 1, 2]]], torch.long), _t([[[0.5, 0.3, 0.2]]]), _t([[1]], torch.bool))
    assert n == 1 and abs(loss.item()) < 1e-6


def test_next_token_loss_shifts_and_skips_padding():
    ids = _t([[3, 1, 2]], torch.long)
    loss, n = next_token_loss(_t(LOGITS), ids, _t([[1, 1, 1]], torch.long))
    expected = -_log_softmax(LOGITS[0, 0])[1] - _log_softmax(LOGITS[0, 1])[2]
    assert n == 2 and loss.item() == pytest.approx(expected, rel=1e-6)
    loss, n = next_token_loss(_t(LOGITS), ids, _t([[1, 1, 0]], torch.long))  # last token is padding
    assert n == 1 and loss.item() == pytest.approx(-_log_softmax(LOGITS[0, 0])[1], rel=1e-6)


def test_kl_to_reference_over_the_full_vocabulary():
    reference = np.array([[[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0]]])
    mask = _t([[1, 1, 0]], torch.bool)
    loss, n = kl_to_reference(_t(LOGITS), _t(reference), mask)
    expected = 0.0
    for i in (0, 1):
        log_r, log_q = _log_softmax(reference[0, i]), _log_softmax(LOGITS[0, i])
        expected += float(np.sum(np.exp(log_r) * (log_r - log_q)))
    assert n == 2 and loss.item() == pytest.approx(expected, rel=1e-6)
    same, _ = kl_to_reference(_t(LOGITS), _t(LOGITS), mask)
    assert abs(same.item()) < 1e-6


def test_mixed_is_hard_plus_weighted_soft():
    batch = {
        "attention_mask": _t([[1, 1, 1]], torch.long), "loss_mask": _t([[1, 0, 1]], torch.long),
        "labels": _t([[1, -100, 2]], torch.long),
        "top_ids": _t([[[1, 0], [0, 1], [2, 0]]], torch.long), "top_probs": _t([[[0.7, 0.1], [0.5, 0.5], [0.4, 0.4]]]),
    }
    logits = _t(LOGITS)
    hard, n_hard = forget_loss(logits, batch, label_type="hard")
    soft, n_soft = forget_loss(logits, batch, label_type="soft")
    mixed, n_mixed = forget_loss(logits, batch, label_type="mixed", soft_weight=0.5)
    assert n_hard == n_soft == n_mixed == 2
    assert hard.item() == pytest.approx(-_log_softmax(LOGITS[0, 0])[1] - _log_softmax(LOGITS[0, 2])[2], rel=1e-6)
    assert mixed.item() == pytest.approx(hard.item() + 0.5 * soft.item(), rel=1e-6)


@pytest.fixture()
def tiny(tiny_model_dir: Path):
    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def _tiny_batch(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (2, 6), generator=generator)
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    # like the stored targets: 3 distinct ids a position, holding part of the mass (0.5 to 0.9)
    top_ids = torch.stack([torch.randperm(vocab, generator=generator)[:3] for _ in range(12)]).view(2, 6, 3)
    top_probs = torch.rand(2, 6, 3, generator=generator)
    top_probs = top_probs / top_probs.sum(-1, keepdim=True) * (0.5 + 0.4 * torch.rand(2, 6, 1, generator=generator))
    return {
        "input_ids": ids * attention, "attention_mask": attention,
        "loss_mask": torch.tensor([[0, 1, 1, 0, 1, 1], [1, 1, 1, 1, 0, 0]]),
        "labels": torch.randint(0, vocab, (2, 6), generator=generator), "top_ids": top_ids, "top_probs": top_probs,
        "retain_input_ids": torch.randint(1, vocab, (2, 8), generator=generator),
        "retain_attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
    }


def test_objective_on_a_tiny_model_against_numpy(tiny):
    batch = _tiny_batch(tiny.config.vocab_size)
    with torch.no_grad():
        forget_logits = tiny(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double().numpy()
        retain_logits = tiny(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits.double().numpy()
    attention, loss_mask = batch["attention_mask"].numpy(), batch["loss_mask"].numpy()
    labels, top_ids, top_probs = batch["labels"].numpy(), batch["top_ids"].numpy(), batch["top_probs"].double().numpy()
    positions = [(b, i) for b in range(2) for i in range(6) if attention[b, i] and loss_mask[b, i]]

    hard = sum(-_log_softmax(forget_logits[b, i])[labels[b, i]] for b, i in positions)
    soft, soft_kept = 0.0, 0.0  # renormalised (the default), and with the mass outside the top 3 kept
    for b, i in positions:
        p, log_q = top_probs[b, i], _log_softmax(forget_logits[b, i])
        soft += float(np.sum(p / p.sum() * (np.log(p / p.sum()) - log_q[top_ids[b, i]])))
        p_tail, log_q_tail = 1 - p.sum(), np.log(1 - np.exp(log_q[top_ids[b, i]]).sum())
        soft_kept += float(np.sum(p * (np.log(p) - log_q[top_ids[b, i]])) + p_tail * (np.log(p_tail) - log_q_tail))
    retain_attention, retain_ids = batch["retain_attention_mask"].numpy(), batch["retain_input_ids"].numpy()
    lm_terms = [-_log_softmax(retain_logits[b, i])[retain_ids[b, i + 1]]
                for b in range(2) for i in range(7) if retain_attention[b, i] and retain_attention[b, i + 1]]
    lm_mean = sum(lm_terms) / len(lm_terms)

    loss, n = UnlearningLoss(label_type="hard")(tiny, batch)
    assert n == len(positions) == 8 and loss.item() == pytest.approx(hard, rel=1e-4)
    loss, n = UnlearningLoss(label_type="soft")(tiny, batch)
    assert loss.item() == pytest.approx(soft, rel=1e-4)
    loss, n = UnlearningLoss(label_type="soft", soft_tail="keep")(tiny, batch)
    assert loss.item() == pytest.approx(soft_kept, rel=1e-4) and abs(soft_kept - soft) > 0.1
    loss, _ = UnlearningLoss(label_type="soft", soft_tail="keep", retain_kind="kl", retain_weight=3.0, reference=tiny)(
        tiny, batch)
    assert loss.item() == pytest.approx(soft_kept, rel=1e-4)  # the retain path reads soft_tail too
    with pytest.raises(ValueError, match="soft tail"):
        UnlearningLoss(soft_tail="drop")
    loss, n = UnlearningLoss(label_type="mixed", soft_weight=2.0)(tiny, batch)
    assert loss.item() == pytest.approx(hard + 2.0 * soft, rel=1e-4)
    # retain lm: its mean per retain position, times the forget positions, times the weight
    loss, n = UnlearningLoss(label_type="soft", retain_kind="lm", retain_weight=0.5)(tiny, batch)
    assert n == 8 and loss.item() == pytest.approx(soft + 0.5 * lm_mean * 8, rel=1e-4)
    # retain kl against the model itself is 0; against another model it is the numpy KL
    loss, _ = UnlearningLoss(label_type="soft", retain_kind="kl", retain_weight=3.0, reference=tiny)(tiny, batch)
    assert loss.item() == pytest.approx(soft, rel=1e-4)


def test_retain_kl_moves_only_the_trained_model(tiny, tiny_model_dir: Path):
    reference = load_model(tiny_model_dir, dtype="float32", device="cpu")
    with torch.no_grad():
        for p in tiny.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = _tiny_batch(tiny.config.vocab_size)
    objective = UnlearningLoss(label_type="soft", retain_kind="kl", retain_weight=1.0, reference=reference)
    with torch.no_grad():
        q = tiny(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits.double().numpy()
        r = reference(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits.double().numpy()
    retain_attention = batch["retain_attention_mask"].numpy()
    terms = []
    for b in range(2):
        for i in range(8):
            if retain_attention[b, i]:
                log_r, log_q = _log_softmax(r[b, i]), _log_softmax(q[b, i])
                terms.append(float(np.sum(np.exp(log_r) * (log_r - log_q))))
    soft, n = UnlearningLoss(label_type="soft")(tiny, batch)
    loss, n = objective(tiny, batch)
    assert loss.item() == pytest.approx(soft.item() + sum(terms) / len(terms) * n, rel=1e-4)
    assert sum(terms) > 0
    loss.backward()
    assert all(p.grad is None for p in reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.parameters())


def test_invalid_objectives_are_refused():
    with pytest.raises(ValueError, match="label_type"):
        UnlearningLoss(label_type="argmax")
    with pytest.raises(ValueError, match="reference"):
        UnlearningLoss(retain_kind="kl", retain_weight=1.0)


def test_params_offer_exactly_the_objectives_settings():
    # params.py must not import torch, so it spells the settings out again; they must agree.
    from typing import get_args

    from pipeline.core.losses import LabelType, SoftTail
    from pipeline.params import FinetuneParams

    fields = FinetuneParams.model_fields
    assert get_args(fields["label_type"].annotation) == get_args(LabelType)
    assert get_args(fields["soft_tail"].annotation) == get_args(SoftTail)
