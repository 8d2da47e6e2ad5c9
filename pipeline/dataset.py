"""Stage ``dataset``: blocks + generic labels (``dataset.alpha``) -> the fine-tune's dataset.

One row per forget block: the original ids, the hard generic targets (``-100`` where the
position leaves the loss), the loss mask, the top-k soft targets, the confidence, and
provenance (block -> document -> passages; the dictionary's and the reviewed corrections'
hashes). The linguistic review's decisions (``labels/linguistic/decisions.jsonl``, rules in
:mod:`pipeline.review.decisions`) are applied last: an ``incorrect`` task's positions leave the loss,
or take the reviewer's fix as a one-hot target; the file's sha256 and what it changed go to the
manifest (``params.linguistic_review``) and the card. Parquet with Hugging Face ``datasets``
features in its schema, so ``datasets.load_dataset("parquet", data_files="data/dataset/*.parquet")`` gets typed columns.
Also writes a dataset card (``data/manifests/dataset_card.md``) with statistics.

Run: ``python -m pipeline.dataset`` (``dvc repro dataset``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.stage import run_stage
from pipeline.errors import DatasetValidationError
from pipeline.review.decisions import ReviewOutcome, apply_decisions, load_decisions
from pipeline.paths import BASELINE
from pipeline.params import Params, section_dict
from pipeline.store import DatasetWriter, atomic_write_text, read_dataset, read_manifest
from schemas.dataset import IGNORE, TRAINING

STAGE = "dataset"
PARAMS = ("dataset",)
CARD = Path("data/manifests/dataset_card.md")
CORRECTIONS = Path("labels/anchors/corrections.jsonl")
DECISIONS = Path("labels/linguistic/decisions.jsonl")
log = logging.getLogger(__name__)


def features():
    """The Hugging Face features of the dataset (kept in the Parquet schema metadata)."""
    from datasets import Features, List, Value

    return Features({
        "block_id": Value("string"), "doc_id": Value("string"), "char_start": Value("int64"),
        "char_end": Value("int64"), "passage_ids": List(Value("string")), "input_ids": List(Value("int32")),
        "labels": List(Value("int32")), "loss_mask": List(Value("int8")), "top_ids": List(List(Value("int32"))),
        "top_probs": List(List(Value("float32"))), "confidence": List(Value("float32")), "alpha": Value("float64"),
        "world": Value("int64"), "dictionary_sha256": Value("string"), "corrections_sha256": Value("string"),
    })


def overlapping_passages(blocks: pd.DataFrame, passages: pd.DataFrame) -> list[list[str]]:
    """Ids of the passages each block's character span overlaps."""
    by_doc = {doc: frame.sort_values("char_start") for doc, frame in passages.groupby("doc_id")}
    found = []
    for block in blocks.itertuples(index=False):
        frame = by_doc.get(block.doc_id)
        if frame is None:
            found.append([])
            continue
        hit = frame[(frame["char_start"] < block.char_end) & (frame["char_end"] > block.char_start)]
        found.append(hit["passage_id"].tolist())
    return found


def card(frame: pd.DataFrame, manifest_params: dict, review: ReviewOutcome | None = None) -> str:
    """A Markdown dataset card with the statistics a user checks before training."""
    positions = int(frame["input_ids"].map(len).sum())
    trained = int(sum(int(np.sum(mask, dtype=np.int64)) for mask in frame["loss_mask"]))
    confidence = np.concatenate([np.asarray(c, dtype=float) for c in frame["confidence"]]) if len(frame) else np.zeros(0)
    changed = sum(
        int(np.sum((np.asarray(ids[1:]) != np.asarray(labels[:-1])) & (np.asarray(mask[:-1]) == 1)))
        for ids, labels, mask in zip(frame["input_ids"], frame["labels"], frame["loss_mask"])
    )
    quantiles = np.quantile(confidence, [0.1, 0.5, 0.9]) if confidence.size else [0, 0, 0]
    return "\n".join([
        "# Dataset card: `dataset`", "",
        "Generic-target training data for Who's-Harry-Potter-style unlearning (one row per forget block).", "",
        "| statistic | value |", "|---|---|",
        f"| blocks | {len(frame)} |", f"| documents | {frame['doc_id'].nunique()} |",
        f"| positions | {positions} |", f"| trained positions | {trained} ({trained / max(positions, 1):.1%}) |",
        f"| trained positions whose target differs from the next original token | {changed} ({changed / max(trained, 1):.1%}) |",
        f"| alpha | {frame['alpha'].iloc[0] if len(frame) else ''} |",
        f"| confidence p10 / p50 / p90 | {quantiles[0]:.3f} / {quantiles[1]:.3f} / {quantiles[2]:.3f} |",
        f"| dictionary sha256 | `{frame['dictionary_sha256'].iloc[0] if len(frame) else ''}` |",
        f"| corrections sha256 | `{frame['corrections_sha256'].iloc[0] if len(frame) else ''}` |",
        *_selection_rows(manifest_params.get("block_selection")),
        *_review_rows(manifest_params.get("linguistic_review"), review), "",
        "Columns: docs/datasets.md. Parameters and input revisions: `data/manifests/dataset.json`.", "",
        f"Inputs: {', '.join(f'{k} `{v[:12]}`' for k, v in manifest_params['inputs'].items())}", "",
    ])


