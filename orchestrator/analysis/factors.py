"""What the analysis needs to know about a factor: its levels, scale and kind.

Kept apart from :class:`orchestrator.spec.Factor` so the analysis also works on a CSV of runs, where the levels
come from the data (:func:`infer_factors`), and imports neither pydantic nor YAML.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

# Term names are built as "a:b", "a^2" and "opt[level]"; a factor named with these characters would make them
# ambiguous.
_RESERVED_CHARS = (":", "^", "[", "]")


@dataclass(frozen=True)
class FactorInfo:
    """The levels of one factor and how to code them (see :mod:`orchestrator.analysis.coding`)."""

    levels: tuple[Any, ...]
    scale: Literal["linear", "log"] = "linear"
    kind: Literal["numeric", "categorical"] = "numeric"

    def __post_init__(self) -> None:
        if self.scale not in ("linear", "log"):
            raise ValueError(f"scale must be 'linear' or 'log'; got {self.scale!r}")
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"kind must be 'numeric' or 'categorical'; got {self.kind!r}")
        if len(self.levels) < 2:
            raise ValueError(f"needs at least 2 levels; got {list(self.levels)}")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be unique; got {list(self.levels)}")
        if self.kind == "numeric":
            bad = [v for v in self.levels if not _is_number(v) or not math.isfinite(v)]
            if bad:
                raise ValueError(f"numeric levels must be finite numbers; got {bad}")
        if self.scale == "log":
            if self.kind != "numeric":
                raise ValueError("scale 'log' needs kind 'numeric'")
            if any(v <= 0 for v in self.levels):
                raise ValueError(f"scale 'log' needs levels > 0; got {list(self.levels)}")


def factor_infos(factors: Mapping[str, Any]) -> dict[str, FactorInfo]:
    """FactorInfo per name from FactorInfo values or anything with ``levels``, ``scale`` and ``kind``.

    This is how a spec's factors (``spec.factors``, :class:`orchestrator.spec.Factor`) enter the analysis.
    """
    infos: dict[str, FactorInfo] = {}
    for name, factor in factors.items():
        _check_name(name)
        if isinstance(factor, FactorInfo):
            infos[name] = factor
            continue
        try:
            infos[name] = FactorInfo(tuple(factor.levels), factor.scale, factor.kind)
        except ValueError as exc:
            raise ValueError(f"factor {name!r}: {exc}") from None
    return infos


def infer_factors(df: pd.DataFrame, names: Iterable[str], *, log: Iterable[str] = ()) -> dict[str, FactorInfo]:
    """Factors from the runs themselves, e.g. a CSV export: levels are the distinct values of each column.

    Numeric columns (not booleans) become numeric factors with sorted levels; any other column is categorical,
    its levels sorted by their text so the reference level (the first, see coding) does not depend on row order.
    ``log`` names the numeric factors to code in log space. All rows count, failed runs included: they were
    still run at the design's levels.
    """
    names = list(names)
    log = set(log)
    unknown = log - set(names)
    if unknown:
        raise ValueError(f"log names {sorted(unknown)}, which are not among the factors {names}")
    infos: dict[str, FactorInfo] = {}
    for name in names:
        _check_name(name)
        if name not in df.columns:
            raise ValueError(f"factor {name!r} is not a column; columns: {list(df.columns)}")
        column = df[name].dropna()
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric:
            levels = tuple(sorted(set(column.tolist())))
        else:
            levels = tuple(sorted(set(column.tolist()), key=str))
        kind = "numeric" if numeric else "categorical"
        try:
            infos[name] = FactorInfo(levels, "log" if name in log else "linear", kind)
        except ValueError as exc:
            raise ValueError(f"factor {name!r}: {exc}") from None
    return infos


def _check_name(name: str) -> None:
    if any(ch in name for ch in _RESERVED_CHARS):
        raise ValueError(f"factor name {name!r} must not contain any of {' '.join(_RESERVED_CHARS)} "
                         "(they separate parts of term names)")


def _is_number(value: Any) -> bool:
    # numbers.Real takes numpy scalars too; a boolean is a category, not a number.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
