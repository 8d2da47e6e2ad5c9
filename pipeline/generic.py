"""Generic logits and labels (ALGORITHM.md steps 6-7), pure tensor functions.

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


def generic_logits(baseline: torch.Tensor, reinforced: torch.Tensor, alpha: float) -> torch.Tensor:
    """``v_generic = v_baseline - alpha * ReLU(v_reinforced - v_baseline)`` (both ``[n, V]``)."""
    return baseline - alpha * torch.relu(reinforced - baseline)


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
