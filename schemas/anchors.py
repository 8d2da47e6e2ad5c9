"""Contracts of the anchor stages: ``anchor_candidates``, ``anchor_translations``, ``dictionary``.

List columns (``variants``, ``translations``, ...) are Python lists of strings in pandas and
``list<string>`` in Parquet (DuckDB: 1-based lists).

``translations`` are *index-aligned*: translation ``i`` of every anchor belongs to the same
substitute world (``Sherlock Holmes``, ``Holmes`` and ``Sherlock`` all take their ``i``-th
translation from one substitute identity), so a block that picks world ``i`` stays consistent.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_strings

KINDS = ["person", "place", "organisation", "object", "work_title", "other"]
STATUSES = ["proposed", "accepted", "changed", "added"]
GENDERS = ["female", "male", ""]


def _string_lists(series: pd.Series) -> pd.Series:
    return lists_of_strings(series, non_empty_items=True)


def _non_empty(series: pd.Series) -> pd.Series:
    return series.map(len) > 0


class AnchorCandidateSchema(pa.DataFrameModel):
    anchor: Series[str] = pa.Field(unique=True, str_length={"min_value": 1}, description="canonical surface form")
    kind: Series[str] = pa.Field(isin=KINDS)
    variants: Series[object] = pa.Field(description="observed surface forms: case, possessive, with title")
    forget_count: Series[int] = pa.Field(ge=0, description="occurrences in the forget corpus, all variants")
    reference_count: Series[int] = pa.Field(ge=0, description="occurrences in the reference (retain) corpora")
    capitalised_ratio: Series[float] = pa.Field(ge=0, le=1, description="capitalised share of mid-sentence uses")
    score: Series[float] = pa.Field(description="weighted log-odds z-score, forget vs reference")
    rank: Series[int] = pa.Field(ge=1, unique=True)
    example_passages: Series[object] = pa.Field(description="up to anchors.examples passage ids")
    signals: Series[object] = pa.Field(description="what proposed it: log_odds, ner:<LABEL>, heading")
    ner_labels: Series[object] = pa.Field(description="'<LABEL>:<count>' of spaCy entities covering it")
    part_of: Series[object] = pa.Field(
        description="longer names holding it (kept or dropped as made of anchors): 'Sherlock Holmes' for "
        "'Sherlock'; evidence for translation roles"
    )
    gender: Series[str] = pa.Field(
        isin=GENDERS, description="persons: what the pronouns after it say ('female', 'male'), '' when unsure"
    )

    class Config:
        strict = True
        coerce = True

    @pa.check("variants", "example_passages", "signals", "ner_labels", "part_of", name="list_of_strings")
    def lists_of_strings(cls, series: pd.Series) -> pd.Series:
        return lists_of_strings(series)

    @pa.check("variants", "signals", name="non_empty")
    def non_empty(cls, series: pd.Series) -> pd.Series:
        return _non_empty(series)


class AnchorTranslationSchema(pa.DataFrameModel):
    anchor: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    kind: Series[str] = pa.Field(isin=KINDS)
    translations: Series[object] = pa.Field(description="index-aligned generic translations")
    proposer: Series[str] = pa.Field(description="which proposer wrote the translations")

    class Config:
        strict = True
        coerce = True

    @pa.check("translations", name="non_empty_strings")
    def translations_are_strings(cls, series: pd.Series) -> pd.Series:
        return _string_lists(series) & _non_empty(series)


class DictionarySchema(pa.DataFrameModel):
    anchor: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    kind: Series[str] = pa.Field(isin=KINDS)
    translations: Series[object] = pa.Field(description="index-aligned generic translations")
    variants: Series[object]
    rank: Series[int] = pa.Field(ge=1, description="candidate rank; added terms after the last")
    score: Series[float] = pa.Field(nullable=True)
    forget_count: Series[int] = pa.Field(ge=0)
    status: Series[str] = pa.Field(isin=STATUSES)
    proposed_by: Series[object] = pa.Field(description="signals of the candidate, or ['review'] for additions")
    proposer: Series[str] = pa.Field(description="who wrote the translations: a proposer or 'review'")
    review: Series[object] = pa.Field(description="applied corrections: '<created_at> <reviewer> <action> (<source>:<line>)'")

    class Config:
        strict = True
        coerce = True

    @pa.check("translations", name="non_empty_strings")
    def translations_are_strings(cls, series: pd.Series) -> pd.Series:
        return _string_lists(series) & _non_empty(series)

    @pa.check("variants", "proposed_by", "review", name="list_of_strings")
    def lists_of_strings(cls, series: pd.Series) -> pd.Series:
        return lists_of_strings(series)

    @pa.dataframe_check(error="all translations of an anchor must have the same count across the dictionary")
    def aligned(cls, frame: pd.DataFrame) -> pd.Series:
        lengths = frame["translations"].map(len)
        return lengths == (lengths.max() if len(lengths) else 0)


ANCHOR_CANDIDATES = Contract("anchor_candidates", AnchorCandidateSchema, 2, "anchor terms mined from the forget corpus")
ANCHOR_TRANSLATIONS = Contract("anchor_translations", AnchorTranslationSchema, 1, "generic translations per anchor")
DICTIONARY = Contract("dictionary", DictionarySchema, 1, "reviewed anchor dictionary with provenance")