def _selection_rows(selection: dict | None) -> list[str]:
    """What the blocks stage's choice of training blocks covers (its manifest's ``selection``)."""
    if not selection:
        return []
    rows = [
        f"| training blocks chosen by | `{selection['method']}`: {selection['selected']} of {selection['candidates']} "
        f"candidate blocks (blocks.max_blocks: {selection['requested']}) |",
        f"| anchors covered | {selection['anchors_covered']} of {selection['anchors']} "
        f"({selection['anchor_weight_share']:.1%} of the anchor weight) |",
        f"| anchor occurrences covered | {selection['anchor_occurrences_covered']} of {selection['anchor_occurrences']} |",
        f"| documents covered | {selection['documents_covered']} of {selection['documents']} |",
    ]
    return rows + ([f"| note | {selection['note']} |"] if "note" in selection else [])


def _review_rows(provenance: dict | None, review: ReviewOutcome | None) -> list[str]:
    if provenance is None or review is None:
        return []
    return [
        f"| linguistic review sha256 | `{provenance['sha256']}` |",
        f"| linguistic decisions: applied / incorrect / stale / superseded | {review.applied} / {review.incorrect} / "
        f"{len(review.stale)} / {review.superseded} |",
        f"| positions changed by the review: dropped / fixed | {review.dropped} / {review.fixed} |",
    ]


def _tokenizer_encode(root: Path):
    """The baseline tokenizer's ``text -> ids``, loaded only when a decision carries a fix."""
    def load():
        from pipeline.models import load_tokenizer

        tokenizer = load_tokenizer(root / BASELINE)
        return lambda text: tokenizer.encode(text, add_special_tokens=False)
    return load


def run(params: Params, *, root: Path = Path(".")) -> dict:
    alpha = params.dataset.alpha
    blocks = read_dataset("blocks", root, columns=["block_id", "doc_id", "char_start", "char_end", "input_ids",
                                                   "loss_mask", "world"])
    labels = read_dataset("generic_labels", root)
    labels = labels[labels["alpha"] == alpha].set_index("block_id")
    missing = sorted(set(blocks["block_id"]) - set(labels.index))
    if missing:
        raise DatasetValidationError(
            f"generic_labels has no alpha={alpha} labels for {len(missing)} block(s) (first: {missing[0]}); "
            "run `dvc repro generic_labels` with dataset.alpha among generic_labels.alphas"
        )
    passages = read_dataset("passages", root, columns=["passage_id", "doc_id", "char_start", "char_end"])
    corrections = root / CORRECTIONS
    corrections_sha = hashlib.sha256(corrections.read_bytes() if corrections.exists() else b"").hexdigest()
    inputs = {name: read_manifest(name, root)["content_sha256"] for name in ("blocks", "generic_labels", "passages", "dictionary")}
    frame = pd.DataFrame({
        "block_id": blocks["block_id"], "doc_id": blocks["doc_id"],
        "char_start": blocks["char_start"], "char_end": blocks["char_end"],
        "passage_ids": overlapping_passages(blocks, passages), "input_ids": blocks["input_ids"],
        "labels": [
            [t if m else IGNORE for t, m in zip(labels.at[b, "target"], mask)]
            for b, mask in zip(blocks["block_id"], blocks["loss_mask"])
        ],
        "loss_mask": blocks["loss_mask"],
        "top_ids": [labels.at[b, "top_ids"] for b in blocks["block_id"]],
        "top_probs": [labels.at[b, "top_probs"] for b in blocks["block_id"]],
        "confidence": [labels.at[b, "confidence"] for b in blocks["block_id"]],
        "alpha": alpha, "world": blocks["world"], "dictionary_sha256": inputs["dictionary"],
        "corrections_sha256": corrections_sha,
    })
    decisions_path = root / DECISIONS
    decisions_sha = hashlib.sha256(decisions_path.read_bytes() if decisions_path.exists() else b"").hexdigest()
    decisions = load_decisions(decisions_path)
    frame, review = apply_decisions(
        frame, decisions, targets={b: labels.at[b, "target"] for b in blocks["block_id"]}, alpha=alpha,
        encode=_tokenizer_encode(root),
    )
    for stale in review.stale:
        log.warning("stale linguistic decision, skipped: %s", stale)
    used = section_dict(params, *PARAMS) | {"inputs": inputs} | {
        "block_selection": read_manifest("blocks", root)["params"].get("selection"),
        "linguistic_review": {"path": DECISIONS.as_posix(), "sha256": decisions_sha, **review.as_dict()},
    }
    with DatasetWriter(TRAINING, stage=STAGE, params=used, root=root, arrow_schema=features().arrow_schema) as writer:
        writer.write(frame)
    atomic_write_text(root / CARD, card(frame, used, review))
    trained = int(sum(int(np.sum(mask, dtype=np.int64)) for mask in frame["loss_mask"]))
    return {"blocks": len(frame), "trained_positions": trained, "alpha": alpha,
            "review_dropped": review.dropped, "review_fixed": review.fixed, "review_stale": len(review.stale)}


if __name__ == "__main__":
    run_stage(STAGE, run)
