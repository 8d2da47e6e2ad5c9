"""Contract of ``generic_labels``: per block and alpha, the generic targets (docs/algorithm.md step 7).

Full-vocabulary logits are never stored: only the argmax target, the top-k ids and
probabilities (softmax of v_generic) and the confidence of every original position.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract


class GenericLabelSchema(pa.DataFrameModel):
    block_id: Series[str]
    alpha: Series[float] = pa.Field(ge=0)
    target: Series[object] = pa.Field(description="argmax of v_generic per position [n]")
    top_ids: Series[object] = pa.Field(description="top-k token ids per position [n][k]")
    top_probs: Series[object] = pa.Field(description="their probabilities [n][k]")
    confidence: Series[object] = pa.Field(description="top probability per position [n]")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="target, top_ids, top_probs and confidence must have one entry per position")
    def per_position(cls, frame: pd.DataFrame) -> pd.Series:
        n = frame["target"].map(len)
        return (frame["top_ids"].map(len) == n) & (frame["top_probs"].map(len) == n) & (frame["confidence"].map(len) == n)

    @pa.dataframe_check(error="one row per (block_id, alpha)")
    def unique_pairs(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame.duplicated(["block_id", "alpha"], keep=False)


GENERIC_LABELS = Contract("generic_labels", GenericLabelSchema, 1, "generic targets per block and alpha (top-k, confidence)")
