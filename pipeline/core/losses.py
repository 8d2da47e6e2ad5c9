"""Losses of the unlearning fine-tune (docs/algorithm.md step 8): pure tensor functions, and the
objective :class:`UnlearningLoss` that :func:`pipeline.training.train` calls.

Position convention (the ``dataset`` stage's, checked against ``pipeline/generic_labels.py``):
``labels[i]``, ``top_ids[i]`` and ``top_probs[i]`` are the targets of the prediction *made at*
position ``i`` of the original block, i.e. of the token after ``i``. They come from the logits
the models output at ``i`` (the reinforced model at ``i``, the baseline at ``j(i)``), so they
line up with ``logits[:, i]`` as they are: **no shift**. (Only the plain language-model loss
on retain text shifts: there the target of position ``i`` is ``input_ids[i + 1]``.) A block's
last position has a generic target too (what follows the block) and is trained on when its
``loss_mask`` is 1.

Every function returns ``(loss_sum, n_positions)``, like
:func:`pipeline.training.causal_lm_loss`: a scalar tensor in nats summed (not averaged) over the
positions it counts, and that count, so that ``train()`` averages over every position of the
accumulated optimiser batch. Logits are cast to float32 before any softmax (bf16 under
autocast). Shapes: ``b`` blocks, ``t`` positions, ``V`` vocabulary, ``k`` stored top-k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from pipeline.core.padding import stack_right_padded
from schemas.dataset import IGNORE

LabelType = Literal["hard", "soft", "mixed"]
RetainKind = Literal["kl", "lm", "none"]
SoftTail = Literal["keep", "renormalise"]


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy against the generic argmax targets (the paper's hard labels).

    Args:
        logits: ``[b, t, V]``, the model's output at each position.
        labels: ``[b, t]`` target ids of the prediction made at each position; ``-100`` (IGNORE)
            where the position is dropped.
        mask: ``[b, t]`` bool, positions that may count (attention and ``loss_mask``).

    Returns:
        ``(sum over counted positions of -log q(label), count)``; counted: ``mask`` and a label
        other than ``-100``.
    """
    keep = mask.bool() & (labels != IGNORE)
    loss_sum = F.cross_entropy(logits[keep].float(), labels[keep].long(), reduction="sum")
    return loss_sum, int(keep.sum())


