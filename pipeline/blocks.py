"""Stage ``blocks``: forget documents -> token blocks with their generic translation and alignment.

docs/algorithm.md steps 1, 4 and 5. Each forget document is tokenized whole (no special tokens, no
BOS mid-document) with the baseline tokenizer and cut into non-overlapping blocks of
``blocks.block_size`` tokens. Per block, one seeded world (translation index) is chosen, every
anchor occurrence is replaced by its translation in that world (:func:`pipeline.core.alignment.translate`),
the translated text is tokenized, and every original position is aligned to the translation
with the loss mask and both consistency rules' inputs (:func:`pipeline.core.alignment.align`,
:func:`pipeline.core.alignment.used_translations`). An anchor cut by a block edge stays untranslated
and its tokens leave the loss.

Run: ``python -m pipeline.blocks`` (``dvc repro blocks``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.core.alignment import align, choose_world, translate, used_translations
from pipeline.core.anchor_match import AnchorMatcher, AnchorSpan
from pipeline.core.sampling import block_ranges
from pipeline.paths import BASELINE
from pipeline.stage import run_stage
from pipeline.models import load_tokenizer
from pipeline.params import Params, section_dict
from pipeline.store import DatasetWriter, read_dataset, read_manifest, write_rejects
from schemas.blocks import BLOCKS

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


def build_block(
    *, block_id: str, doc_id: str, index: int, text: str, token_start: int, ids: list[int],
    offsets: list[tuple[int, int]], spans: list[AnchorSpan], translations: dict[str, list[str]],
    worlds: int, seed: int, tokenizer,
) -> dict:
    """One row of the ``blocks`` dataset; ``offsets`` index the document text."""
    char_start, char_end = offsets[0][0], offsets[-1][1]
    block_text = text[char_start:char_end]
    local = [(s - char_start, e - char_start) for s, e in offsets]
    inside, cut = spans_in(spans, char_start, char_end)
    world = choose_world(seed, block_id, worlds) if worlds else 0
    translated, replacements = translate(block_text, inside, translations, world)
    encoded = tokenizer(translated, add_special_tokens=False, return_offsets_mapping=True)
    alignment = align(local, ids, encoded["offset_mapping"], encoded["input_ids"], replacements, partial_anchors=cut)
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
    dictionary = read_dataset("dictionary", root, columns=["anchor", "translations"])
    translations = dict(zip(dictionary["anchor"], dictionary["translations"]))
    worlds = len(next(iter(translations.values()))) if translations else 0
    matcher = AnchorMatcher(translations)
    tokenizer = load_tokenizer(root / BASELINE)
    used = section_dict(params, *PARAMS) | {
        "dictionary_sha256": read_manifest("dictionary", root)["content_sha256"],
        "tokenizer": tokenizer.name_or_path and Path(tokenizer.name_or_path).name,
    }

    refused, reasons = [], Counter()
    kept = kept_tokens = trained = 0
    with DatasetWriter(BLOCKS, stage=STAGE, params=used, root=root) as writer:
        rows = []
        for doc in tqdm(forget.itertuples(index=False), total=len(forget), desc="blocks", unit="doc"):
            encoded = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
            spans = matcher.find(doc.text)
            for index, (start, end) in enumerate(block_ranges(len(ids), settings.block_size)):
                block_id = f"{doc.doc_id}@{index}"
                if settings.max_blocks is not None and kept >= settings.max_blocks:
                    break
                if end - start < settings.min_block_tokens:
                    refused.append({"source": doc.doc_id, "location": block_id, "record": str(end - start),
                                    "reason": f"{end - start} tokens < blocks.min_block_tokens ({settings.min_block_tokens})"})
                    continue
                row = build_block(
                    block_id=block_id, doc_id=doc.doc_id, index=index, text=doc.text, token_start=start,
                    ids=ids[start:end], offsets=offsets[start:end], spans=spans, translations=translations,
                    worlds=worlds, seed=settings.seed, tokenizer=tokenizer,
                )
                reasons.update(r for r in row["drop_reasons"] if r)
                kept, kept_tokens, trained = kept + 1, kept_tokens + len(row["input_ids"]), trained + sum(row["loss_mask"])
                rows.append(row)
                if len(rows) == _PART_ROWS:
                    writer.write(pd.DataFrame(rows))
                    rows = []
        if rows:
            writer.write(pd.DataFrame(rows))
    write_rejects(refused, BLOCKS, stage=STAGE, params=used, root=root)
    summary = {"blocks": kept, "tokens": kept_tokens, "trained_positions": trained,
               "kept_share": round(trained / kept_tokens, 4) if kept_tokens else 0.0}
    return summary | {f"dropped_{k.replace(' ', '_')}": v for k, v in sorted(reasons.items())}


if __name__ == "__main__":
    run_stage(STAGE, run)
