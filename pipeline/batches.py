"""Micro-batches of token blocks, and which blocks each optimiser step takes.

:class:`BlockBatches` builds right-padded micro-batches by block index (what
:func:`pipeline.training.train` feeds its ``loss_fn``); :func:`step_indices` is the data order,
a seeded permutation per epoch and a pure function of ``(seed, step)``, so that a resumed run
and every process of a launch agree on it without talking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

Batch = dict[str, torch.Tensor]
"""A micro-batch: tensors ``[batch, seq, ...]`` by field name."""


class BatchesFn(Protocol):
    """What :func:`train` draws micro-batches from: ``len()`` examples, and a micro-batch (a
    dict of tensors with at least ``input_ids`` and ``attention_mask`` ``[batch, seq]``) for any
    list of example indices."""

    def __len__(self) -> int: ...

    def __call__(self, indices: Sequence[int]) -> Batch: ...


class BlockBatches:
    """Right-padded micro-batches of token blocks, built by block index.

    Args:
        input_ids: one list of token ids per block (lengths may differ).
        loss_mask: optional, one 0/1 per position: 1 where the prediction *made at* that position
            (of the next token) is trained on, the convention of the ``blocks`` dataset.
        per_position: optional further per-position fields, e.g. ``labels`` ``[n]`` or
            ``topk_ids`` ``[n, k]`` for the unlearning fine-tune; padded with zeros.
        pad_id: the id written into padding (never attended to, never trained on).

    A micro-batch is ``{"input_ids": [b, t] int64, "attention_mask": [b, t] int64,
    "loss_mask": [b, t] int64 (if given), <per_position>: [b, t, ...]}`` with ``t`` the longest
    block of the micro-batch; padding has ``attention_mask`` 0 and ``loss_mask`` 0.
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        *,
        loss_mask: Sequence[Sequence[int]] | None = None,
        per_position: Mapping[str, Sequence[Any]] | None = None,
        pad_id: int = 0,
    ) -> None:
        self._fields: dict[str, list[torch.Tensor]] = {
            "input_ids": [torch.as_tensor(list(ids), dtype=torch.long) for ids in input_ids]
        }
        lengths = [len(ids) for ids in self._fields["input_ids"]]
        if any(n == 0 for n in lengths):
            raise ValueError(f"empty block at index {lengths.index(0)}")
        extra = dict(per_position or {})
        if loss_mask is not None:
            extra["loss_mask"] = loss_mask
        for name, values in extra.items():
            if name in ("input_ids", "attention_mask"):
                raise ValueError(f"per_position field {name!r} is reserved")
            tensors = [torch.as_tensor(np.asarray(v)) for v in values]
            if name == "loss_mask":
                tensors = [t.to(torch.long) for t in tensors]
            if len(tensors) != len(lengths) or any(t.shape[0] != n for t, n in zip(tensors, lengths)):
                raise ValueError(f"{name}: needs one entry per position of every block")
            self._fields[name] = tensors
        self.pad_id = pad_id
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._fields["input_ids"])

    def __call__(self, indices: Sequence[int]) -> Batch:
        ids = [self._fields["input_ids"][i] for i in indices]
        batch = {
            "input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=self.pad_id),
            "attention_mask": torch.nn.utils.rnn.pad_sequence(
                [torch.ones(len(t), dtype=torch.long) for t in ids], batch_first=True
            ),
        }
        for name, tensors in self._fields.items():
            if name != "input_ids":
                batch[name] = torch.nn.utils.rnn.pad_sequence([tensors[i] for i in indices], batch_first=True)
        return batch

    @property
    def fingerprint(self) -> str:
        """Hash of every block's content: a checkpoint only resumes on the same data."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name in sorted(self._fields):
                digest.update(name.encode())
                for tensor in self._fields[name]:
                    digest.update(str(tuple(tensor.shape)).encode())
                    digest.update(tensor.contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def step_indices(step: int, *, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of optimiser step ``step`` (0-based): positions
    ``[step * batch_size, (step + 1) * batch_size)`` of the stream made of one seeded
    permutation of ``range(n_examples)`` per epoch (a batch may straddle two epochs)."""
    start = step * batch_size
    indices = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n_examples)
        indices.append(int(_epoch_order(n_examples, seed, epoch)[offset]))
    return indices


_ORDER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_order(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    key = (n_examples, seed, epoch)
    if key not in _ORDER_CACHE:
        if len(_ORDER_CACHE) > 64:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return _ORDER_CACHE[key]
