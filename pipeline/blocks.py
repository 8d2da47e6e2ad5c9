"""Stage ``blocks``: forget documents -> token blocks, the ones chosen for training translated and aligned.

docs/algorithm.md steps 1, 4 and 5. Each forget document is tokenized whole (no special tokens, no
BOS mid-document) with the baseline tokenizer and cut into non-overlapping blocks of
``blocks.block_size`` tokens (a last block under ``blocks.min_block_tokens`` goes to
``blocks_rejects``). Every block is a candidate; ``blocks.select`` chooses at most
``blocks.max_blocks`` of them to train on (:mod:`pipeline.core.block_selection`: ``first``,
``spread``, or ``anchors``, the default: greedy weighted coverage of the dictionary's anchors,
weights from its ``forget_count`` and ``score`` columns).

Per chosen block, one seeded world (translation index) is chosen, every anchor occurrence is
replaced by its translation in that world (:func:`pipeline.core.alignment.translate`), the
translated text is tokenized, and every original position is aligned to the translation with
the loss mask and both consistency rules' inputs (:func:`pipeline.core.alignment.align`,
:func:`pipeline.core.alignment.used_translations`). An anchor cut by a block edge stays
untranslated and its tokens leave the loss.

Outputs: ``block_candidates`` (every block: ids, anchors held, ``selected``, ``rank``, ``gain``;
the blocks never trained on stay identifiable for the evaluation), ``blocks`` (the chosen ones,
in block order, what every later stage reads) and ``blocks_rejects``. The manifests' ``params``
record the selection and what it covers (``selection``: anchors and their weight share,
occurrences, documents, and a ``note`` when more blocks were asked for than exist).

Run: ``python -m pipeline.blocks`` (``dvc repro blocks``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.core.alignment import align, choose_world, name_prefix_ends, translate, used_translations
from pipeline.core.anchor_match import AnchorMatcher, AnchorSpan
from pipeline.core.block_selection import Candidate, anchor_weights, coverage_summary, select
from pipeline.core.sampling import block_ranges
from pipeline.errors import DatasetValidationError
from pipeline.models import load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.paths import BASELINE
from pipeline.stage import run_stage
from pipeline.store import DatasetWriter, read_dataset, read_manifest, write_dataset, write_rejects
from schemas.blocks import BLOCK_CANDIDATES, BLOCKS

STAGE = "blocks"
PARAMS = ("blocks",)
_PART_ROWS = 256  # blocks per Parquet part: bounded memory on a large corpus


def spans_in(spans: list[AnchorSpan], start: int, end: int) -> tuple[list[AnchorSpan], list[tuple[int, int]]]:
    """Anchor spans inside ``[start, end)`` (shifted to block coordinates), and those cut by an edge."""
    inside, cut = [], []
    for s in spans:
        if s.end <= start or s.start >= end:
            continue
        if start <= s.start and s.end <= end:
            inside.append(AnchorSpan(s.start - start, s.end - start, s.anchor, s.surface))
        else:
            cut.append((max(s.start, start) - start, min(s.end, end) - start))
    return inside, cut


def overlapping(spans: list[AnchorSpan], start: int, end: int) -> list[AnchorSpan]:
    """The spans (left to right, non-overlapping, as AnchorMatcher.find returns them) that
    overlap ``[start, end)``, found by bisection: a document holds thousands."""
    first = bisect_right([s.end for s in spans], start)
    last = bisect_left([s.start for s in spans], end)
    return spans[first:last]


def build_block(
    *, block_id: str, doc_id: str, index: int, text: str, token_start: int, ids: list[int],
    offsets: list[tuple[int, int]], spans: list[AnchorSpan], translations: dict[str, list[str]],
    worlds: int, seed: int, tokenizer, drop_name_prefixes: bool = True,
) -> dict:
    """One row of the ``blocks`` dataset; ``offsets`` index the document text."""
    char_start, char_end = offsets[0][0], offsets[-1][1]
    block_text = text[char_start:char_end]
    local = [(s - char_start, e - char_start) for s, e in offsets]
    inside, cut = spans_in(spans, char_start, char_end)
    world = choose_world(seed, block_id, worlds) if worlds else 0
    translated, replacements = translate(block_text, inside, translations, world)
    encoded = tokenizer(translated, add_special_tokens=False, return_offsets_mapping=True)
    prefixes = name_prefix_ends(block_text) if drop_name_prefixes else []
    alignment = align(local, ids, encoded["offset_mapping"], encoded["input_ids"], replacements, partial_anchors=cut,
                      name_prefixes=prefixes)
    used = used_translations(encoded["offset_mapping"], encoded["input_ids"], replacements)
    return {
        "block_id": block_id, "doc_id": doc_id, "index": index, "token_start": token_start,
        "char_start": char_start, "char_end": char_end, "input_ids": list(ids), "world": world,
        "translated_text": translated, "translated_ids": list(encoded["input_ids"]),
        "alignment": alignment.target, "loss_mask": [int(m) for m in alignment.mask],
        "drop_reasons": alignment.reason, "anchors": [r.anchor for r in replacements],
        "used_positions": [p for p, _ in used], "used_token_ids": [t for _, t in used],
    }


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.blocks
    documents = read_dataset("documents", root)
    forget = documents[documents["corpus"] == "forget"].sort_values("doc_id", kind="stable")
    dictionary = read_dataset("dictionary", root, columns=["anchor", "translations", "forget_count", "score"])
    if settings.select == "anchors" and dictionary.empty:
        raise DatasetValidationError(
            "dataset 'dictionary' (data/dictionary) has no anchors: blocks.select 'anchors' chooses blocks by the "
            "anchors they cover; build the dictionary (dvc repro dictionary) or set blocks.select: first or spread"
        )
    translations = dict(zip(dictionary["anchor"], dictionary["translations"]))
    worlds = len(next(iter(translations.values()))) if translations else 0
    weights = anchor_weights(dictionary["anchor"].tolist(), dictionary["forget_count"].tolist(),
                             [None if pd.isna(s) else float(s) for s in dictionary["score"]])
    matcher = AnchorMatcher(translations)
    tokenizer = load_tokenizer(root / BASELINE)
    texts = dict(zip(forget["doc_id"], forget["text"]))

    candidates, rows, refused = [], [], []
    for doc_id, text in tqdm(texts.items(), desc="blocks: candidates", unit="doc"):
        ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = matcher.find(text)
        for index, (start, end) in enumerate(block_ranges(len(ids["input_ids"]), settings.block_size)):
            block_id = f"{doc_id}@{index}"
            if end - start < settings.min_block_tokens:
                refused.append({"source": doc_id, "location": block_id, "record": str(end - start),
                                "reason": f"{end - start} tokens < blocks.min_block_tokens ({settings.min_block_tokens})"})
                continue
            char_start, char_end = ids["offset_mapping"][start][0], ids["offset_mapping"][end - 1][1]
            inside, _ = spans_in(overlapping(spans, char_start, char_end), char_start, char_end)
            counts = Counter(s.anchor for s in inside)
            candidates.append(Candidate(block_id, doc_id, counts))
            rows.append({"block_id": block_id, "doc_id": doc_id, "index": index, "token_start": start,
                         "char_start": char_start, "char_end": char_end, "input_ids": ids["input_ids"][start:end],
                         "anchors": sorted(counts), "anchor_counts": [counts[a] for a in sorted(counts)]})

    chosen = select(candidates, settings.max_blocks, method=settings.select, weights=weights,
                    document_penalty=settings.document_penalty)
    selection = selection_record(settings, candidates, chosen.order, weights)
    used = section_dict(params, *PARAMS) | {
        "dictionary_sha256": read_manifest("dictionary", root)["content_sha256"],
        "tokenizer": tokenizer.name_or_path and Path(tokenizer.name_or_path).name,
        "selection": selection,
    }
    rank = {position: turn + 1 for turn, position in enumerate(chosen.order)}
    gain = dict(zip(chosen.order, chosen.gains))
    for position, row in enumerate(rows):
        row |= {"selected": position in rank, "rank": rank.get(position, 0), "gain": gain.get(position)}
    write_dataset(pd.DataFrame(rows, columns=list(BLOCK_CANDIDATES.model.to_schema().columns)), BLOCK_CANDIDATES,
                  stage=STAGE, params=used, root=root)

    reasons, kept_tokens, trained = Counter(), 0, 0
    chosen_rows = [rows[p] for p in sorted(rank)]  # block order, as every later stage expects
    with DatasetWriter(BLOCKS, stage=STAGE, params=used, root=root) as writer:
        part = []
        for doc_id, blocks_of_doc in _by_document(chosen_rows):
            text = texts[doc_id]
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            spans = matcher.find(text)
            for row in tqdm(blocks_of_doc, desc=f"blocks: {doc_id}", unit="block", leave=False):
                start, end = row["token_start"], row["token_start"] + len(row["input_ids"])
                block = build_block(
                    block_id=row["block_id"], doc_id=doc_id, index=row["index"], text=text, token_start=start,
                    ids=encoded["input_ids"][start:end], offsets=encoded["offset_mapping"][start:end],
                    spans=overlapping(spans, row["char_start"], row["char_end"]), translations=translations,
                    worlds=worlds, seed=settings.seed, tokenizer=tokenizer,
                    drop_name_prefixes=settings.drop_name_prefixes,
                )
                reasons.update(r for r in block["drop_reasons"] if r)
                kept_tokens, trained = kept_tokens + len(block["input_ids"]), trained + sum(block["loss_mask"])
                part.append(block)
                if len(part) == _PART_ROWS:
                    writer.write(pd.DataFrame(part))
                    part = []
        if part:
            writer.write(pd.DataFrame(part))
    write_rejects(refused, BLOCKS, stage=STAGE, params=used, root=root)
    summary = {"blocks": len(chosen_rows), "candidates": len(candidates), "tokens": kept_tokens,
               "trained_positions": trained, "kept_share": round(trained / kept_tokens, 4) if kept_tokens else 0.0,
               "anchors_covered": selection["anchors_covered"], "anchor_weight_share": selection["anchor_weight_share"]}
    return summary | {f"dropped_{k.replace(' ', '_')}": v for k, v in sorted(reasons.items())}


def selection_record(settings, candidates: list[Candidate], order: list[int], weights: dict[str, float]) -> dict:
    """What the manifests record about the choice: how, how many, and what it covers."""
    record = {"method": settings.select, "requested": settings.max_blocks, "candidates": len(candidates),
              "selected": len(order)}
    if settings.select == "anchors":
        record["document_penalty"] = settings.document_penalty
    record |= coverage_summary(candidates, order, weights=weights)
    if settings.max_blocks is not None and settings.max_blocks > len(candidates):
        record["note"] = (f"blocks.max_blocks asks for {settings.max_blocks} blocks but the forget corpus has "
                          f"{len(candidates)}: all of them are used")
    return record


def _by_document(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["doc_id"], []).append(row)
    return list(grouped.items())


if __name__ == "__main__":
    run_stage(STAGE, run)
