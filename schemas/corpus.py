"""Contracts of the ``ingest`` stage: ``documents`` and ``passages``.

All character offsets refer to the *normalised* document text stored in ``documents.text``.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract


def _sha256_matches(frame: pd.DataFrame) -> pd.Series:
    return frame["text"].map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest()) == frame["sha256"]


class DocumentSchema(pa.DataFrameModel):
    doc_id: Series[str] = pa.Field(
        unique=True, description="'<corpus>:<relative path>[:<jsonl line>]', or '<corpus>:<path>:<nn>-<title>' for "
        "the nn-th work of a file split by its table of contents")
    corpus: Series[str] = pa.Field(isin=["forget", "retain"])
    source: Series[str] = pa.Field(description="path of the file, as listed in params")
    record: Series[int] = pa.Field(ge=0, description="JSONL line number (1-based); 0 for whole files")
    title: Series[str] = pa.Field(description="the work's title from its file's table of contents; '' when the file "
                                  "is one document")
    text: Series[str] = pa.Field(str_length={"min_value": 1}, description="normalised text")
    n_chars: Series[int] = pa.Field(ge=1)
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="sha256 is not the hash of text")
    def sha256_of_text(cls, frame: pd.DataFrame) -> pd.Series:
        return _sha256_matches(frame)

    @pa.dataframe_check(error="n_chars is not len(text)")
    def n_chars_is_length(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["text"].str.len() == frame["n_chars"]


class PassageSchema(pa.DataFrameModel):
    passage_id: Series[str] = pa.Field(unique=True, description="'<doc_id>#<index>'")
    doc_id: Series[str]
    corpus: Series[str] = pa.Field(isin=["forget", "retain"])
    index: Series[int] = pa.Field(ge=0, description="position of the passage in its document")
    char_start: Series[int] = pa.Field(ge=0, description="offset into documents.text, inclusive")
    char_end: Series[int] = pa.Field(ge=1, description="offset into documents.text, exclusive")
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="char_end - char_start is not len(text)")
    def span_is_text(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["char_end"] - frame["char_start"] == frame["text"].str.len()

    @pa.dataframe_check(error="sha256 is not the hash of text")
    def sha256_of_text(cls, frame: pd.DataFrame) -> pd.Series:
        return _sha256_matches(frame)


DOCUMENTS = Contract("documents", DocumentSchema, 2, "one row per corpus document, normalised text")
PASSAGES = Contract("passages", PassageSchema, 1, "paragraph-level passages with offsets into documents")
