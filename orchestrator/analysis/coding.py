"""Coded design matrix: factor values -> model columns with readable names.

Coding (estimates are coefficients of these columns, "coded units"):

- numeric factor: ``x`` maps its level range linearly onto [-1, +1] (in log space for scale log), so the
  coefficient is half the change from the lowest to the highest level. Column ``lr``.
- numeric factor with 3+ levels: also ``x^2`` centred on the mean of x^2 over its levels. For 3 equally spaced
  levels that is the orthogonal quadratic polynomial and the coefficient is (mean at the two ends) - (centre).
  Column ``lr^2``.
- categorical factor: sum (deviation) contrasts. The first level is the reference: one column ``opt[level]`` per
  other level, +1 at that level, -1 at the first level, 0 elsewhere. The coefficient is that level's deviation
  from the average of the level means. With 2 levels this is +-1 coding (half the first -> second change).
- interactions: products of the columns above, ``lr:rank``, ``lr:opt[sgd]``, for every set of up to ``max_order``
  factors; and, for each pair of numeric factors, linear x quadratic ``lr:rank^2`` and ``lr^2:rank``. A curved
  interaction such as sin(pi x1 x2) can have no linear x linear part at all, so testing ``lr:rank`` alone misses
  it.

Columns come in a fixed order: main effects, quadratics, two-way linear x linear, linear x quadratic, then three-way
and up. The order decides which column of an alias set is kept (the first) and the sequential sums of squares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations, product
from typing import Literal

import numpy as np
import pandas as pd

from orchestrator.analysis.factors import FactorInfo
from orchestrator.scales import coded

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Column:
    """One model column: its name, the ANOVA term it belongs to, its kind and how many factors it involves."""

    name: str  # "lr:opt[sgd]"
    term: str  # "lr:opt": the columns of a categorical factor form one term in the ANOVA
    kind: Literal["main", "quadratic", "interaction"]
    order: int


@dataclass(frozen=True)
class ModelMatrix:
    """The coded matrix (``Intercept`` first, one row per run, the runs' index) and what each column is."""

    matrix: pd.DataFrame
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class _Part:
    """A coded column of a single factor: linear/contrast (degree 1) or quadratic (degree 2)."""

    name: str
    term: str
    values: np.ndarray
    degree: int


def code_numeric(values: pd.Series | np.ndarray, info: FactorInfo) -> np.ndarray:
    """Numeric values coded onto [-1, +1] over the factor's level range (log space for scale log)."""
    x = np.asarray(pd.to_numeric(pd.Series(values)), dtype=float)
    levels = np.asarray(info.levels, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("numeric factor values must be finite")
    if info.scale == "log" and np.any(x <= 0):
        raise ValueError("values of a log-scale factor must be > 0")
    return coded(x, float(levels.min()), float(levels.max()), info.scale)


def design_matrix(df: pd.DataFrame, factors: Mapping[str, FactorInfo], *, max_order: int = 2,
                  curved_pairs: bool = True) -> ModelMatrix:
    """The coded columns of the model for the runs in ``df`` (see the module docstring for the coding).

    ``curved_pairs=False`` leaves out the linear x quadratic pairs: the second-order response-surface model
    (:mod:`orchestrator.analysis.surface`), whose runs have so many distinct values that every factor gets a
    quadratic and the curved pairs alone would outnumber the runs."""
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1; got {max_order}")
    parts = {name: _code_factor(name, df, info) for name, info in factors.items()}
    linear = {name: [p for p in ps if p.degree == 1] for name, ps in parts.items()}
    quadratic = {name: p for name, ps in parts.items() for p in ps if p.degree == 2}

    named: list[tuple[Column, np.ndarray]] = []
    for name in factors:
        named += [(Column(p.name, p.term, "main", 1), p.values) for p in linear[name]]
    named += [(Column(p.name, p.term, "quadratic", 1), p.values) for p in quadratic.values()]
    if max_order >= 2:
        named += _products(list(factors), linear, 2)
        numeric = [name for name, info in factors.items() if info.kind == "numeric"] if curved_pairs else []
        for a, b in combinations(numeric, 2):
            for first, second in ((linear[a][0], quadratic.get(b)), (quadratic.get(a), linear[b][0])):
                if first is None or second is None:  # that factor has only 2 levels: no quadratic
                    continue
                name = f"{first.name}:{second.name}"
                named.append((Column(name, name, "interaction", 2), first.values * second.values))
    for order in range(3, max_order + 1):
        named += _products(list(factors), linear, order)

    matrix = pd.DataFrame({INTERCEPT: np.ones(len(df))} | {c.name: v for c, v in named}, index=df.index)
    return ModelMatrix(matrix, tuple(c for c, _ in named))


def _products(names: list[str], linear: dict[str, list[_Part]], order: int) -> list[tuple[Column, np.ndarray]]:
    columns = []
    for combo in combinations(names, order):
        term = ":".join(combo)
        for chosen in product(*(linear[n] for n in combo)):
            values = np.prod([p.values for p in chosen], axis=0)
            columns.append((Column(":".join(p.name for p in chosen), term, "interaction", order), values))
    return columns


def _code_factor(name: str, df: pd.DataFrame, info: FactorInfo) -> list[_Part]:
    if name not in df.columns:
        raise ValueError(f"factor {name!r} is not a column; columns: {list(df.columns)}")
    if info.kind == "numeric":
        try:
            x = code_numeric(df[name], info)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"factor {name!r}: {exc}") from None
        parts = [_Part(name, name, x, 1)]
        # A quadratic needs a third level; any more curvature than that stays in the residual (lack of fit).
        if len(info.levels) >= 3:
            centre = np.mean(code_numeric(np.asarray(info.levels), info) ** 2)
            parts.append(_Part(f"{name}^2", f"{name}^2", x**2 - centre, 2))
        return parts
    values = df[name].tolist()
    unknown = sorted({str(v) for v in values if v not in info.levels})
    if unknown:
        raise ValueError(f"factor {name!r} has values {unknown} that are not among its levels {list(info.levels)}")
    reference = info.levels[0]
    parts = []
    for level in info.levels[1:]:
        column = np.array([1.0 if v == level else -1.0 if v == reference else 0.0 for v in values])
        parts.append(_Part(f"{name}[{level}]", name, column, 1))
    return parts


def term_factors(term: str) -> frozenset[str]:
    """The factors a term or column name involves: ``"lr:opt[sgd]"`` -> {lr, opt}; ``"lr^2:rank"`` -> {lr, rank}."""
    return frozenset(part.split("[", 1)[0].removesuffix("^2") for part in term.split(":"))
