"""Stage ``retain_blocks``: retain documents -> token blocks, each ``train`` or ``heldout``.

Each retain document is tokenized whole (no special tokens) with the baseline tokenizer and cut
into blocks exactly as the forget corpus is (:func:`pipeline.blocks.block_ranges`,
``blocks.block_size``; a last block shorter than ``blocks.min_block_tokens`` goes to
``retain_blocks_rejects``). A seeded hash of the block id puts a block in ``heldout`` with
probability ``retain_blocks.heldout_fraction``, so a block's split never depends on which other
blocks exist. ``train`` blocks are for the fine-tune's retain term; ``heldout`` blocks for
evaluation (perplexity, and the non-members of Min-K% Prob).

The caps ``max_train_blocks`` / ``max_heldout_blocks`` keep a sample spread over the whole
retain corpus: documents take turns (round-robin, by ``doc_id``), and within a document blocks
come in a seeded pseudo-random order, so a capped sample is not just the first pages of the
first book, and raising a cap only adds blocks.

Run: ``python -m pipeline.retain_blocks`` (``dvc repro retain_blocks``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from pipeline.blocks import block_ranges
from pipeline.cli_support import run_stage
from pipeline.models import load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.store import DatasetWriter, read_dataset, write_rejects
from schemas.retain import RETAIN_BLOCKS

STAGE = "retain_blocks"
PARAMS = ("blocks.block_size", "blocks.min_block_tokens", "retain_blocks")
TOKENIZER = Path("models/baseline")


def unit_hash(seed: int, key: str) -> float:
    """A seeded, platform-independent pseudo-random number in ``[0, 1)`` for ``key``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(block_id: str, *, heldout_fraction: float, seed: int) -> str:
    """``heldout`` for about ``heldout_fraction`` of block ids, ``train`` for the rest."""
    return "heldout" if unit_hash(seed, f"split:{block_id}") < heldout_fraction else "train"


def spread_sample(blocks: list[dict], limit: int | None, *, seed: int) -> list[dict]:
    """At most ``limit`` of ``blocks`` (dicts with ``doc_id`` and ``block_id``), taken
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


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings, sizes = params.retain_blocks, params.blocks
    documents = read_dataset("documents", root)
    retain = documents[documents["corpus"] == "retain"].sort_values("doc_id", kind="stable")
    tokenizer = load_tokenizer(root / TOKENIZER)
    used = section_dict(params, "retain_blocks") | {
        "blocks": {"block_size": sizes.block_size, "min_block_tokens": sizes.min_block_tokens},
        "tokenizer": tokenizer.name_or_path and Path(tokenizer.name_or_path).name,
    }

    candidates: dict[str, list[dict]] = {"train": [], "heldout": []}
    refused = []
    for doc in retain.itertuples(index=False):
        encoded = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        for index, (start, end) in enumerate(block_ranges(len(ids), sizes.block_size)):
            block_id = f"{doc.doc_id}@{index}"
            if end - start < sizes.min_block_tokens:
                refused.append({"source": doc.doc_id, "location": block_id, "record": str(end - start),
                                "reason": f"{end - start} tokens < blocks.min_block_tokens ({sizes.min_block_tokens})"})
                continue
            split = assign_split(block_id, heldout_fraction=settings.heldout_fraction, seed=settings.seed)
            candidates[split].append({
                "block_id": block_id, "doc_id": doc.doc_id, "index": index, "token_start": start,
                "char_start": offsets[start][0], "char_end": offsets[end - 1][1],
                "input_ids": list(ids[start:end]), "split": split,
            })

    rows = (spread_sample(candidates["train"], settings.max_train_blocks, seed=settings.seed)
            + spread_sample(candidates["heldout"], settings.max_heldout_blocks, seed=settings.seed))
    with DatasetWriter(RETAIN_BLOCKS, stage=STAGE, params=used, root=root) as writer:
        if rows:
            writer.write(pd.DataFrame(rows))
    write_rejects(refused, RETAIN_BLOCKS, stage=STAGE, params=used, root=root)
    kept = {split: sum(r["split"] == split for r in rows) for split in ("train", "heldout")}
    return {"documents": len(retain), "train_blocks": kept["train"], "heldout_blocks": kept["heldout"],
            "candidates": sum(map(len, candidates.values())), "rejected": len(refused),
            "tokens": sum(len(r["input_ids"]) for r in rows)}


if __name__ == "__main__":
    run_stage(STAGE, run)
