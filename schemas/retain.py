"""Contract of the ``retain_blocks`` stage: retain-corpus token blocks, each in one split.

``train`` blocks feed the fine-tune's optional retain regularisation; ``heldout`` blocks are
never trained on and measure retention (perplexity) and leakage (the non-members of Min-K%).
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_ints

SPLITS = ["train", "heldout"]


class RetainBlockSchema(pa.DataFrameModel):
    block_id: Series[str] = pa.Field(unique=True, description="'<doc_id>@<index>'")
    doc_id: Series[str]
    index: Series[int] = pa.Field(ge=0, description="block number within its document")
    token_start: Series[int] = pa.Field(ge=0, description="first token, in the document's tokenization")
    char_start: Series[int] = pa.Field(ge=0, description="offset into documents.text")
    char_end: Series[int] = pa.Field(ge=0, description="end offset (exclusive) into documents.text")
    input_ids: Series[object] = pa.Field(description="token ids [n] (min_block_tokens <= n <= block_size)")
    split: Series[str] = pa.Field(isin=SPLITS)

    class Config:
        strict = True
        coerce = True

    @pa.check("input_ids", name="int_lists")
    def int_lists(cls, series: pd.Series) -> pd.Series:
        return lists_of_ints(series) & (series.map(len) > 0)

    @pa.dataframe_check(error="block_id must be '<doc_id>@<index>'")
    def id_names_block(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["block_id"] == frame["doc_id"] + "@" + frame["index"].astype(str)

    @pa.dataframe_check(error="char_end must exceed char_start")
    def chars_ordered(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["char_end"] > frame["char_start"]


RETAIN_BLOCKS = Contract("retain_blocks", RetainBlockSchema, 1, "retain-corpus token blocks split into train and held-out")
