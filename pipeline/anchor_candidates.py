"""Stage ``anchor_candidates``: expressions idiosyncratic to the forget corpus, with evidence.

Reads ``passages``; mines the forget passages against the retain (reference) passages with
:func:`pipeline.core.anchor_selection.mine_anchors` (signals, hygiene, nesting, kinds: see
docs/anchors.md); writes ``anchor_candidates`` (rank order) and ``anchor_candidates_rejects``
(every refused key with its reason). spaCy's named-entity recogniser is loaded here.

Run: ``python -m pipeline.anchor_candidates`` (``dvc repro anchor_candidates``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.core.anchor_selection import mine_anchors, reject_row
from pipeline.errors import CorpusError
from pipeline.ner import run_ner
from pipeline.params import Params, section_dict
from pipeline.stage import run_stage
from pipeline.store import read_dataset, write_dataset, write_rejects
from schemas.anchors import ANCHOR_CANDIDATES

STAGE = "anchor_candidates"
PARAMS = ("anchors",)


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.anchors
    passages = read_dataset("passages", root)
    forget = passages[passages["corpus"] == "forget"]
    reference = passages[passages["corpus"] == "retain"]
    if reference.empty:
        raise CorpusError("anchor_candidates: no retain passages; list a reference corpus under corpus.retain")
    mined = mine_anchors(forget, reference, settings, recognise=lambda texts: run_ner(texts, settings))

    frame = pd.DataFrame(mined.rows, columns=list(ANCHOR_CANDIDATES.model.to_schema().columns))
    used = section_dict(params, *PARAMS)
    write_dataset(frame, ANCHOR_CANDIDATES, stage=STAGE, params=used, root=root)
    rejects = [reject_row(e, reason) for e, reason in mined.refused]
    write_rejects(rejects, ANCHOR_CANDIDATES, stage=STAGE, params=used, root=root)
    kinds = Counter(frame["kind"])
    return {"candidates": len(frame), "rejected": len(rejects), **{f"kind_{k}": v for k, v in sorted(kinds.items())}}


if __name__ == "__main__":
    run_stage(STAGE, run)
