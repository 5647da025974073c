"""Whether a run keeps going: the pruner the run loop asks whenever a run's learning curve moves.

A run is compared with its peers (every run of the study whose curve of the response metric reached the same step:
finished, running or pruned, designed or not) at the same step, never before the hold-off (``strategy.prune_after``):

- **halving** (asynchronous successive halving, ASHA's rule): at rungs ``hold-off x 3^k``, a run continues if its
  value is among the best third of the values recorded at that rung (itself included), at least 5 of them.
- **median** (Optuna's MedianPruner): at every reported step after the hold-off, a run stops if it is worse than the
  median of at least 4 peers at that step.
- **bound**: at every reported step after the hold-off, a run stops if even the good end of the 95% prediction
  interval of its final value (``predict``: ``extrapolate.py``, the run's own curve extrapolated, or its peers'
  finals regressed on their curves, whichever has the better record on the finished runs at that step) is worse than
  the best final value of a finished run: it cannot plausibly become the best.

halving and median compare with peers only by more than the noise: the pooled SD at that step of runs sharing their
levels (replicates; none: no margin, and the decision says so); bound's margin is its prediction interval. The
decision keeps the numbers that made it, and the final value the curve predicts (``predict``), which the
strategies' models are told instead of a result the run never had.

Pure: the run loop feeds it curve points and finished results, and acts on its decisions (``driver.py``).
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import asdict, dataclass, field

import numpy as np

from orchestrator.execution import extrapolate
from orchestrator.execution.extrapolate import Prediction

ETA = 3  # halving keeps the best 1/ETA at each rung; rungs are hold-off x ETA^k
MIN_RUNG = 5  # halving: values at a rung, the run's own included, before it decides
MIN_PEERS = 4  # median: peers at the step before it decides
LEVEL = 0.95  # of the prediction interval


@dataclass(frozen=True)
class Decision:
    """Why a run was stopped: the rule, the step, its value there, the bar it failed (threshold + margin), the
    peers that set the bar, and the final value its curve predicts (None with too few finished runs)."""

    rule: str
    step: int
    value: float
    threshold: float
    margin: float
    peers: int
    full_steps: int  # the longest curve of a finished run: how far the run would have gone
    rung: int | None = None
    predicted: float | None = None
    interval: tuple[float, float] | None = None
    note: str = ""
    predictor: str = ""  # which of extrapolate's predictors gave ``predicted``

    def as_dict(self) -> dict:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval else None
        return out


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float) -> None:
        if self.steps and step <= self.steps[-1]:
            # A report out of order (or a step reported twice): keep the curve sorted, the latest value wins.
            i = bisect.bisect_left(self.steps, step)
            if i < len(self.steps) and self.steps[i] == step:
                self.values[i] = value
                return
            self.steps.insert(i, step)
            self.values.insert(i, value)
            return
        self.steps.append(step)
        self.values.append(value)

    @property
    def last(self) -> int:
        return self.steps[-1] if self.steps else -1

    def at(self, step: int) -> float | None:
        """The value last reported at or before ``step``, if the curve has reached ``step``."""
        if self.last < step:
            return None
        i = bisect.bisect_right(self.steps, step) - 1
        return self.values[i] if i >= 0 else None


class Pruner:
    """Curves of the response metric, per run, and the rule that judges them.

    ``hold_off``: ("steps", n) or ("share", f) of a full run (``StrategySettings.hold_off``); ``group_of``: cell key
    -> a key shared by replicates (the levels), for the noise margin."""

    def __init__(self, rule: str, goal: str, hold_off: tuple[str, float]):
        self.rule, self.sign, self.hold_off = rule, (1.0 if goal == "minimize" else -1.0), hold_off
        self.curves: dict[str, Curve] = {}
        self.finals: dict[str, float] = {}  # finished runs' final values
        self.groups: dict[str, str] = {}
        self.judged: dict[str, int] = {}  # halving: the highest rung each run was judged at
        self._residuals: dict[tuple, float | None] = {}  # extrapolate's calibration, per (family, run, step, full)

    # --- what it is told ---------------------------------------------------------------------------------------

    def add(self, key: str, group: str, step: int, value: float) -> None:
        if not math.isfinite(value):
            return  # a NaN loss ends the run as DIVERGED on its own
        self.groups[key] = group
        self.curves.setdefault(key, Curve()).add(int(step), float(value))

    def restart(self, key: str) -> None:
        """A new attempt of ``key`` starts: its earlier attempt's curve and judgements no longer count."""
        self.curves.pop(key, None)
        self.judged.pop(key, None)

    def finished(self, key: str, final: float | None) -> None:
        """A run ended COMPLETE with ``final`` (its response): its curve is a full run's, its final a fit point."""
        if final is not None and math.isfinite(final):
            self.finals[key] = float(final)

    # --- what it decides -----------------------------------------------------------------------------------------

    @property
    def full_steps(self) -> int | None:
        lasts = [self.curves[k].last for k in self.finals if k in self.curves]
        return max(lasts) if lasts else None

    def start(self) -> int | None:
        """The hold-off in steps; None while it is a share and no run has finished (a full run's length unknown)."""
        kind, amount = self.hold_off
        if kind == "steps":
            return int(amount)
        full = self.full_steps
        return None if full is None else max(1, math.ceil(amount * full))

    def judge(self, key: str) -> Decision | None:
        """Whether run ``key`` should stop now, from its curve so far; None: it continues."""
        curve, start, full = self.curves.get(key), self.start(), self.full_steps
        if curve is None or start is None or curve.last < max(start, 1):
            return None
        if full is not None and curve.last >= full:
            return None  # as far as a full run goes: stopping it saves nothing
        if self.rule == "halving":
            return self._halving(key, curve, max(start, 1), full)
        if self.rule == "bound":
            return self._bound(key, curve, full)
        return self._median(key, curve, full)

    def _bound(self, key: str, curve: Curve, full: int | None) -> Decision | None:
        step = curve.last
        if (p := self.predict(key, step)) is None:
            return None
        best = min(self.finals.values(), key=lambda v: self.sign * v)
        hopeful = p.interval[0] if self.sign > 0 else p.interval[1]  # the end of the interval on the good side
        if self.sign * (hopeful - best) <= 0:
            return None
        return Decision("bound", step, curve.at(step), best, 0.0, len(self.finals), full or step, None, p.value,
                        p.interval, "the margin is the prediction interval", p.method)

    def _halving(self, key: str, curve: Curve, start: int, full: int | None) -> Decision | None:
        rung = start
        while rung * ETA <= curve.last and (full is None or rung * ETA < full):
            rung *= ETA  # the highest rung the run has reached
        if self.judged.get(key, 0) >= rung:
            return None
        at = {k: v for k, c in self.curves.items() if (v := c.at(rung)) is not None}
        if len(at) < MIN_RUNG:
            return None  # judged later, when the rung has more values
        self.judged[key] = rung
        ranked = sorted(self.sign * v for v in at.values())
        bar = self.sign * ranked[max(1, len(ranked) // ETA) - 1]  # the worst value still in the best third
        return self._decide(key, "halving", rung, at, bar, full, rung=rung)

    def _median(self, key: str, curve: Curve, full: int | None) -> Decision | None:
        step = curve.last
        at = {k: v for k, c in self.curves.items() if (v := c.at(step)) is not None}
        peers = {k: v for k, v in at.items() if k != key}
        if len(peers) < MIN_PEERS:
            return None
        return self._decide(key, "median", step, at, statistics.median(peers.values()), full)

    def _decide(self, key: str, rule: str, step: int, at: dict[str, float], bar: float, full: int | None,
                rung: int | None = None) -> Decision | None:
        value = at[key]
        margin, note = self._noise(at)
        if self.sign * (value - bar) <= margin:
            return None
        p = self.predict(key, step)
        return Decision(rule, step, value, bar, margin, len(at) - 1, full or step, rung, p and p.value,
                        p and p.interval, note, p.method if p else "")

    def _noise(self, at: dict[str, float]) -> tuple[float, str]:
        """The pooled SD at a step of the runs that share their levels, and a note when there are none."""
        groups: dict[str, list[float]] = {}
        for k, v in at.items():
            groups.setdefault(self.groups.get(k, k), []).append(v)
        sizes = [(len(g), statistics.variance(g)) for g in groups.values() if len(g) > 1]
        dof = sum(n - 1 for n, _ in sizes)
        if not dof:
            return 0.0, "no replicates at this step: no noise margin"
        return math.sqrt(sum((n - 1) * var for n, var in sizes) / dof), ""

    def predict(self, key: str, step: int) -> Prediction | None:
        """Run ``key``'s final value from its curve up to ``step`` (``extrapolate``: its own fit or its peers', the
        one with the best record on the finished runs at this step); None with too few finished runs."""
        curve, full = self.curves.get(key), self.full_steps
        if curve is None or full is None or curve.at(step) is None:
            return None
        calibration = [k for k in list(self.finals)[-extrapolate.MAX_CALIBRATION:]
                       if k != key and k in self.curves and self.curves[k].at(step) is not None]
        if len(calibration) < extrapolate.MIN_CALIBRATION:
            return None
        candidates = []
        for family in ("exp", "pow"):
            mine = extrapolate.own_fit(family, curve.steps, curve.values, step, full)
            if mine is None:
                continue
            residuals = [r for k in calibration if (r := self._residual(family, k, step, full)) is not None]
            if len(residuals) >= extrapolate.MIN_CALIBRATION:
                candidates.append((family, mine, np.array(residuals)))
        if (peers := self._peers(key, curve, step, calibration)) is not None:
            candidates.append(("peers", *peers))
        if not candidates:
            return None
        family, mine, residuals = min(candidates, key=lambda c: float(np.std(c[2], ddof=1)))
        value, sd, half = extrapolate.interval(mine, residuals, LEVEL)
        return Prediction(value, (value - half, value + half), family, sd, len(residuals))

    def _residual(self, family: str, key: str, step: int, full: int) -> float | None:
        """A finished run's final minus ``family``'s extrapolation of its curve cut at ``step`` (cached: both fixed)."""
        cache = (family, key, step, full)
        if cache not in self._residuals:
            c = self.curves[key]
            fit = extrapolate.own_fit(family, c.steps, c.values, step, full)
            self._residuals[cache] = None if fit is None else self.finals[key] - fit
        return self._residuals[cache]

    def _peers(self, key: str, curve: Curve, step: int, calibration: list[str]):
        """The peers' regression at ``step``: (prediction, leave-one-out residuals), or None."""
        half = step // 2
        for moved in (True, False):  # without "moved" when it cannot be fitted (every run moved alike)
            if moved and (half < 1 or curve.at(half) is None):
                continue
            rows, finals = [], []
            for k in calibration:
                c = self.curves[k]
                v, h = c.at(step), c.at(half) if moved else None
                if moved and h is None:
                    continue
                rows.append([1.0, v] + ([v - h] if moved else []))
                finals.append(self.finals[k])
            x0 = [1.0, curve.at(step)] + ([curve.at(step) - curve.at(half)] if moved else [])
            if len(finals) >= extrapolate.MIN_CALIBRATION and (
                    fit := extrapolate.peers_loo(np.array(rows), np.array(finals), np.array(x0))) is not None:
                return fit
        return None
