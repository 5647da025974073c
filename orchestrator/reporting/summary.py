"""Tables for the CLI: the best cells of a study and its runs as records. Pure functions on run records."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from orchestrator.run_record import PARAM, metric_key

# A cell is "tied" with the best when a two-sided Welch t-test of its seeds' mean against the best cell's gives
# p >= TIE_ALPHA. Unadjusted, and the best was picked as the extreme of many means, so this errs towards calling
# cells tied: it names the cells the data cannot tell from the best, not a ranking.
TIE_ALPHA = 0.05
TIE_RULE = (f"Welch t-test of each cell's mean against the best's over seeds, two-sided, p >= {TIE_ALPHA:g}, "
            "unadjusted; a cell with one seed (or a best with one) cannot be told")


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(runs)


def best_cells(runs: list[dict[str, Any]], metric: str, goal: str, top: int = 5) -> pd.DataFrame:
    """Mean response per cell (factor levels) over its COMPLETE seeds, best first.

    Columns: the factors (``param.*``), ``mean``, ``std`` (over seeds; NaN with one seed), ``n`` (seeds), and the
    comparison with the best cell (first row) by :data:`TIE_RULE`: ``p_vs_best`` (NaN where it cannot be told) and
    ``vs_best``: "best", "tied" (p >= TIE_ALPHA: not distinguishable from the best), "worse", or "unknown" (one
    seed in the cell or in the best). Computed over every cell before the ``top`` are kept.
    """
    frame = runs_frame(runs)
    column = metric_key(metric)
    if frame.empty or column not in frame:
        return pd.DataFrame()
    done = frame[frame["status"] == "COMPLETE"]
    if done.empty:
        return pd.DataFrame()
    factors = [c for c in frame.columns if c.startswith(PARAM)]
    # Levels may mix types across factors (floats, strings); group on their text to keep pandas from coercing.
    keys = done[factors].astype(str)
    grouped = done.groupby([keys[c] for c in factors], sort=False)[column]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    table = table.sort_values("mean", ascending=(goal == "minimize"), kind="stable").reset_index(drop=True)
    table["p_vs_best"], table["vs_best"] = zip(*(_vs_best(table.iloc[0], row) for _, row in table.iterrows()),
                                              strict=True)
    table.loc[0, ["p_vs_best", "vs_best"]] = [math.nan, "best"]
    return table.head(top)


def tied_with_best(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells of a :func:`best_cells` table that are tied with the best, and those that cannot be told."""
    return table[table["vs_best"] == "tied"], table[table["vs_best"] == "unknown"]


def _vs_best(best: pd.Series, row: pd.Series) -> tuple[float, str]:
    from scipy.stats import ttest_ind_from_stats

    if best["n"] < 2 or row["n"] < 2:
        return math.nan, "unknown"
    if best["std"] == 0 and row["std"] == 0:  # no noise seen: the t statistic is 0/0 or infinite
        p = 1.0 if best["mean"] == row["mean"] else 0.0
    else:
        p = float(ttest_ind_from_stats(best["mean"], best["std"], best["n"], row["mean"], row["std"], row["n"],
                                       equal_var=False).pvalue)
    return p, "tied" if p >= TIE_ALPHA else "worse"