def soft_label_loss(
    logits: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor, mask: torch.Tensor, *,
    tail: SoftTail = "renormalise",
) -> tuple[torch.Tensor, int]:
    """KL(p || q) from the stored top-k generic distribution to the model (WHP+ soft targets).

    ``top_probs`` are the generic distribution's probabilities of its ``k`` most likely ids; the
    rest of its mass (``1 - sum(top_probs)``, a quarter on average at k = 32, most of it where the
    distribution is flat) is not stored. ``tail`` says what the target does with it:

    * ``keep``: the rest is one more outcome, the *tail*: ``p_tail = 1 - sum_k p_k`` against the
      model's mass outside the ``k`` ids, ``q_tail``. Per position
      ``KL = sum_k p_k (log p_k - log q_k) + p_tail (log p_tail - log q_tail)``: 0 when the model
      *is* the generic distribution, so nothing but the generic shift is taught.
    * ``renormalise`` (the default): ``p`` rescaled to sum to 1 over the ``k`` ids. Its minimum
      puts no mass outside the ``k`` ids, so at every position it drains the model's tail, where
      rare continuations live (a surname after an unfamiliar first name), towards the frequent
      tokens that fill the top-k of a flat distribution (a comma, "and", "in"); a model equal to
      the generic distribution still has a positive loss.

    ``q`` is the model's softmax over the whole vocabulary. The entropy terms carry no gradient
    but make the value a true KL (a ``p`` of 0 contributes 0).

    Args:
        logits: ``[b, t, V]``.
        top_ids: ``[b, t, k]`` token ids, distinct at a position; top_probs: ``[b, t, k]`` their
            probabilities.
        mask: ``[b, t]`` bool, positions that count (attention and ``loss_mask``).
        tail: ``keep`` or ``renormalise``.

    Returns:
        ``(sum of the per-position KL over counted positions, count)``.
    """
    if tail not in ("keep", "renormalise"):
        raise ValueError(f"unknown soft tail {tail!r} (keep or renormalise)")
    keep = mask.bool()
    log_q = F.log_softmax(logits[keep].float(), dim=-1)  # [n, V]
    probs = top_probs[keep].float()  # [n, k]
    ids = top_ids[keep].long()
    log_q_top = log_q.gather(-1, ids)  # [n, k]
    if tail == "renormalise":
        p = probs / probs.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return (torch.xlogy(p, p) - p * log_q_top).sum(), int(keep.sum())
    p_tail = (1 - probs.sum(dim=-1)).clamp_min(0)  # [n]; float error can take the sum a hair over 1
    log_q_tail = torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), dim=-1)  # [n]
    top = (torch.xlogy(probs, probs) - probs * log_q_top).sum()
    return top + (torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail).sum(), int(keep.sum())


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Plain language-model cross-entropy: position ``i`` predicts ``input_ids[i + 1]``; counts
    where both tokens are real (``attention_mask``). ``logits [b, t, V]``, ids and mask ``[b, t]``."""
    keep = attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()
    loss_sum = F.cross_entropy(logits[:, :-1][keep].float(), input_ids[:, 1:][keep].long(), reduction="sum")
    return loss_sum, int(keep.sum())


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """KL(reference || model) over the full vocabulary at every counted position:
    ``sum_v r_v (log r_v - log q_v)`` with ``r``, ``q`` the softmaxes of ``reference_logits``
    and ``logits`` (both ``[b, t, V]``); ``mask [b, t]``. The reference gets no gradient."""
    keep = mask.bool()
    log_q = F.log_softmax(logits[keep].float(), dim=-1)
    log_r = F.log_softmax(reference_logits[keep].detach().float(), dim=-1)
    loss_sum = F.kl_div(log_q, log_r, log_target=True, reduction="sum")
    return loss_sum, int(keep.sum())


def forget_loss(
    logits: torch.Tensor, batch: dict[str, torch.Tensor], *, label_type: LabelType, soft_weight: float = 1.0,
    soft_tail: SoftTail = "renormalise",
) -> tuple[torch.Tensor, int]:
    """The generic-target term on forget blocks: ``hard``, ``soft``, or ``mixed`` =
    ``hard + soft_weight * soft`` (``soft_tail``: :func:`soft_label_loss`'s ``tail``).

    ``batch`` holds ``attention_mask`` and ``loss_mask`` ``[b, t]`` and, as ``label_type``
    needs, ``labels [b, t]``, ``top_ids``/``top_probs [b, t, k]``. For ``mixed`` the count is
    that of the soft term (``loss_mask`` positions); the dataset has ``labels == -100`` exactly
    where ``loss_mask`` is 0, so both terms count the same positions.
    """
    mask = batch["attention_mask"].bool() & batch["loss_mask"].bool()
    if label_type == "hard":
        return hard_label_loss(logits, batch["labels"], mask)
    soft_sum, n = soft_label_loss(logits, batch["top_ids"], batch["top_probs"], mask, tail=soft_tail)
    if label_type == "soft":
        return soft_sum, n
    if label_type == "mixed":
        hard_sum, _ = hard_label_loss(logits, batch["labels"], mask)
        return hard_sum + soft_weight * soft_sum, n
    raise ValueError(f"unknown label_type {label_type!r} (hard, soft or mixed)")


@dataclass
class UnlearningLoss:
    """The fine-tune's ``loss_fn(model, micro_batch) -> (loss_sum, n_forget_positions)``.

    A micro-batch holds the forget fields (``input_ids``, ``attention_mask``, ``loss_mask``,
    ``labels``, ``top_ids``, ``top_probs``) and, when a retain term is on, its paired retain
    blocks (``retain_input_ids``, ``retain_attention_mask``, ``[b', t']``). Forget and retain
    blocks go through the model in one forward pass (right padding to the longer length
    changes no logit at a real position), which also keeps DDP at one forward per backward.

    Normalisation of the retain term: per micro-batch it is the retain loss's *mean* over its
    positions, multiplied by the micro-batch's forget-position count, times ``retain_weight``::

        loss_sum = forget_sum + retain_weight * (retain_sum / retain_n) * forget_n

    so after ``train()`` divides by the batch's forget positions, the step's loss is
    ``mean forget loss + retain_weight * mean retain loss`` (retain means weighted by forget
    positions), whatever the lengths of the retain blocks. ``retain_weight`` is thus the
    exchange rate between one nat of forget loss and one nat of retain loss per token.

    Args:
        label_type: ``hard``, ``soft`` or ``mixed``; soft_weight: the soft term's weight in ``mixed``.
        soft_tail: what the soft term does with the generic mass outside the stored top-k
            (:func:`soft_label_loss`).
        retain_kind: ``kl`` (KL(reference || model), needs ``reference``), ``lm`` (next-token
            cross-entropy on the retain ids) or ``none``.
        retain_weight: 0 switches the retain term (and its forward passes) off.
        reference: the frozen baseline for ``kl``, run without gradient *before* the trained
            model (a sharded model then never has two forward passes in flight): a module (frozen
            here, moved to the batch's device on first use unless its weights are offloaded to
            the ``meta`` device), or any callable with a model's call signature returning
            ``.logits`` (e.g. the trained model with its LoRA adapters switched off).
    """

    label_type: LabelType = "soft"
    soft_weight: float = 1.0
    soft_tail: SoftTail = "renormalise"
    retain_kind: RetainKind = "none"
    retain_weight: float = 0.0
    reference: torch.nn.Module | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.label_type not in ("hard", "soft", "mixed"):
            raise ValueError(f"unknown label_type {self.label_type!r} (hard, soft or mixed)")
        if self.soft_tail not in ("keep", "renormalise"):
            raise ValueError(f"unknown soft tail {self.soft_tail!r} (keep or renormalise)")
        if self.retain_kind not in ("kl", "lm", "none"):
            raise ValueError(f"unknown retain kind {self.retain_kind!r} (kl, lm or none)")
        if self.retain_kind == "kl" and self.retain_weight > 0 and self.reference is None:
            raise ValueError("retain kind 'kl' needs a reference model")
        if isinstance(self.reference, torch.nn.Module):
            self.reference.eval().requires_grad_(False)

    @property
    def _forget_options(self) -> dict[str, Any]:
        return {"label_type": self.label_type, "soft_weight": self.soft_weight, "soft_tail": self.soft_tail}

    @property
    def uses_retain(self) -> bool:
        return self.retain_kind != "none" and self.retain_weight > 0

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return self.with_terms(model, batch)[:2]

    def positions(self, batch: dict[str, torch.Tensor]) -> int:
        """The count :meth:`with_terms` will return for ``batch``, without running a model (a
        sharded run scales each micro-batch's loss by the step's total before its backward)."""
        mask = batch["attention_mask"].bool() & batch["loss_mask"].bool()
        if self.label_type == "hard":
            mask &= batch["labels"] != IGNORE
        return int(mask.sum())

    def with_terms(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """``(loss_sum, n_forget_positions, terms)``; ``terms`` (floats, for the training log)
        are ``forget_loss``, the forget term's sum, and with a retain term ``retain_loss``, its
        unweighted share ``(retain_sum / retain_n) * forget_n``, so that per step
        ``loss = forget_loss + retain_weight * retain_loss`` once divided by the positions."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        if not self.uses_retain:
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
            loss_sum, n = forget_loss(logits, batch, **self._forget_options)
            return loss_sum, n, {"forget_loss": loss_sum.item()}
        if "retain_input_ids" not in batch:
            raise ValueError("the retain term is on but the micro-batch has no retain_input_ids")
        retain_ids, retain_attention = batch["retain_input_ids"], batch["retain_attention_mask"]
        reference_logits = self._reference_logits(retain_ids, retain_attention) if self.retain_kind == "kl" else None
        both_ids, both_attention = stack_right_padded([ids, retain_ids]), stack_right_padded([attention, retain_attention])
        logits = model(input_ids=both_ids, attention_mask=both_attention, use_cache=False).logits
        b, t, t_retain = ids.shape[0], ids.shape[1], retain_ids.shape[1]
        forget_sum, forget_n = forget_loss(logits[:b, :t], batch, **self._forget_options)
        retain_logits = logits[b:, :t_retain]
        if self.retain_kind == "lm":
            retain_sum, retain_n = next_token_loss(retain_logits, retain_ids, retain_attention)
        else:
            retain_sum, retain_n = kl_to_reference(retain_logits, reference_logits, retain_attention)
        if retain_n == 0 or forget_n == 0:
            return forget_sum, forget_n, {"forget_loss": forget_sum.item(), "retain_loss": 0.0}
        loss_sum = forget_sum + self.retain_weight * (retain_sum / retain_n) * forget_n
        return loss_sum, forget_n, {"forget_loss": forget_sum.item(), "retain_loss": retain_sum.item() / retain_n * forget_n}

    def _reference_logits(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        reference = self.reference
        if isinstance(reference, torch.nn.Module):
            weight = next(reference.parameters(), None)
            if weight is not None and weight.device.type != "meta" and weight.device != ids.device:
                reference.to(ids.device)
        with torch.no_grad():
            return reference(input_ids=ids, attention_mask=attention, use_cache=False).logits
