"""How long a run will take, predicted before it starts, so the scheduler can start the longest runs first.

A wave ends when its slowest run does; starting the long runs first and filling the tail with short ones (longest
processing time first, Graham 1969) keeps the devices busy to the end. The prediction only has to rank runs:

- after runs have finished: a least-squares fit of log(wall time) on the factors (numeric factors as coded
  linear terms, in log space for log factors; categorical ones as indicators), ridge-damped so that a handful of
  runs cannot produce wild extrapolations;
- before that: the memory estimate of the run's ``model`` param (``sizing.memory_gb``), since time grows with
  model size at least as fast as memory does;
- otherwise every run is alike and the plan's order stands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator import scales
from orchestrator.run_record import records
from orchestrator.sizing import memory_gb

if TYPE_CHECKING:
    from orchestrator.spec import Factor, Spec

RIDGE = 1e-2  # relative to the number of runs: damps the coefficients of factors the runs barely vary


class CostModel:
    """Predicted seconds (or a relative figure, before any run finished) for a run's params."""

    def __init__(self, spec: Spec, runs: Iterable[Mapping[str, Any]] = ()):
        self.spec = spec
        self.source = "plan order"
        # Each factor's coding, once per model: a fit codes every finished run, and Factor.kind rescans the levels
        # each time it is asked (the driver refits as runs finish).
        self._coding = [(name, *_coding(factor)) for name, factor in spec.factors.items()]
        self._coef: np.ndarray | None = None
        done = [r for r in records(runs) if r.status == "COMPLETE" and _positive(r.get("wall_s"))]
        if len(done) >= len(self._features({n: f.levels[0] for n, f in spec.factors.items()})) + 2:
            x = np.array([self._features(r.levels) for r in done])
            y = np.log([r["wall_s"] for r in done])
            penalty = RIDGE * len(done) * np.eye(x.shape[1])
            penalty[0, 0] = 0.0  # never damp the intercept
            self._coef = np.linalg.solve(x.T @ x + penalty, x.T @ y)
            self.source = f"fit on {len(done)} finished runs"
        elif "model" in spec.fixed or "model" in spec.factors:
            self.source = "model size"

    def predict(self, params: dict[str, Any]) -> float:
        """Seconds from the fit, or a figure that ranks runs like their durations would (model memory)."""
        if self._coef is not None:
            return float(math.exp(self._features(params) @ self._coef))
        if self.source == "model size":
            try:
                method = params.get("method", self.spec.resources.memory_method)
                return memory_gb(str(params["model"]), method if method in ("lora", "full", "inference") else "lora")
            except (KeyError, ValueError):
                return 1.0
        return 1.0

    def _features(self, levels: Mapping[str, Any]) -> np.ndarray:
        row = [1.0]
        for name, numeric, scale, coding in self._coding:
            value = levels.get(name)
            if numeric:
                low, high = coding
                usable = isinstance(value, (int, float)) and (scale != "log" or _positive(value))
                row.append(float(scales.to_unit(value, low, high, scale)) if usable and low != high else 0.0)
            else:
                row.extend(1.0 if value == level else 0.0 for level in coding)
        return np.array(row)


def _coding(factor: Factor) -> tuple[bool, str, tuple[Any, ...]]:
    """(numeric, scale, what codes a level): a numeric factor's bounds (low, high), else its levels after the first
    (one indicator each; the first is the baseline)."""
    if factor.kind == "numeric":
        return True, factor.scale, (min(factor.levels), max(factor.levels))
    return False, factor.scale, factor.levels[1:]


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
