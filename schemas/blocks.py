"""Contract of the ``blocks`` stage: forget-corpus token blocks, their generic translation and
the alignment of every original position to the translation (docs/algorithm.md steps 1, 4, 5)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_ints


class BlockSchema(pa.DataFrameModel):
    block_id: Series[str] = pa.Field(unique=True, description="'<doc_id>@<index>'")
    doc_id: Series[str]
    index: Series[int] = pa.Field(ge=0, description="block number within its document")
    token_start: Series[int] = pa.Field(ge=0, description="first token, in the document's tokenization")
    char_start: Series[int] = pa.Field(ge=0, description="offset into documents.text")
    char_end: Series[int] = pa.Field(ge=0)
    input_ids: Series[object] = pa.Field(description="original token ids [n] (n <= blocks.block_size)")
    world: Series[int] = pa.Field(ge=0, description="translation index used for every anchor of the block")
    translated_text: Series[str]
    translated_ids: Series[object] = pa.Field(description="token ids of translated_text [m]")
    alignment: Series[object] = pa.Field(description="j(i) per original position, -1 when dropped [n]")
    loss_mask: Series[object] = pa.Field(description="1 where the position is trained on [n]")
    drop_reasons: Series[object] = pa.Field(description="reason per position, '' when kept [n]")
    anchors: Series[object] = pa.Field(description="anchors replaced in the block, in order")
    used_positions: Series[object] = pa.Field(description="translated positions from which a translation counts as used")
    used_token_ids: Series[object] = pa.Field(description="first token id of each used translation (rule 2)")

    class Config:
        strict = True
        coerce = True

    @pa.check("input_ids", "translated_ids", "alignment", "loss_mask", "used_positions", "used_token_ids", name="int_lists")
    def int_lists(cls, series: pd.Series) -> pd.Series:
        return lists_of_ints(series)

    @pa.dataframe_check(error="alignment, loss_mask and drop_reasons must have one entry per input id")
    def per_position(cls, frame: pd.DataFrame) -> pd.Series:
        n = frame["input_ids"].map(len)
        return (frame["alignment"].map(len) == n) & (frame["loss_mask"].map(len) == n) & (frame["drop_reasons"].map(len) == n)


BLOCKS = Contract("blocks", BlockSchema, 1, "token blocks of the forget corpus with translation and alignment")
