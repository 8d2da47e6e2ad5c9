"""Reading gold lists of anchor terms (``labels/anchors/gold*.csv``).

A gold list is a CSV file with the columns ``term``, ``kind``, ``tier`` (``core`` or ``valid``);
lines starting with ``#`` before the header say how the list was written. The dictionary stage
scores the default corpus against ``dictionary.gold``, the anchor_check stage each check domain
against its own list (:func:`pipeline.core.anchor_gold.gold_metrics`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.core.anchor_gold import TIERS, GoldTerm
from pipeline.errors import CorpusError


def read_gold(path: Path) -> list[GoldTerm]:
    """The terms of the gold list at ``path``.

    Raises:
        CorpusError: the file is missing, or a line has no term or a tier other than core/valid
            (the message names the file and the line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: gold list not found (dictionary.gold, anchor_check.domains in params.yaml)") from None
    comments = 0
    while comments < len(lines) and lines[comments].startswith("#"):
        comments += 1
    terms = []
    for number, row in enumerate(csv.DictReader(lines[comments:]), start=comments + 2):
        if not row.get("term") or row.get("tier") not in TIERS:
            raise CorpusError(f"{path}: line {number}: needs a term and tier 'core' or 'valid' (got {row})")
        terms.append(GoldTerm(row["term"], row.get("kind") or "", row["tier"]))
    return terms
