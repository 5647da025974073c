"""`wavesweep export`: one row per run, enough to reproduce it, as CSV or JSON.

A row holds the run's identity, its factor levels (``param.*``) and the study's fixed params (``fixed.*``): with its
``seed``, what the experiment was called with. Then its status, metrics (``metric.*``; flags as true/false), timings
and error. Numbers are written whole (JSON as Python's shortest round-trip form, not pandas' 10 digits), and a
value that JSON cannot hold (NaN, infinity) as null: the status column says why a metric is missing.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pandas as pd

from orchestrator.run_record import METRIC, metric_key

# The executor records the run's wall time both as the run's own column and as a metric (for the budget); the
# export keeps the column.
_DUPLICATES = {metric_key("wall_s")}


def export_rows(runs: list[dict[str, Any]], fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an export: each run's record with the fixed params after its levels, times in ISO 8601."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {}
        for key, value in run.items():
            if key in _DUPLICATES:
                continue
            if key.startswith(METRIC) or key == "started_at":
                _add_fixed(row, fixed)
            row[key] = value.isoformat() if isinstance(value, datetime) else value
        _add_fixed(row, fixed)
        rows.append(row)
    return rows


def _add_fixed(row: dict[str, Any], fixed: dict[str, Any]) -> None:
    if fixed and f"fixed.{next(iter(fixed))}" not in row:
        row.update({f"fixed.{name}": value for name, value in fixed.items()})


def to_csv(rows: list[dict[str, Any]]) -> str:
    # A structured value (a fixed dict such as a surface, resolved inputs) as JSON, which a reader can parse back.
    flat = [{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()} for row in rows]
    return pd.DataFrame.from_records(flat).to_csv(index=False)


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows], indent=1, allow_nan=False) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value
