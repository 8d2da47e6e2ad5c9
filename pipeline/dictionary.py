"""Stage ``dictionary``: the proposed dictionary with the reviewers' corrections applied.

proposed = ``anchor_candidates`` joined with ``anchor_translations``; the corrections in
``labels/anchors/corrections.jsonl`` (``dictionary.corrections``) are applied as an overlay by
:func:`pipeline.review.corrections.apply_corrections` in their documented order (chronological, ties
by file and line). With no corrections the dictionary is the proposed one. Entries a reviewer
rejected go to ``dictionary_rejects``. Also writes ``metrics/anchors.json`` (a DVC metrics
file): anchors by kind, coverage of the forget corpus, and precision/recall against a gold list.

Run: ``python -m pipeline.dictionary`` (``dvc repro dictionary``).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import name_words
from pipeline.stage import run_stage
from pipeline.review.corrections import Correction, apply_corrections, load_corrections
from pipeline.errors import CorpusError
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


def read_gold(path: Path) -> list[dict]:
    """Gold terms (CSV: term, kind, tier); ``core`` terms count for recall, all for precision."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CorpusError(f"{path}: gold list not found (dictionary.gold in params.yaml)") from None
    for number, row in enumerate(rows, start=2):
        if not row.get("term") or row.get("tier") not in {"core", "valid"}:
            raise CorpusError(f"{path}: line {number}: needs a term and tier 'core' or 'valid' (got {row})")
    return rows


def gold_covered(term: str, matcher: AnchorMatcher) -> bool:
    """A gold term is recalled when every name word of it falls inside a dictionary match, i.e.
    the blocks stage would translate all of it (``Mrs. Hudson`` is covered by ``Hudson``)."""
    spans = matcher.find(term)
    position, covered = 0, True
    for word in name_words(term):
        start = term.index(word, position)
        position = start + len(word)
        covered &= any(s.start <= start and position <= s.end for s in spans)
    return covered and bool(name_words(term))


def _phrase_in(shorter: str, longer: str) -> bool:
    return f" {shorter.lower()} " in f" {longer.lower()} "


def gold_metrics(dictionary: pd.DataFrame, gold: list[dict], precision_at: int) -> dict:
    """Recall over the core gold terms; precision of the top ``precision_at`` anchors by rank
    (an anchor is right when it is a gold term, or a phrase of one, or contains one)."""
    matcher = AnchorMatcher(dictionary["anchor"])
    core = [g["term"] for g in gold if g["tier"] == "core"]
    missed = [t for t in core if not gold_covered(t, matcher)]
    terms = [g["term"] for g in gold]
    top = dictionary.sort_values("rank", kind="stable").head(precision_at)["anchor"].tolist()
    wrong = [a for a in top if not any(_phrase_in(a, t) or _phrase_in(t, a) for t in terms)]
    return {
        "core_terms": len(core), "recall": round(1 - len(missed) / len(core), 4) if core else None,
        "missed": missed, f"precision_at_{precision_at}": round(1 - len(wrong) / len(top), 4) if top else None,
        "false_positives": wrong,
    }


def _translate_new(params: Params, proposed: pd.DataFrame, candidates: pd.DataFrame, documents: pd.DataFrame, root: Path):
    """The ``propose`` callback for added or renamed keys, consistent with the proposal: the
    offline proposer is given every anchor so shared name words keep their substitutes."""
    settings = params.translations
    proposer = make_proposer(settings, root=root)

    def propose(wanted: list[tuple[str, str]]) -> dict[str, tuple[list[str], str]]:
        new = [AnchorRequest(anchor, kind) for anchor, kind in wanted]
        names = dict(zip(candidates["anchor"], candidates["part_of"]))
        existing = [
            AnchorRequest(row.anchor, row.kind, tuple(row.variants) + tuple(names.get(row.anchor, [])))
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
    if settings.gold:
        metrics["gold"] = gold_metrics(dictionary, read_gold(root / settings.gold), settings.precision_at)
    atomic_write_text(root / METRICS, json.dumps(metrics, indent=2) + "\n")
    summary = {k: metrics[k] for k in ("anchors", "coverage", "rejected_by_review")}
    if "gold" in metrics:
        summary |= {"recall": metrics["gold"]["recall"], "precision": metrics["gold"][f"precision_at_{settings.precision_at}"]}
    return summary


if __name__ == "__main__":
    run_stage(STAGE, run)
