"""Stage ``dictionary``: the proposed dictionary with the reviewers' corrections applied.

proposed = ``anchor_candidates`` joined with ``anchor_translations``; the corrections in
``labels/anchors/corrections.jsonl`` (``dictionary.corrections``) are applied as an overlay by
:func:`pipeline.review.corrections.apply_corrections` in their documented order (chronological, ties
by file and line). With no corrections the dictionary is the proposed one. Entries a reviewer
rejected go to ``dictionary_rejects``. Also writes ``metrics/anchors.json`` (a DVC metrics
file): anchors by kind, coverage of the forget corpus, and precision/recall against each gold
list of ``dictionary.gold``.

Run: ``python -m pipeline.dictionary`` (``dvc repro dictionary``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_gold import gold_metrics
from pipeline.stage import run_stage
from pipeline.review.corrections import Correction, apply_corrections, load_corrections
from pipeline.gold import read_gold
from pipeline.models import load_tokenizer
from pipeline.paths import BASELINE
from pipeline.params import Params, section_dict
from pipeline.store import atomic_write_text, read_dataset, write_dataset, write_rejects
from pipeline.core.translation import AnchorRequest, forbidden_vocabulary, propose_translations
from pipeline.proposers import make_proposer
from schemas.anchors import DICTIONARY

STAGE = "dictionary"
PARAMS = ("dictionary", "translations")
METRICS = Path("metrics/anchors.json")


def proposed_dictionary(candidates: pd.DataFrame, translations: pd.DataFrame) -> pd.DataFrame:
    """The machine's proposal in the dictionary's columns (status ``proposed``, no review)."""
    merged = candidates.merge(translations[["anchor", "translations", "proposer"]], on="anchor", how="inner")
    merged = merged.sort_values("rank", kind="stable").reset_index(drop=True)
    return pd.DataFrame({
        "anchor": merged["anchor"], "kind": merged["kind"], "translations": merged["translations"],
        "variants": merged["variants"], "rank": merged["rank"], "score": merged["score"],
        "forget_count": merged["forget_count"], "status": "proposed", "proposed_by": merged["signals"],
        "proposer": merged["proposer"], "review": [[] for _ in range(len(merged))],
    })


def count_in(texts: pd.Series, anchors: list[str]) -> dict[str, int]:
    """Occurrences of each anchor (alone, as the matcher sees it) in ``texts``."""
    counts: Counter = Counter()
    for anchor in anchors:
        matcher = AnchorMatcher([anchor])
        counts[anchor] = sum(len(matcher.find(text)) for text in texts)
    return dict(counts)


def token_coverage(texts: list[str], matcher: AnchorMatcher, tokenizer) -> tuple[float, int]:
    """Share of the tokens of ``texts`` that overlap an anchor occurrence, and the token count."""
    inside = total = 0
    for text in texts:
        spans = matcher.find(text)
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        total += len(offsets)
        k = 0
        for start, end in offsets:
            while k < len(spans) and spans[k].end <= start:
                k += 1
            if k < len(spans) and spans[k].start < end and start < spans[k].end:
                inside += 1
    return (inside / total if total else 0.0), total


def _translate_new(params: Params, proposed: pd.DataFrame, candidates: pd.DataFrame, documents: pd.DataFrame, root: Path):
    """The ``propose`` callback for added or renamed keys, consistent with the proposal: the
    offline proposer is given every anchor so shared name words keep their substitutes."""
    settings = params.translations
    proposer = make_proposer(settings, root=root)

    def propose(wanted: list[tuple[str, str]]) -> dict[str, tuple[list[str], str]]:
        new = [AnchorRequest(anchor, kind) for anchor, kind in wanted]
        names = dict(zip(candidates["anchor"], candidates["part_of"]))
        genders = dict(zip(candidates["anchor"], candidates["gender"]))
        existing = [
            AnchorRequest(
                row.anchor, row.kind, tuple(row.variants) + tuple(names.get(row.anchor, [])), genders.get(row.anchor, "")
            )
            for row in proposed.itertuples(index=False) if row.anchor not in {a for a, _ in wanted}
        ]
        requests = existing + new if proposer.name == "offline" else new
        forbidden = forbidden_vocabulary(documents["text"], [r.anchor for r in requests])
        results = propose_translations(
            requests, proposer=proposer, n=settings.per_anchor, seed=settings.seed, forbidden=forbidden
        )
        wanted_keys = {a for a, _ in wanted}
        return {anchor: (list(texts), name) for anchor, texts, name in results if anchor in wanted_keys}

    return propose


def _changed_keys(corrections: list[Correction]) -> list[str]:
    return sorted({c.new_anchor or c.anchor for c in corrections if c.action in {"add", "change_span"}})


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.dictionary
    candidates = read_dataset("anchor_candidates", root)
    translations = read_dataset("anchor_translations", root)
    documents = read_dataset("documents", root)
    forget = documents[documents["corpus"] == "forget"]
    proposed = proposed_dictionary(candidates, translations)

    corrections = load_corrections(root / settings.corrections)
    dictionary, rejects = apply_corrections(
        proposed, corrections, propose=_translate_new(params, proposed, candidates, documents, root),
        forget_counts=count_in(forget["text"], _changed_keys(corrections)),
        per_anchor=params.translations.per_anchor,
    )
    used = section_dict(params, *PARAMS)
    write_dataset(dictionary, DICTIONARY, stage=STAGE, params=used, root=root)
    write_rejects(rejects, DICTIONARY, stage=STAGE, params=used, root=root)

    matcher = AnchorMatcher(dictionary["anchor"])
    coverage, tokens = token_coverage(forget["text"].tolist(), matcher, load_tokenizer(root / BASELINE))
    metrics = {
        "anchors": len(dictionary),
        "by_kind": dict(sorted(Counter(dictionary["kind"]).items())),
        "by_status": dict(sorted(Counter(dictionary["status"]).items())),
        "corrections_applied": len(corrections),
        "rejected_by_review": len(rejects),
        "coverage": round(coverage, 6),
        "forget_tokens": tokens,
    }
    ranked = dictionary.sort_values("rank", kind="stable")["anchor"].tolist()
    if settings.gold:
        metrics["gold"] = {
            Path(path).stem: gold_metrics(ranked, read_gold(root / path), settings.precision_at) for path in settings.gold
        }
    atomic_write_text(root / METRICS, json.dumps(metrics, indent=2) + "\n")
    summary = {k: metrics[k] for k in ("anchors", "coverage", "rejected_by_review")}
    for name, scores in metrics.get("gold", {}).items():
        summary |= {f"recall_{name}": scores["recall"], f"precision_{name}": scores[f"precision_at_{settings.precision_at}"]}
    return summary


if __name__ == "__main__":
    run_stage(STAGE, run)
