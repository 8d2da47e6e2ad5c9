"""Stage ``retain_blocks``: retain documents -> token blocks, each ``train`` or ``heldout``.

Each retain document is tokenized whole (no special tokens) with the baseline tokenizer and cut
into blocks exactly as the forget corpus is (:func:`pipeline.core.sampling.block_ranges`,
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

from pathlib import Path

import pandas as pd

from pipeline.core.sampling import assign_split, block_ranges, spread_sample
from pipeline.paths import BASELINE
from pipeline.stage import run_stage
from pipeline.models import load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.store import DatasetWriter, read_dataset, write_rejects
from schemas.retain import RETAIN_BLOCKS

STAGE = "retain_blocks"
PARAMS = ("blocks.block_size", "blocks.min_block_tokens", "retain_blocks")


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings, sizes = params.retain_blocks, params.blocks
    documents = read_dataset("documents", root)
    retain = documents[documents["corpus"] == "retain"].sort_values("doc_id", kind="stable")
    tokenizer = load_tokenizer(root / BASELINE)
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
