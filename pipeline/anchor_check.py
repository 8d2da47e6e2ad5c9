"""Stage ``anchor_check``: the anchor miner on other forget domains, scored against their gold lists.

For each domain of ``anchor_check.domains``, the documents it names are the forget corpus and
every other document of the corpus (the default forget corpus included) is the reference; the
same code and ``anchors`` params as ``anchor_candidates`` mine it
(:func:`pipeline.core.anchor_selection.mine_anchors`), and the proposed anchors (no review) are
scored against the domain's gold lists. Writes ``metrics/anchor_check.json`` (a DVC metrics
file): per domain and gold list, recall over the core terms and precision of the first
``anchor_check.precision_at`` anchors, with the misses and the false positives.

Run: ``python -m pipeline.anchor_check`` (``dvc repro anchor_check``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.core.anchor_gold import gold_metrics
from pipeline.core.anchor_selection import mine_anchors
from pipeline.errors import CorpusError
from pipeline.gold import read_gold
from pipeline.ner import run_ner
from pipeline.params import AnchorDomain, Params
from pipeline.stage import run_stage
from pipeline.store import atomic_write_text, read_dataset

STAGE = "anchor_check"
PARAMS = ("anchors", "anchor_check")
METRICS = Path("metrics/anchor_check.json")


def domain_documents(documents: pd.DataFrame, domain: AnchorDomain) -> set[str]:
    """``doc_id`` of the documents whose source is one of the domain's files or lies in its folders."""
    paths = [Path(p).as_posix().rstrip("/") for p in domain.forget]
    chosen = {
        doc_id for doc_id, source in zip(documents["doc_id"], documents["source"])
        if any(source == p or source.startswith(p + "/") for p in paths)
    }
    if not chosen:
        raise CorpusError(
            f"anchor_check.domains[{domain.name}].forget: no ingested document comes from {', '.join(domain.forget)} "
            "(list it under corpus.forget or corpus.retain)"
        )
    return chosen


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.anchor_check
    passages = read_dataset("passages", root, columns=["passage_id", "doc_id", "text"])
    documents = read_dataset("documents", root, columns=["doc_id", "source"])
    report: dict = {"domains": {}}
    for domain in settings.domains:
        in_domain = passages["doc_id"].isin(domain_documents(documents, domain))
        if in_domain.all():
            raise CorpusError(f"anchor_check.domains[{domain.name}]: no document is left for the reference corpus")
        mined = mine_anchors(
            passages[in_domain], passages[~in_domain], params.anchors,
            recognise=lambda texts: run_ner(texts, params.anchors),
        )
        ranked = [row["anchor"] for row in mined.rows]
        report["domains"][domain.name] = {
            "forget_passages": int(in_domain.sum()),
            "anchors": len(ranked),
            "by_kind": dict(sorted(Counter(row["kind"] for row in mined.rows).items())),
            "top": ranked[:20],
            "gold": {Path(path).stem: gold_metrics(ranked, read_gold(root / path), settings.precision_at)
                     for path in domain.gold},
        }
    atomic_write_text(root / METRICS, json.dumps(report, indent=2) + "\n")
    summary: dict = {"domains": len(report["domains"])}
    for name, result in report["domains"].items():
        for gold, scores in result["gold"].items():
            summary[f"recall_{name}_{gold}"] = scores["recall"]
            summary[f"precision_{name}_{gold}"] = scores[f"precision_at_{settings.precision_at}"]
    return summary


if __name__ == "__main__":
    run_stage(STAGE, run)
