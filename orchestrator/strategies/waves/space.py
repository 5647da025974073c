"""The search space of the adaptive waves, as values: an :class:`Axis` per factor (its range in the spec, its scale,
whether it is an integer or a categorical) and a :class:`Region` (a window per open factor, a value per fixed one).

Every unit of the strategy (screen, de-alias, explore, refine) takes these instead of reaching into the strategy:
the unit cube of the model, the coded -1/0/+1 of the designs and the factor's own values meet here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator import scales

if TYPE_CHECKING:
    from orchestrator.run_record import RunRecord
    from orchestrator.spec import Spec


@dataclass(frozen=True)
class Axis:
    """One factor: a numeric range ``[low, high]`` (linear or log, integer or not) or two categorical levels."""

    name: str
    kind: str  # "numeric" | "categorical"
    low: Any
    high: Any
    scale: str = "linear"
    integer: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"

    def to_unit(self, value: float) -> float:
        """The factor's value -> [0, 1] over the spec's range, in the factor's scale."""
        return scales.to_unit(value, self.low, self.high, self.scale)

    def from_unit(self, u: float):
        """[0, 1] -> the factor's value (clamped to the range, rounded for an integer factor)."""
        value = scales.from_unit(min(1.0, max(0.0, float(u))), self.low, self.high, self.scale)
        if self.integer:
            return int(min(self.high, max(self.low, round(value))))
        # 6 significant digits keep levels readable in reasons and exports; the range's ends stay exact.
        return min(self.high, max(self.low, float(f"{value:.6g}")))

    def center(self, low, high):
        """The middle of a window in the factor's scale (rounded for an integer factor)."""
        middle = scales.midpoint(low, high, self.scale)
        return round(middle) if self.integer else middle


def axes(spec: Spec) -> dict[str, Axis]:
    """An axis per factor of the spec, in the spec's order: a numeric factor spans [min, max] of its levels."""
    out = {}
    for name, factor in spec.factors.items():
        if factor.kind == "numeric":
            out[name] = Axis(name, "numeric", min(factor.levels), max(factor.levels), factor.scale,
                             all(isinstance(v, int) for v in factor.levels))
        else:
            out[name] = Axis(name, "categorical", factor.levels[0], factor.levels[1])
    return out


@dataclass(frozen=True)
class Region:
    """A window ``(low, high)`` per open factor (a categorical's two levels) and a value per fixed one."""

    windows: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, mapping: dict[str, Any]) -> Region:
        return cls(tuple(mapping.items()))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.windows)

    @property
    def active(self) -> list[str]:
        return [n for n, v in self.windows if isinstance(v, tuple)]

    @property
    def fixed(self) -> dict[str, Any]:
        return {n: v for n, v in self.windows if not isinstance(v, tuple)}

    def decode(self, axes_: dict[str, Axis], row) -> dict[str, Any]:
        """A coded run (-1 low, 0 center, +1 high per active factor, in ``active`` order) -> a point."""
        windows = self.as_dict()
        point = dict(self.fixed)
        for name, x in zip(self.active, row):
            low, high = windows[name]
            point[name] = high if x > 0 else low if x < 0 else axes_[name].center(low, high)
        return {n: point[n] for n, _ in self.windows}

    def has_centers(self, axes_: dict[str, Axis]) -> bool:
        """Whether center runs exist: every open factor numeric, with a center strictly inside its window."""
        windows = self.as_dict()
        return all(axes_[n].numeric and windows[n][0] < axes_[n].center(*windows[n]) < windows[n][1]
                   for n in self.active)

    def holds(self, axes_: dict[str, Axis], run: RunRecord) -> bool:
        """Whether a run's levels are on this region's design grid (low, center or high of every open factor)."""
        for name, window in self.windows:
            value = run.levels.get(name)
            if isinstance(window, tuple):
                grid = (*window, axes_[name].center(*window)) if axes_[name].numeric else window
                if value not in grid:
                    return False
            elif value != window:
                return False
        return True


def screening_region(axes_: dict[str, Axis], inset: float) -> Region:
    """The region a study screens: each numeric factor's levels at ``inset`` and ``1 - inset`` of its range (in its
    scale; integers rounded, kept distinct), a categorical's two levels."""
    windows = {}
    for name, axis in axes_.items():
        if not axis.numeric:
            windows[name] = (axis.low, axis.high)
            continue
        low, high = axis.from_unit(inset), axis.from_unit(1 - inset)
        if not low < axis.center(low, high) < high:  # an integer range too narrow for an inner window
            low, high = axis.low, axis.high
        windows[name] = (low, high)
    return Region.of(windows)
