"""What a named response surface is: the range of a factor (:class:`Box`), a :class:`Surface` with its formula and
its ground truth, and :func:`numeric_optimum` to check a stated optimum. The named surfaces are in ``surfaces.py``.

"Interaction" means exactly: the mixed partial derivative in the two factors is not identically zero over the box.
That is the property a mixed finite difference on a 2 x 2 square detects, so it is what tests can check and what a
factorial analysis can in principle find. (It depends on the coordinates only through the box, not the scale: a
function additive in ``x`` and ``y`` stays additive in ``log x`` and ``y``.)

Integer factors (batch size, LoRA rank) are integers in specs and samplers, but ``value`` accepts any real in the
box: adaptive strategies halve windows and may propose 45.25.

numpy and scipy only; scipy is imported only by :func:`numeric_optimum`, so Ray workers do not pay for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from orchestrator import scales


@dataclass(frozen=True)
class Box:
    """The range of one numeric factor. ``scale="log"`` means levels, sampling and coding are uniform in log space."""

    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"box needs low < high; got [{self.low}, {self.high}]")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale box needs low > 0; got [{self.low}, {self.high}]")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def from_unit(self, u: float) -> float:
        """Map u in [0, 1] to the box, uniformly in the box's scale (clamped: exp(log(high)) may overshoot by 1 ulp)."""
        return min(max(scales.from_unit(u, self.low, self.high, self.scale), self.low), self.high)

    def to_unit(self, value: float) -> float:
        return scales.to_unit(value, self.low, self.high, self.scale)

    def levels(self, n: int) -> list[float] | list[int]:
        """``n`` levels evenly spaced in the box's scale, ends included; integers for an integer box."""
        if n < 2:
            raise ValueError(f"need at least 2 levels; got {n}")
        raw = [self.from_unit(i / (n - 1)) for i in range(n)]
        raw[0], raw[-1] = self.low, self.high
        if self.integer:
            ints = [round(v) for v in raw]
            if len(set(ints)) < n:
                raise ValueError(f"{n} levels in [{self.low}, {self.high}] do not round to distinct integers: {ints}")
            return ints
        # 6 significant digits keep specs readable; the ends stay exact so the spec spans the whole box.
        return [raw[0], *(float(f"{v:.6g}") for v in raw[1:-1]), raw[-1]]


@dataclass(frozen=True)
class Surface:
    """A noise-free response ``value(params)`` over a box of factors, its optimum, and its true effect structure."""

    name: str
    description: str
    factors: dict[str, Box]
    goal: Literal["minimize", "maximize"]
    noise_sd: float
    active_mains: frozenset[str]
    interactions: frozenset[frozenset[str]]
    optimum: float
    argopt: dict[str, float]
    formula: Callable[[Mapping[str, float]], float] = field(repr=False, compare=False)

    def check(self, params: Mapping[str, Any]) -> dict[str, float]:
        """The factor values as floats; a ValueError (TypeError for a non-number) names the factor, box and value."""
        unknown = sorted(set(params) - set(self.factors))
        if unknown:
            raise ValueError(f"surface {self.name!r} has no factor(s) {unknown}; its factors: {sorted(self.factors)}")
        out: dict[str, float] = {}
        for name, box in self.factors.items():
            if name not in params:
                raise ValueError(f"surface {self.name!r}: factor {name!r} is missing; "
                                 f"it needs all of {sorted(self.factors)}")
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"surface {self.name!r}: factor {name!r} must be a number; got {value!r}")
            value = float(value)
            if not box.contains(value):  # also refuses NaN
                raise ValueError(f"surface {self.name!r}: factor {name!r} must lie in [{box.low}, {box.high}]; "
                                 f"got {value!r}")
            out[name] = value
        return out

    def value(self, params: Mapping[str, Any]) -> float:
        """The noise-free response at ``params`` (every factor, inside its box)."""
        return float(self.formula(self.check(params)))

    def sample(self, params: Mapping[str, Any], seed: int) -> float:
        """``value + noise_sd * N(0, 1)``; the noise depends only on (surface name, params, seed), so a cell gives the
        same number on every machine and in every process (no global RNG state)."""
        clean = self.check(params)
        # Floats in the hash, so a level written 32 or 32.0 is the same point.
        identity = json.dumps({"surface": self.name, "seed": int(seed), "params": clean}, sort_keys=True)
        rng = random.Random(hashlib.sha256(identity.encode()).hexdigest())
        return float(self.formula(clean)) + self.noise_sd * rng.gauss(0.0, 1.0)

    def regret(self, params: Mapping[str, Any]) -> float:
        """How far the noise-free value at ``params`` is from the optimum (>= 0 for either goal)."""
        return abs(self.value(params) - self.optimum)

    def random_point(self, rng: np.random.Generator) -> dict[str, float]:
        """A point uniform in the box in each factor's scale (not rounded for integer factors)."""
        return {name: box.from_unit(float(rng.random())) for name, box in self.factors.items()}

    def spec(self, study: str, *, mode: str = "waves", levels: int = 2, seeds: tuple[int, ...] | list[int] = (0,),
             **strategy: Any) -> dict[str, Any]:
        """A wavesweep spec dict (what ``orchestrator.spec.parse_spec`` takes) sweeping this surface over its box.

        ``levels`` levels per factor, evenly spaced in the factor's scale; ``strategy`` adds keys such as
        ``runs_per_wave`` or ``max_waves`` next to ``mode``.
        """
        factors: dict[str, dict[str, Any]] = {}
        for name, box in self.factors.items():
            factor: dict[str, Any] = {"levels": box.levels(levels)}
            if box.scale == "log":
                factor["scale"] = "log"
            factors[name] = factor
        return {
            "study": study,
            "description": f"synthetic surface {self.name!r} (experiments/surfaces.py)",
            "experiment": "experiments.synthetic:run",
            "fixed": {"named_surface": self.name, "noise_sd": self.noise_sd, "steps": 1},
            "factors": factors,
            "response": {"metric": "y", "goal": self.goal},
            "strategy": {"mode": mode, **strategy},
            "resources": {"cpus_per_run": 1},
            "seeds": [int(s) for s in seeds],
        }


def numeric_optimum(surface: Surface, *, starts: int = 32, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The best value scipy's L-BFGS-B finds over the box from ``starts`` random starts (plus the box center).

    It works in unit coordinates (log space for log factors), where the boxes are [0, 1] and the surfaces are smooth.
    Used by the tests to confirm each surface's stated optimum; it is a local method, so it confirms, not proves.
    """
    from scipy.optimize import minimize

    names = list(surface.factors)
    sign = 1.0 if surface.goal == "minimize" else -1.0

    def point(u: np.ndarray) -> dict[str, float]:
        return {n: surface.factors[n].from_unit(float(min(max(x, 0.0), 1.0))) for n, x in zip(names, u)}

    def objective(u: np.ndarray) -> float:
        return sign * surface.value(point(u))

    rng = np.random.default_rng(seed)
    best_u, best = None, math.inf
    for u0 in [np.full(len(names), 0.5), *rng.random((starts, len(names)))]:
        res = minimize(objective, u0, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(names))
        if res.fun < best:
            best_u, best = res.x, float(res.fun)
    return sign * best, point(best_u)
