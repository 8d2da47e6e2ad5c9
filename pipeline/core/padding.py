"""Right padding of token sequences into batches: the one padder of the project (pure functions).

Models here are causal and read left to right, so padding goes on the right, where no real token
attends to it; generation is the exception and pads on the left (``pipeline.core.generation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, both ``[b, max_len]`` int64, padding on the right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def stack_right_padded(batches: Sequence[torch.Tensor], *, value: int = 0) -> torch.Tensor:
    """Concatenate ``[b_i, t_i, ...]`` tensors along the batch axis, right-padding the second axis
    to the longest ``t`` with ``value``."""
    longest = max(t.shape[1] for t in batches)
    pads = [(0, 0) * (t.dim() - 2) + (0, longest - t.shape[1]) for t in batches]
    return torch.cat([F.pad(t, pad, value=value) for t, pad in zip(batches, pads)])
