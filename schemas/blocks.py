"""Contracts of the ``blocks`` stage: ``block_candidates``, every forget-corpus block with the
anchors it holds and whether it was chosen for training, and ``blocks``, the chosen ones with
their generic translation and the alignment of every original position to it
(docs/algorithm.md steps 1, 4, 5)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_ints, lists_of_strings


class ForgetBlockSchema(pa.DataFrameModel):
    """Where a forget-corpus block is and what it holds: the columns both contracts share."""

    block_id: Series[str] = pa.Field(unique=True, description="'<doc_id>@<index>'")
    doc_id: Series[str]
    index: Series[int] = pa.Field(ge=0, description="block number within its document")
    token_start: Series[int] = pa.Field(ge=0, description="first token, in the document's tokenization")
    char_start: Series[int] = pa.Field(ge=0, description="offset into documents.text")
    char_end: Series[int] = pa.Field(ge=0)
    input_ids: Series[object] = pa.Field(description="original token ids [n] (n <= blocks.block_size)")

    class Config:
        strict = True
        coerce = True


class BlockSchema(ForgetBlockSchema):
    world: Series[int] = pa.Field(ge=0, description="translation index used for every anchor of the block")
    translated_text: Series[str]
    translated_ids: Series[object] = pa.Field(description="token ids of translated_text [m]")
    alignment: Series[object] = pa.Field(description="j(i) per original position, -1 when dropped [n]")
    loss_mask: Series[object] = pa.Field(description="1 where the position is trained on [n]")
    drop_reasons: Series[object] = pa.Field(description="reason per position, '' when kept [n]")
    anchors: Series[object] = pa.Field(description="anchors replaced in the block, in order")
    used_positions: Series[object] = pa.Field(description="translated positions from which a translation counts as used")
    used_token_ids: Series[object] = pa.Field(description="first token id of each used translation (rule 2)")

    @pa.check("input_ids", "translated_ids", "alignment", "loss_mask", "used_positions", "used_token_ids", name="int_lists")
    def int_lists(cls, series: pd.Series) -> pd.Series:
        return lists_of_ints(series)

    @pa.dataframe_check(error="alignment, loss_mask and drop_reasons must have one entry per input id")
    def per_position(cls, frame: pd.DataFrame) -> pd.Series:
        n = frame["input_ids"].map(len)
        return (frame["alignment"].map(len) == n) & (frame["loss_mask"].map(len) == n) & (frame["drop_reasons"].map(len) == n)


BLOCKS = Contract("blocks", BlockSchema, 1, "token blocks of the forget corpus with translation and alignment")


class BlockCandidateSchema(ForgetBlockSchema):
    anchors: Series[object] = pa.Field(description="distinct dictionary anchors wholly inside the block, sorted")
    anchor_counts: Series[object] = pa.Field(description="occurrences of each of `anchors` in the block")
    selected: Series[bool] = pa.Field(description="chosen for training: the block is in `blocks`")
    rank: Series[int] = pa.Field(ge=0, description="1 for the first block chosen, 2 for the next...; 0 = not chosen")
    gain: Series[float] = pa.Field(nullable=True, description="coverage gain when chosen (null: not chosen)")

    @pa.check("input_ids", "anchor_counts", name="int_lists")
    def int_lists(cls, series: pd.Series) -> pd.Series:
        return lists_of_ints(series)

    @pa.check("anchors", name="string_lists")
    def string_lists(cls, series: pd.Series) -> pd.Series:
        return lists_of_strings(series, non_empty_items=True)

    @pa.dataframe_check(error="anchor_counts must have one positive count per anchor")
    def counts_per_anchor(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["anchors"].map(len) == frame["anchor_counts"].map(len)) & frame["anchor_counts"].map(
            lambda counts: all(c > 0 for c in counts))

    @pa.dataframe_check(error="a block is selected exactly when it has a rank")
    def rank_iff_selected(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["selected"] == (frame["rank"] > 0)


BLOCK_CANDIDATES = Contract(
    "block_candidates", BlockCandidateSchema, 1,
    "every forget-corpus block, its anchors, and whether (and in which turn) it was chosen for training",
)
