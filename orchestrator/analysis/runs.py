"""Which runs an analysis uses: the failed-runs rule, in one place for the fit and the cell means.

- No ``status`` column: every row is a finished run.
- COMPLETE runs are used.
- DIVERGED runs are excluded and counted: the fit then describes the region where training did not diverge. With
  ``diverged_value`` they are used instead, with that value as their response (a penalty, e.g. the loss at init).
- Every other status (FAILED, TIMEOUT, OOM, PRUNED, PENDING, RUNNING) has no result of the configuration: excluded
  and counted per status. A PRUNED run's predicted final (``RunRecord.estimate``) is for the search's model, never
  for a fit whose intervals would then rest on a prediction.
- A used run whose response is missing or not finite is excluded and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

STATUS = "status"


@dataclass(frozen=True)
class RunSelection:
    """The runs to analyse (response as float) and what was left out, with notes that say so in words."""

    runs: pd.DataFrame
    n_runs: int
    n_diverged: int
    n_imputed: int
    excluded: dict[str, int]  # status -> runs left out for it (DIVERGED included unless imputed)
    n_missing_response: int
    notes: tuple[str, ...]

    def used(self, n_used: int) -> dict[str, Any]:
        """The fields of :class:`~orchestrator.analysis.results.RunsUsed` for a result that used ``n_used`` rows."""
        return {"n_runs": self.n_runs, "n_used": n_used, "n_diverged": self.n_diverged, "n_imputed": self.n_imputed,
                "excluded": dict(self.excluded), "n_missing_response": self.n_missing_response}


def select_runs(df: pd.DataFrame, response: str, *, diverged_value: float | None = None) -> RunSelection:
    if response not in df.columns:
        raise ValueError(f"response {response!r} is not a column; columns: {list(df.columns)}")
    if STATUS in df.columns:
        # RunStatus is a str Enum: take its value, so enums and plain strings compare the same.
        status = df[STATUS].map(lambda s: getattr(s, "value", s)).astype(str).str.upper()
    else:
        status = pd.Series("COMPLETE", index=df.index)
    response_values = pd.to_numeric(df[response], errors="coerce").astype(float)

    diverged = status == "DIVERGED"
    use = status == "COMPLETE"
    if diverged_value is not None:
        response_values = response_values.where(~diverged, float(diverged_value))
        use |= diverged
    missing = use & ~np.isfinite(response_values)
    left_out = status[~use].value_counts().sort_index()
    use &= ~missing

    excluded_counts = {str(k): int(v) for k, v in left_out.items()}
    runs = df.loc[use].copy()
    runs[response] = response_values[use]
    n_diverged = int(diverged.sum())
    n_imputed = n_diverged if diverged_value is not None else 0

    notes = []
    if n_diverged and diverged_value is None:
        notes.append(f"{n_diverged} DIVERGED run(s) excluded: the fit describes the region where training did not "
                     "diverge (pass diverged_value= to count them with a penalty response instead)")
    if n_imputed:
        notes.append(f"{n_imputed} DIVERGED run(s) used with the imputed response {diverged_value:g}")
    if pruned := excluded_counts.get("PRUNED"):
        notes.append(f"{pruned} PRUNED run(s) excluded: stopped early from their learning curves, they have no final "
                     "result (their predicted finals inform the search, not this fit; a pruned designed cell, "
                     "under strategy.prune: all, leaves its design incomplete)")
    others = {k: v for k, v in excluded_counts.items() if k not in ("DIVERGED", "PRUNED")}
    if others:
        listed = ", ".join(f"{v} {k}" for k, v in others.items())
        notes.append(f"runs without a result excluded: {listed}")
    if missing.any():
        notes.append(f"{int(missing.sum())} run(s) with a missing or non-finite response excluded")
    return RunSelection(runs, len(df), n_diverged, n_imputed, excluded_counts, int(missing.sum()), tuple(notes))
