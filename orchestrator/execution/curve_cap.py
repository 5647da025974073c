"""How many learning-curve points a run stores: at most ``max_points`` per run and metric (``resources.
max_curve_points``), so that a 10,000-run study reporting every step cannot write 1e8 rows by accident.

The driver asks :class:`CurveCap` before it writes points. Per (run, metric) it keeps every point until
``max_points`` are stored; then it thins by stride doubling: it deletes every other stored point and from then on
keeps one reported point in 2, then (the next time the cap is reached) one in 4, and so on. Why stride doubling:

- bounded: the rows of a run and metric never pass ``max_points``, however long it runs;
- evenly spaced: the stored points are always the reports numbered 0, s, 2s, ... (s, the stride, a power of 2), so
  the stored curve covers the whole run at one spacing, its start as well as its end;
- cheap: a thin is one DELETE of known steps, the points it keeps never move, and it happens log2(reports /
  max_points) times in a run, not at every point (a sliding or re-sampled window would rewrite rows all along).

The last point a run reported is always stored: one that falls between strides waits (:meth:`last`) and is written
when the run ends; the cap leaves room for it. Spacing is by report (the n-th ``ctx.report`` of the metric), not by
step value, which a run may skip or repeat (a thin deletes by step: a repeated step goes with its twin, and the cap
still holds). Pure: no store, no clock; the driver writes what it returns.
"""

from __future__ import annotations

from typing import Any

Point = tuple[str, int, dict[str, Any]]  # (cell key, step, {metric name: value}), as the store takes them


class _Series:
    """One run's metric: the reports stored (report number, step), the stride, and the latest report if unstored."""

    __slots__ = ("stored", "stride", "reports", "waiting")

    def __init__(self) -> None:
        self.stored: list[tuple[int, int]] = []
        self.stride = 1
        self.reports = 0
        self.waiting: tuple[int, Any] | None = None  # (step, value) of the latest report, when it was not written


class CurveCap:
    """Which reported points to store, per run and metric: stride doubling past ``max_points`` (module docstring)."""

    def __init__(self, max_points: int):
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2; got {max_points}")
        self.max_points = max_points
        self._series: dict[str, dict[str, _Series]] = {}  # cell key -> metric name -> its series

    def keep(self, points: list[Point]) -> tuple[list[Point], list[tuple[str, str, list[int]]]]:
        """The points to write (a subset of ``points``, in their order) and the stored points to delete first, as
        "thin" operations: (cell key, name, steps). A thin only names points written by earlier calls: a point of
        ``points`` thinned in this call is just left out."""
        written: list[tuple[str, int, dict[str, Any]]] = []
        fresh: dict[tuple[str, str, int], dict[str, Any]] = {}  # (key, name, report) -> its entry's dict in written
        thins: dict[tuple[str, str], set[int]] = {}
        for key, step, metrics in points:
            entry: dict[str, Any] = {}
            for name, value in metrics.items():
                series = self._series.setdefault(key, {}).get(name)
                if series is None:
                    series = self._series[key][name] = _Series()
                report = series.reports
                series.reports += 1
                if len(series.stored) >= self.max_points:
                    self._thin(key, name, series, fresh, thins)
                if report % series.stride:
                    series.waiting = (step, value)
                    continue
                series.waiting = None
                series.stored.append((report, step))
                entry[name] = value
                fresh[key, name, report] = entry
            written.append((key, step, entry))
        return [p for p in written if p[2]], [(key, name, sorted(steps)) for (key, name), steps in thins.items()]

    def _thin(self, key: str, name: str, series: _Series, fresh: dict, thins: dict) -> None:
        """Double the stride and drop the stored reports off it: every other one."""
        series.stride *= 2
        kept, gone = [], set()
        for report, step in series.stored:
            if report % series.stride == 0:
                kept.append((report, step))
            elif (entry := fresh.pop((key, name, report), None)) is not None:
                del entry[name]  # reported in this call: never written
            else:
                gone.add(step)
        if gone:
            thins.setdefault((key, name), set()).update(gone)
            # A step reported twice: the delete takes its kept twin too (unless this call writes that one, after it).
            kept = [(report, step) for report, step in kept if step not in gone or (key, name, report) in fresh]
        series.stored = kept

    def last(self, key: str) -> list[Point]:
        """The latest reported points of run ``key`` that were not written (one per metric at most), to write when
        the run ends; each is handed out once."""
        by_step: dict[int, dict[str, Any]] = {}
        for name, series in self._series.get(key, {}).items():
            if series.waiting is not None:
                step, value = series.waiting
                by_step.setdefault(step, {})[name] = value
                series.waiting = None
        return [(key, step, metrics) for step, metrics in sorted(by_step.items())]

    def forget(self, key: str) -> None:
        """Drop run ``key``'s series: it ended, or a new attempt starts (its curve starts again from nothing, as the
        store deletes the earlier attempt's)."""
        self._series.pop(key, None)
