"""Contract of ``dataset``: what the unlearning fine-tune reads (one row per forget block)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract

IGNORE = -100  # the label of a position left out of the loss (PyTorch's cross-entropy default)


class TrainingSchema(pa.DataFrameModel):
    block_id: Series[str] = pa.Field(unique=True)
    doc_id: Series[str]
    char_start: Series[int] = pa.Field(ge=0, description="block span in documents.text")
    char_end: Series[int] = pa.Field(ge=0)
    passage_ids: Series[object] = pa.Field(description="passages the block overlaps (provenance)")
    input_ids: Series[object] = pa.Field(description="original token ids [n]")
    labels: Series[object] = pa.Field(description=f"generic argmax targets, {IGNORE} where dropped [n]")
    loss_mask: Series[object] = pa.Field(description="1 where trained on [n]")
    top_ids: Series[object] = pa.Field(description="top-k generic token ids [n][k] (soft labels)")
    top_probs: Series[object] = pa.Field(description="their probabilities [n][k]")
    confidence: Series[object] = pa.Field(description="top probability per position [n]")
    alpha: Series[float]
    world: Series[int] = pa.Field(ge=0)
    dictionary_sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    corrections_sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$", description="reviewed overlay used")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="input_ids, labels, loss_mask, top_ids, top_probs and confidence must align")
    def per_position(cls, frame: pd.DataFrame) -> pd.Series:
        n = frame["input_ids"].map(len)
        return (
            (frame["labels"].map(len) == n) & (frame["loss_mask"].map(len) == n) & (frame["top_ids"].map(len) == n)
            & (frame["top_probs"].map(len) == n) & (frame["confidence"].map(len) == n)
        )


TRAINING = Contract("dataset", TrainingSchema, 1, "the unlearning fine-tune's dataset: ids, generic targets, provenance")
