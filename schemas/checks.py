"""Element checks shared by several contracts (pandera's dtypes cannot see inside list cells)."""

from __future__ import annotations

import pandas as pd


def lists_of_strings(series: pd.Series, *, non_empty_items: bool = False) -> pd.Series:
    """True where the cell is a list (not a string) of strings, each non-empty if asked."""
    return series.map(
        lambda v: hasattr(v, "__len__") and not isinstance(v, str)
        and all(isinstance(x, str) and (x or not non_empty_items) for x in v)
    )


def lists_of_ints(series: pd.Series) -> pd.Series:
    """True where the cell is a list (not a string) of integers (numpy integers included)."""
    return series.map(
        lambda v: hasattr(v, "__len__") and not isinstance(v, str)
        and all(isinstance(x, int) or hasattr(x, "__index__") for x in v)
    )
