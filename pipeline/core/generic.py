"""Generic logits and labels (docs/algorithm.md steps 6-7), pure tensor functions.

Shapes: ``n`` original positions of a block, ``V`` the vocabulary. Logits are never written to
disk: the labels stage keeps one batch of full-vocabulary logits in memory at a time and stores
only the argmax, the top-k ids and probabilities, and the confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gather_aligned(translated_logits: torch.Tensor, alignment: Sequence[int]) -> torch.Tensor:
    """Baseline logits at ``j(i)`` for every original position ``i``: ``[m, V] -> [n, V]``.

    Dropped positions (``j = -1``) get zeros; they are masked out of the loss anyway.
    """
    index = torch.as_tensor(alignment, dtype=torch.long, device=translated_logits.device)
    gathered = translated_logits[index.clamp(min=0)]
    return gathered * (index >= 0).unsqueeze(-1).to(gathered.dtype)


def generic_logits(
    baseline: torch.Tensor, reinforced: torch.Tensor, alpha: float, *,
    reference: torch.Tensor | None = None, space: str = "logit",
) -> torch.Tensor:
    """``v_generic = v_baseline - alpha * ReLU(v_reinforced - v_reference)`` (all ``[n, V]``).

    ``reference`` defaults to ``baseline`` (the paper's formula on one text); the stage passes
    the baseline's logits on the original text, so that the boost compares the two models on
    the same context, while ``baseline`` holds its logits on the translated text.
    """
    boost = reinforcement_boost(reinforced.clone(), baseline if reference is None else reference, space=space)
    return baseline - alpha * boost


def suppress_used_translations(
    logits: torch.Tensor, alignment: Sequence[int], used_positions: Sequence[int], used_token_ids: Sequence[int]
) -> torch.Tensor:
    """Consistency rule 2: at each original position whose translated position ``j(i)`` is at
    or after a translation's first token, that token's logit becomes the position's mean logit
    (not minus infinity), so the model does not learn to repeat the substitute name.

    ``logits``: ``[n, V]``; returns a new tensor.
    """
    out = logits.clone()
    if not used_positions:
        return out
    target = torch.as_tensor(alignment, dtype=torch.long, device=logits.device)
    mean = logits.mean(dim=-1)
    for position, token in zip(used_positions, used_token_ids):
        rows = torch.nonzero((target >= position) & (target >= 0), as_tuple=True)[0]
        if rows.numel():
            out[rows, token] = mean[rows]
    return out


def labels_from_logits(logits: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per position: ``target`` (argmax id), ``top_ids``/``top_probs`` (``[n, k]``, softmax of
    the generic logits) and ``confidence`` (the top probability)."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_probs, top_ids = probs.topk(top_k, dim=-1)
    return {"target": top_ids[:, 0], "top_ids": top_ids, "top_probs": top_probs, "confidence": top_probs[:, 0]}


def used_translation_entries(
    alignment: Sequence[int], used_positions: Sequence[int], used_token_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(rows, token ids)`` that consistency rule 2 sets to the mean logit, as two index
    tensors (the same entries :func:`suppress_used_translations` writes, in the same order)."""
    target = torch.as_tensor(list(alignment), dtype=torch.long)
    rows, tokens = [], []
    for position, token in zip(used_positions, used_token_ids):
        hit = torch.nonzero((target >= position) & (target >= 0), as_tuple=True)[0]
        rows.append(hit)
        tokens.append(torch.full_like(hit, int(token)))
    if not rows:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(tokens)


def reinforcement_boost(reinforced: torch.Tensor, reference: torch.Tensor, *, space: str = "logit") -> torch.Tensor:
    """``ReLU(v_reinforced - v_reference)``, ``[n, V]``: what reinforcement raised.

    ``space="logprob"`` compares log-softmaxes. Raw logits carry an offset per position that
    depends on the model and the context (softmax ignores it); when the two sides differ in it,
    every token's difference passes the ReLU, and the label becomes
    ``(1 + alpha) v_base - alpha v_reinf``, which pushes down whatever the reinforced model is
    merely surer of (a comma after a name, a line break after a title). The default is the
    formula as written; the stage's defaults come from params (``generic_labels.boost_space``).
    ``reinforced`` is overwritten.
    """
    if space == "logprob":
        reinforced = reinforced.log_softmax(dim=-1)
        reference = reference.log_softmax(dim=-1)
    elif space != "logit":
        raise ValueError(f"unknown boost space {space!r} (logprob or logit)")
    return reinforced.sub_(reference).relu_()


def block_labels(
    baseline: torch.Tensor, reinforced: torch.Tensor, *, alphas: Sequence[float],
    entries: tuple[torch.Tensor, torch.Tensor], top_k: int,
    reference: torch.Tensor | None = None, space: str = "logit",
) -> list[dict[str, torch.Tensor]]:
    """Labels of one block for every alpha: the composition
    ``labels_from_logits(suppress_used_translations(generic_logits(...)))``, computed in fewer
    passes over the ``[n, V]`` logits (the CPU bottleneck after the forwards).

    ``ReLU(v_reinf - v_base)`` and both row means are computed once for all alphas (the mean
    is linear: ``mean(v_base - a*d) = mean(v_base) - a*mean(d)``); the softmax is never
    materialised (top-k of the logits, then ``exp(top - logsumexp)``). ``reinforced`` is
    overwritten with the ReLU difference to save an ``[n, V]`` buffer.
    """
    difference = reinforcement_boost(reinforced, baseline if reference is None else reference, space=space)
    base_mean, difference_mean = baseline.mean(dim=-1), difference.mean(dim=-1)
    rows, tokens = entries[0].to(baseline.device), entries[1].to(baseline.device)
    out = []
    logits = torch.empty_like(baseline)
    for alpha in alphas:
        torch.add(baseline, difference, alpha=-float(alpha), out=logits)
        if rows.numel():
            # Rule 2 reads the means of the unsuppressed logits (docs/algorithm.md, rule 2).
            logits[rows, tokens] = (base_mean - float(alpha) * difference_mean)[rows]
        top_logits, top_ids = logits.topk(top_k, dim=-1)
        top_probs = torch.exp(top_logits - torch.logsumexp(logits, dim=-1, keepdim=True))
        out.append({"target": top_ids[:, 0], "top_ids": top_ids, "top_probs": top_probs, "confidence": top_probs[:, 0]})
    return out
