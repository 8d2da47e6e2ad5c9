"""Contract of the ``evaluate`` stage's completions: ``evaluation_completions_<model>``.

One row per completion probe: the model's greedy continuation and its automatic familiarity
grade (0-3, :func:`pipeline.core.metrics.grade_completion`), the input of the ``evaluation``
review project where reviewers check the grades.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from schemas import Contract
from schemas.checks import lists_of_strings

MODELS = ("baseline", "reinforced", "unlearned")
"""The models the default pipeline evaluates (folders ``models/<name>``)."""


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


def completions_contract(model: str) -> Contract:
    """The contract of ``evaluation_completions_<model>``."""
    return Contract(f"evaluation_completions_{model}", CompletionSchema, 1, f"graded greedy completions of models/{model}")


COMPLETIONS = {name: completions_contract(name) for name in MODELS}
