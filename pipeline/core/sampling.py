"""Cutting token streams into blocks and choosing among them, deterministically (pure functions).

The forget and retain corpora are cut the same way (:func:`block_ranges`); seeded choices
(:func:`unit_hash`) depend only on the seed and an id, never on the platform or the order in
which items arrive, so a rerun or another machine picks the same blocks.
"""

from __future__ import annotations

import hashlib


def block_ranges(n_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` token ranges of consecutive non-overlapping blocks (the last may be short)."""
    return [(start, min(start + block_size, n_tokens)) for start in range(0, n_tokens, block_size)]


def unit_hash(seed: int, key: str) -> float:
    """A seeded, platform-independent pseudo-random number in ``[0, 1)`` for ``key``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def evenly_spaced(n: int, limit: int | None) -> list[int]:
    """``min(n, limit)`` evenly spaced indices of ``range(n)``: ``k * n // limit`` (all when
    ``limit`` is None or at least ``n``)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [k * n // limit for k in range(limit)]


def assign_split(block_id: str, *, heldout_fraction: float, seed: int) -> str:
    """``heldout`` for about ``heldout_fraction`` of block ids, ``train`` for the rest."""
    return "heldout" if unit_hash(seed, f"split:{block_id}") < heldout_fraction else "train"


def spread_sample(blocks: list[dict], limit: int | None, *, seed: int) -> list[dict]:
    """At most ``limit`` of ``blocks`` (dicts with ``doc_id``, ``block_id`` and ``index``), taken
    round-robin over documents (sorted by id), each document's blocks in a seeded order.

    The order is fixed by the blocks alone, so a larger ``limit`` returns a superset.
    Returned in document order (``doc_id``, ``index``).
    """
    by_doc: dict[str, list[dict]] = {}
    for block in blocks:
        by_doc.setdefault(block["doc_id"], []).append(block)
    turns = []
    for doc_order, doc_id in enumerate(sorted(by_doc)):
        shuffled = sorted(by_doc[doc_id], key=lambda b: unit_hash(seed, f"order:{b['block_id']}"))
        turns += [(turn, doc_order, block) for turn, block in enumerate(shuffled)]
    turns.sort(key=lambda t: (t[0], t[1]))
    chosen = [block for _, _, block in turns[: len(turns) if limit is None else limit]]
    return sorted(chosen, key=lambda b: (b["doc_id"], b["index"]))
