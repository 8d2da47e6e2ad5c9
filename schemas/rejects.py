"""Contract of ``<dataset>_rejects``: what a stage considered and refused, with the reason."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract


class RejectSchema(pa.DataFrameModel):
    """One refused record. Nothing a stage refuses is dropped silently."""

    source: Series[str] = pa.Field(description="file (or dataset) the record came from")
    location: Series[str] = pa.Field(description="where in the source: 'line 12', 'byte 4096', an id")
    reason: Series[str] = pa.Field(str_length={"min_value": 1}, description="why it was refused")
    record: Series[str] = pa.Field(description="the refused content (truncated to 500 chars)")

    class Config:
        strict = True
        coerce = True


REJECTS_VERSION = 1


def rejects_contract(parent: Contract) -> Contract:
    return Contract(
        name=parent.rejects_name,
        model=RejectSchema,
        version=REJECTS_VERSION,
        description=f"records refused while building {parent.name}, with the reason",
    )
