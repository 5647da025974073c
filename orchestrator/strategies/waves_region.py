"""The geometry of the adaptive waves: regions (a window per open factor, a value per fixed one), their cells,
what kind of wave a set of runs was, and the moves of a window. Mixed into :class:`Waves`, which sets ``spec``,
``box`` (each factor's range in the spec) and ``integer`` (factors whose levels are all integers)."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from orchestrator.cells import Cell, make_cell

if TYPE_CHECKING:
    from orchestrator.spec import Spec

CONVERGED_WIDTH = 1 / 8  # of a numeric factor's range


class Regions:
    spec: Spec
    box: dict[str, tuple]
    integer: dict[str, bool]

    # --- cells -----------------------------------------------------------------------------------------------------

    def _cells(self, region, active, coded, *, copies: int = 1, centers: int = 0) -> list[Cell]:
        points = [self._decode_row(region, active, row) for row in coded]
        # Repeated points need seeds of their own, or they would share one cell key: the spec's seeds first, then
        # fresh ones above them.
        fresh = iter(range(max(self.spec.run_seeds) + 1, 1 << 30))
        seeds = list(self.spec.run_seeds) + [next(fresh) for _ in range((copies - 1) * len(self.spec.run_seeds))]
        cells = [make_cell(self.spec.study, self._ordered(p), seed) for seed in seeds for p in points]
        if centers:
            center = {**self._fixed(region), **{n: self._center(n, *region[n]) for n in active}}
            cells += [make_cell(self.spec.study, self._ordered(center), next(fresh))
                      for _ in range(centers * len(self.spec.run_seeds))]
        return cells

    def _decode_row(self, region: dict, active: list[str], row) -> dict:
        """A coded run (-1 low, 0 center, +1 high per active factor) -> a point of the region."""
        return {**self._fixed(region),
                **{n: region[n][1] if x > 0 else region[n][0] if x < 0 else self._center(n, *region[n])
                   for n, x in zip(active, row)}}

    def _fresh_cell(self, point: dict, taken: set[str]) -> Cell:
        """``point`` at the first seed (the spec's, then ascending above them) whose cell is neither recorded nor
        already in ``taken``, which it joins: how replicates, axial and center runs get seeds of their own."""
        for seed in itertools.chain(self.spec.run_seeds, range(max(self.spec.run_seeds) + 1, 1 << 30)):
            cell = make_cell(self.spec.study, point, seed)
            if cell.key not in taken:
                taken.add(cell.key)
                return cell
        raise AssertionError("unreachable: 2^30 seeds")

    def _ordered(self, point: dict) -> dict:
        return {n: point[n] for n in self.spec.factors}

    def _point(self, run: dict) -> tuple:
        return tuple(run[f"param.{n}"] for n in self.spec.factors)

    @staticmethod
    def _fixed(region: dict) -> dict:
        return {n: v for n, v in region.items() if not isinstance(v, tuple)}

    # --- regions ---------------------------------------------------------------------------------------------------

    def _region(self, wave_runs: list[dict]) -> dict:
        region: dict[str, Any] = {}
        for name in self.spec.factors:
            values = sorted({r[f"param.{name}"] for r in wave_runs}, key=lambda v: (str(type(v)), v))
            if len(values) == 1:
                region[name] = values[0]
            elif self.spec.factors[name].kind == "numeric":
                region[name] = (values[0], values[-1])
            else:
                region[name] = tuple(values)
        return region

    def _inside(self, run: dict, region: dict) -> bool:
        for name, value in region.items():
            x = run[f"param.{name}"]
            if isinstance(value, tuple):
                if self.spec.factors[name].kind == "numeric" and not value[0] <= x <= value[1]:
                    return False
                if self.spec.factors[name].kind == "categorical" and x not in value:
                    return False
            elif x != value:
                return False
        return True

    def _kind(self, latest: list[dict], region: dict, active: list[str], earlier: set[tuple]) -> str:
        """What the latest wave was, from its points: a central composite wave has axial points (one factor at an
        edge, the others at their centers), a definitive screening wave has runs with one factor at its center and
        the others at an edge, a replicate wave only points run before; anything else is a fraction."""
        k = len(active)
        if k >= 2 and all(self.spec.factors[n].kind == "numeric" for n in active):
            centers = {n: self._center(n, *region[n]) for n in active}
            for run in latest:
                edge = sum(run[f"param.{n}"] in region[n] for n in active)
                middle = sum(run[f"param.{n}"] == centers[n] and run[f"param.{n}"] not in region[n] for n in active)
                if edge == 1 and middle == k - 1:
                    return "central_composite"
                if k >= 3 and middle == 1 and edge == k - 1:
                    return "definitive_screening"
        if all(self._point(r) in earlier for r in latest):
            return "replicates"
        return "fraction"

    @staticmethod
    def _at_corner(run: dict, name: str, window: tuple) -> bool:
        return run[f"param.{name}"] in window

    # --- moves -----------------------------------------------------------------------------------------------------

    def _better_high(self, estimate: float) -> bool:
        return (estimate > 0) == (self.spec.response.goal == "maximize")

    def _half(self, name: str, low, high, upper: bool):
        center = self._center(name, low, high)
        return (center, high) if upper else (low, center)

    def _around_center(self, name: str, low, high):
        """The middle half of the window."""
        center = self._center(name, low, high)
        return self._center(name, low, center), self._center(name, center, high)

    def _center(self, name: str, low, high):
        if self.spec.factors[name].scale == "log":
            middle = math.sqrt(low * high)
        else:
            middle = (low + high) / 2
        return round(middle) if self.integer[name] else middle

    def _converged(self, region: dict) -> bool:
        active = [n for n, v in region.items() if isinstance(v, tuple)]
        numeric = [n for n in active if self.spec.factors[n].kind == "numeric"]
        if len(numeric) < len(active):
            return False  # a categorical factor is still open
        return all(self._width(n, *region[n]) < CONVERGED_WIDTH * self._width(n, *self.box[n]) for n in numeric)

    def _width(self, name: str, low, high) -> float:
        return math.log(high / low) if self.spec.factors[name].scale == "log" else high - low
