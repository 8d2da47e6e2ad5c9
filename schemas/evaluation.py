"""Contracts of the ``evaluate`` stage's datasets, one of each per model.

* ``evaluation_completions_<model>``: one row per completion probe, the model's greedy
  continuation and its automatic familiarity grade (0-3,
  :func:`pipeline.core.grading.grade_completion`), the input of the ``evaluation`` review
  project where reviewers check the grades.
* ``evaluation_scores_<model>``: one row per unit measured (probe, verbatim window, retain
  window) with its scores, what the headline numbers and their intervals are computed from
  (:mod:`pipeline.core.headlines`); the report pairs two models' rows by ``unit_id``.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_strings

MODELS = ("baseline", "reinforced", "unlearned")
"""The models the default pipeline evaluates (folders ``models/<name>``)."""
TIERS = ("known", "detail")
"""Familiarity probe tiers: famous facts of the corpus (what a general model has likely seen),
and details that need the story itself (``corpora/probes/README.md``)."""
MEASURES = ("familiarity", "general", "near", "general_heldout", "near_heldout", "completion", "verbatim_trained",
            "verbatim_untrained", "retain")
"""What a row of ``evaluation_scores_<model>`` measures (the probe set or kind of window);
``*_heldout``: the held-out retention probes (``evaluate.probes.heldout``), never used to choose
a parameter."""
RETENTION_MEASURES = ("general", "near", "general_heldout", "near_heldout")
"""The measures of retention probes: knowledge outside the forget corpus that must not move."""


class CompletionSchema(pa.DataFrameModel):
    model: Series[str] = pa.Field(str_length={"min_value": 1}, description="which model: models/<model>")
    probe_id: Series[str] = pa.Field(unique=True)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    completion: Series[str] = pa.Field(description="greedy continuation, new text only")
    grade: Series[int] = pa.Field(isin=[0, 1, 2, 3], description="3 canon detail, 2 genre, 1 lucky guess?, 0 none")
    matched_terms: Series[object] = pa.Field(description="the terms that decided the grade")

    class Config:
        strict = True
        coerce = True

    @pa.check("matched_terms", name="list_of_strings")
    def matched_are_strings(cls, series: pd.Series) -> pd.Series:
        return lists_of_strings(series)

    @pa.dataframe_check(error="grade 0 has no matched terms; grades 1-3 have at least one")
    def grade_has_reason(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["grade"] == 0) == (frame["matched_terms"].map(len) == 0)

    @pa.dataframe_check(error="one model per completions dataset")
    def one_model(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["model"] == (frame["model"].iloc[0] if len(frame) else "")


class ScoreSchema(pa.DataFrameModel):
    model: Series[str] = pa.Field(str_length={"min_value": 1}, description="which model: models/<model>")
    measure: Series[str] = pa.Field(isin=list(MEASURES), description="probe set or kind of window")
    unit_id: Series[str] = pa.Field(str_length={"min_value": 1}, description="probe id or '<doc_id>:<char offset>'")
    story: Series[str] = pa.Field(description="familiarity probes: the story tag; '' otherwise")
    tier: Series[str] = pa.Field(isin=["", *TIERS], description="familiarity probes: the probe's tier ('' untiered); "
                                 "'' otherwise")
    answer_terms: Series[str] = pa.Field(
        description="probes: the forget-dictionary terms the answer says or completes, '; '-joined ('' none, and "
                    "for every other unit)")
    trained: Series[bool] = pa.Field(description="the unit's story document holds, or its text lies in, the fine-tune's blocks")
    output: Series[str] = pa.Field(description="the model's greedy answer or continuation ('' for retain windows)")
    top1: Series[float] = pa.Field(nullable=True, isin=[0.0, 1.0])
    first_prob: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    first_logprob: Series[float] = pa.Field(nullable=True, le=0, description="natural log of first_prob")
    answer_prob: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    rank: Series[float] = pa.Field(nullable=True, ge=1)
    rouge_l: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    score: Series[float] = pa.Field(nullable=True, isin=[0.0, 1.0, 5.0], description="completion: 5 grade 3, 1 grade 2")
    nll: Series[float] = pa.Field(nullable=True, ge=0, description="summed negative log-likelihood (nats)")
    tokens: Series[float] = pa.Field(nullable=True, ge=1, description="tokens scored in nll")
    min_k: Series[float] = pa.Field(nullable=True, le=0, description="Min-K% Prob (mean lowest log-probs)")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="one row per (measure, unit_id)")
    def unique_units(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame.duplicated(["measure", "unit_id"], keep=False)

    @pa.dataframe_check(error="one model per scores dataset")
    def one_model(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["model"] == (frame["model"].iloc[0] if len(frame) else "")


def completions_contract(model: str) -> Contract:
    """The contract of ``evaluation_completions_<model>``."""
    return Contract(f"evaluation_completions_{model}", CompletionSchema, 1,
                    f"graded greedy completions of models/{model}")


def scores_contract(model: str) -> Contract:
    """The contract of ``evaluation_scores_<model>``."""
    return Contract(f"evaluation_scores_{model}", ScoreSchema, 4, f"per-unit evaluation scores of models/{model}")


COMPLETIONS = {name: completions_contract(name) for name in MODELS}
