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
