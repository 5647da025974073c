"""Declared run params: defaults, types, ranges and help, checked once at the start of a run.

Errors name the param, the constraint and the value, like the spec's: ``param 'warmup_ratio': must be < 1;
got 1.5``. Numbers are coerced where it loses nothing (YAML and sweeps hand over ``16.0`` for 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    default: Any
    type: type  # int, float, str or bool
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # exclusive unless high_closed
    low_open: bool = False
    high_closed: bool = False


def resolve_declared(params: dict[str, Any], declared: dict[str, Param], *, seed: int) -> dict[str, Any]:
    """``params`` over the declared defaults, validated and coerced; ``seed`` fills a missing ``seed``."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"unknown param(s) {', '.join(map(repr, unknown))}; valid params: {', '.join(declared)}")
    resolved = {name: params.get(name, spec.default) for name, spec in declared.items()}
    if "seed" in declared and resolved["seed"] is None:
        resolved["seed"] = seed
    return {name: _check(name, value, declared[name]) for name, value in resolved.items()}


def _check(name: str, value: Any, spec: Param) -> Any:
    if value is None:
        return None
    value = _coerce(name, value, spec.type)
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"param {name!r}: must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
        raise ValueError(f"param {name!r}: must be {'>' if spec.low_open else '>='} {spec.low:g}; got {value!r}")
    if spec.high is not None and (value > spec.high or (not spec.high_closed and value == spec.high)):
        raise ValueError(f"param {name!r}: must be {'<=' if spec.high_closed else '<'} {spec.high:g}; got {value!r}")
    return value


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"param {name!r}: must be true or false; got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"param {name!r}: must be a non-empty string; got {value!r}")
        return value
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"param {name!r}: must be a finite number; got {value!r}")
    if kind is int:
        # A fractional value is an error in the spec, not something to round silently.
        if not number.is_integer():
            raise ValueError(f"param {name!r}: must be an integer; got {value!r}")
        return int(number)
    return number
