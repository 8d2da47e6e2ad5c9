"""Stage ``anchor_translations``: anchor candidates -> index-aligned generic translations.

Reads ``anchor_candidates`` and ``documents``; every capitalised word of every document (forget
and retain) and every word of every anchor is forbidden as a substitute, so no translation names
a character or place of the corpora. Writes ``anchor_translations`` (one row per candidate, in
rank order) and ``anchor_translations_rejects``: candidates with no word to translate, and every
proposer reply that was refused (those anchors take the offline proposer's translations).

Run: ``python -m pipeline.anchor_translations`` (``dvc repro anchor_translations``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.stage import run_stage
from pipeline.params import Params, section_dict
from pipeline.store import read_dataset, write_dataset, write_rejects
from pipeline.core.translation import AnchorRequest, collect_proposals, forbidden_vocabulary, word_keys
from pipeline.proposers import make_proposer
from schemas.anchors import ANCHOR_TRANSLATIONS

STAGE = "anchor_translations"
PARAMS = ("translations",)


def run(params: Params, *, root: Path = Path(".")) -> dict[str, int | str]:
    """Translate every anchor candidate; returns counts for the log."""
    settings = params.translations
    used = section_dict(params, *PARAMS)
    candidates = read_dataset(
        "anchor_candidates", root, columns=["anchor", "kind", "variants", "part_of", "gender", "rank"]
    )
    candidates = candidates.sort_values("rank", kind="stable")
    documents = read_dataset("documents", root, columns=["text"])

    requests, refused = [], []
    for row in candidates.itertuples(index=False):
        if not word_keys(row.anchor):
            refused.append({"source": "anchor_candidates", "location": row.anchor,
                            "reason": "no word to translate", "record": row.anchor})
            continue
        # The names an anchor is part of are evidence for its role, like its variants.
        requests.append(AnchorRequest(row.anchor, row.kind, tuple(row.variants) + tuple(row.part_of), row.gender))

    forbidden = forbidden_vocabulary(
        documents["text"], [text for r in requests for text in (r.anchor, *r.variants)]
    )
    proposer = make_proposer(settings, root=root)
    proposals = collect_proposals(
        requests, proposer=proposer, n=settings.per_anchor, seed=settings.seed, forbidden=forbidden
    )
    refused += [
        {"source": proposer.name, "location": p.anchor, "reason": p.refused, "record": p.reply}
        for p in proposals if p.refused
    ]

    kinds = {r.anchor: r.kind for r in requests}
    frame = pd.DataFrame(
        [{"anchor": p.anchor, "kind": kinds[p.anchor], "translations": list(p.translations), "proposer": p.proposer}
         for p in proposals],
        columns=list(ANCHOR_TRANSLATIONS.model.to_schema().columns),
    )
    write_dataset(frame, ANCHOR_TRANSLATIONS, stage=STAGE, params=used, root=root)
    write_rejects(refused, ANCHOR_TRANSLATIONS, stage=STAGE, params=used, root=root)
    return {
        "anchors": len(frame), "per_anchor": settings.per_anchor, "proposer": proposer.name,
        "fallbacks": sum(1 for p in proposals if p.refused), "rejects": len(refused),
        "forbidden_words": len(forbidden),
    }


if __name__ == "__main__":
    run_stage(STAGE, run)
