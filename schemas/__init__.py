"""Data contracts (pandera) for every dataset the pipeline writes.

Each dataset has one :class:`Contract`: its name, the pandera model that validates it, and a
schema version that is bumped whenever a column's meaning changes (recorded in manifests).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.pandas as pa


@dataclass(frozen=True)
class Contract:
    """A dataset's name, pandera model and schema version."""

    name: str
    model: type[pa.DataFrameModel]
    version: int
    description: str

    @property
    def rejects_name(self) -> str:
        return f"{self.name}_rejects"


def contracts() -> dict[str, Contract]:
    """Every contract, by dataset name (rejects tables share one contract)."""
    from schemas.anchors import ANCHOR_CANDIDATES, ANCHOR_TRANSLATIONS, DICTIONARY
    from schemas.blocks import BLOCKS
    from schemas.dataset import TRAINING
    from schemas.labels import GENERIC_LABELS
    from schemas.corpus import DOCUMENTS, PASSAGES
    from schemas.rejects import rejects_contract
    from schemas.evaluation import COMPLETIONS
    from schemas.retain import RETAIN_BLOCKS

    found = {c.name: c for c in (DOCUMENTS, PASSAGES, ANCHOR_CANDIDATES, ANCHOR_TRANSLATIONS, DICTIONARY, BLOCKS, GENERIC_LABELS, TRAINING, RETAIN_BLOCKS, *COMPLETIONS.values())}
    for contract in list(found.values()):
        found[contract.rejects_name] = rejects_contract(contract)
    return found
