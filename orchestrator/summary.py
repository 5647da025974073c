"""Tables for the CLI: the best cells of a study and its runs as records. Pure functions on run records."""

from __future__ import annotations

from typing import Any

import pandas as pd


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(runs)


def best_cells(runs: list[dict[str, Any]], metric: str, goal: str, top: int = 5) -> pd.DataFrame:
    """Mean response per cell (factor levels) over its COMPLETE seeds, best first.

    Columns: the factors (``param.*``), ``mean``, ``std`` (over seeds; NaN with one seed), ``n`` (seeds).
    """
    frame = runs_frame(runs)
    column = f"metric.{metric}"
    if frame.empty or column not in frame:
        return pd.DataFrame()
    done = frame[frame["status"] == "COMPLETE"]
    if done.empty:
        return pd.DataFrame()
    factors = [c for c in frame.columns if c.startswith("param.")]
    # Levels may mix types across factors (floats, strings); group on their text to keep pandas from coercing.
    keys = done[factors].astype(str)
    grouped = done.groupby([keys[c] for c in factors], sort=False)[column]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    table = table.sort_values("mean", ascending=(goal == "minimize"), kind="stable").head(top)
    return table.reset_index(drop=True)
