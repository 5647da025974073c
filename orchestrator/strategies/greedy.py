"""Greedy hill-climbing for one GPU: change one factor at a time, keep a change only if it beats the noise.

Wave 1 runs the start point (every factor at its first level) at every seed, at least twice, to measure the
noise. Then each wave tries the other levels of one factor, the others held at the incumbent, cycling through
the factors in spec order. A candidate replaces the incumbent only if it improves the response by more than
``2 x`` the noise SD of the start point's replicates (a one-at-a-time step has no other error estimate). The
search stops after a full cycle without a change, when the next step would only repeat recorded runs, or on the
budget (``max_waves``, ``max_runs``).

What this cannot see: a path that changes one factor at a time never holds both levels of two factors against
each other, so two-way interactions are not estimable from it, except for pairs that happen to form a 2 x 2
square. :func:`blind_spots` names them and proposes the runs that would complete each square; the CLI prints it.
The strategy keeps no state: the path is replayed from the store's runs, wave by wave.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator.cells import Cell, WavePlan, make_cell
from orchestrator.run_record import RunRecord, records
from orchestrator.strategies.base import Strategy
from orchestrator.wave_kinds import GREEDY

NOISE_MULTIPLE = 2.0


@dataclass(frozen=True)
class Path:
    incumbent: dict
    incumbent_value: float | None
    noise_sd: float | None
    last_factor: str | None  # factor varied by the latest wave
    unchanged: int  # consecutive factor waves without an accepted change


class Greedy(Strategy):
    name = "greedy"
    adaptive = True

    def planned_runs(self) -> int:
        return self.spec.strategy.max_runs or 0  # unknown in advance: it depends on the results

    def start(self) -> dict:
        return {name: factor.levels[0] for name, factor in self.spec.factors.items()}

    def propose(self, known_keys: set[str], runs_per_wave: int, runs: list[RunRecord]) -> WavePlan | None:
        self.stop_reason = None
        limits = self.spec.strategy
        waves = sorted({r.wave for r in runs})
        if (limits.max_waves and len(waves) >= limits.max_waves) or (limits.max_runs and len(runs) >= limits.max_runs):
            return None
        if not runs:
            seeds = list(self.spec.run_seeds)
            if len(seeds) == 1:
                seeds.append(seeds[0] + 1)  # two replicates at least: the noise is the yardstick for every step
            cells = [make_cell(self.spec.study, self.start(), s) for s in seeds]
            return WavePlan(cells, GREEDY, "start point, replicated to measure the noise")
        path = self.replay(runs)
        names = list(self.spec.factors)
        if path.incumbent_value is None:
            self.stop_reason = self._start_failed([r for r in runs if r.wave == min(waves)])
            return None  # no value to beat: every step is measured against the start point's
        if path.unchanged >= len(names):
            return None  # a full cycle without an improvement: a local optimum for one-at-a-time moves
        factor = names[(names.index(path.last_factor) + 1) % len(names)] if path.last_factor else names[0]
        cells = [make_cell(self.spec.study, {**path.incumbent, factor: level}, seed)
                 for level in self.spec.factors[factor].levels if level != path.incumbent[factor]
                 for seed in self.spec.run_seeds]
        cells = [c for c in cells if c.key not in known_keys]
        reason = (f"vary {factor} around the incumbent " + ", ".join(f"{k}={v}" for k, v in path.incumbent.items())
                  + (f" ({self.spec.response.metric} {path.incumbent_value:.4g}, noise SD {path.noise_sd:.3g})"
                     if path.noise_sd is not None else ""))
        if not cells:
            return None
        return WavePlan(cells, GREEDY, reason)

    def _start_failed(self, start: list[RunRecord]) -> str | None:
        """Why the climb cannot begin: no replicate of the start point reported the response (their statuses and
        errors); None while one may still do so."""
        if any(r.status in ("PENDING", "RUNNING") for r in start):
            return None
        counts: dict[str, int] = {}
        for run in start:
            counts[run.status] = counts.get(run.status, 0) + 1
        errors = dict.fromkeys(_error(r) for r in start if r.get("error_kind") or r.get("error_message"))
        point = ", ".join(f"{k}={v}" for k, v in self.start().items())
        return (f"the start point ({point}) failed: none of its {len(start)} replicates reported "
                f"{self.spec.response.metric} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}"
                + (f"; {'; '.join(errors)}" if errors else "") + "). Greedy steps are measured against the start "
                "point, so no step can follow; fix what failed and run the study again")

    def replay(self, runs: list[RunRecord]) -> Path:
        """The path the recorded waves took: the incumbent after each, and how many waves since a change."""
        metric = self.spec.response.metric
        by_wave: dict[int, list[RunRecord]] = {}
        for run in runs:
            by_wave.setdefault(run["wave"], []).append(run)
        incumbent, value, noise, last, unchanged = self.start(), None, None, None, 0
        for number in sorted(by_wave):
            done = [r for r in by_wave[number] if r.status == "COMPLETE" and metric in r.metrics]
            if value is None:  # the start wave
                values = [r.metrics[metric] for r in done]
                if values:
                    value = statistics.fmean(values)
                    noise = statistics.stdev(values) if len(values) > 1 else 0.0
                continue
            varied = [n for n in self.spec.factors if len({r.levels[n] for r in by_wave[number]} | {incumbent[n]}) > 1]
            last = varied[0] if varied else last
            means = {}
            for run in done:
                means.setdefault(run.levels[last], []).append(run.metrics[metric])
            best_level, best = None, value
            for level, values in means.items():
                mean = statistics.fmean(values)
                if self._better(mean, best, noise):
                    best_level, best = level, mean
            if best_level is None:
                unchanged += 1
            else:
                incumbent, value, unchanged = {**incumbent, last: best_level}, best, 0
        return Path(incumbent, value, noise, last, unchanged)

    def _better(self, candidate: float, incumbent: float, noise: float | None) -> bool:
        margin = NOISE_MULTIPLE * (noise or 0.0)
        if self.spec.response.goal == "minimize":
            return candidate < incumbent - margin
        return candidate > incumbent + margin


def _error(run: RunRecord) -> str:
    """A run's error kind and the last line of its message (an exception's type and text)."""
    lines = (run.get("error_message") or "").strip().splitlines()
    return ": ".join(part for part in (run.get("error_kind"), lines[-1] if lines else None) if part)


def blind_spots(spec, runs: Iterable[Mapping]) -> tuple[list[tuple[str, str]], list[Cell]]:
    """Pairs of factors whose interaction the runs cannot estimate (no 2 x 2 square of their levels with every
    other factor equal), and the fewest runs that would complete one square per pair, around the incumbent."""
    names, runs = list(spec.factors), records(runs)
    points = {tuple(r.levels[n] for n in names) for r in runs}
    incumbent = Greedy(spec).replay(runs).incumbent
    blind, proposal = [], {}
    for a, b in itertools.combinations(range(len(names)), 2):
        if _has_square(points, a, b):
            continue
        blind.append((names[a], names[b]))
        # The square at the incumbent and the next level of each factor: at most the missing corners of it.
        a_other = next(v for v in spec.factors[names[a]].levels if v != incumbent[names[a]])
        b_other = next(v for v in spec.factors[names[b]].levels if v != incumbent[names[b]])
        for va, vb in itertools.product((incumbent[names[a]], a_other), (incumbent[names[b]], b_other)):
            point = {**incumbent, names[a]: va, names[b]: vb}
            if tuple(point[n] for n in names) not in points:
                cell = make_cell(spec.study, point, spec.run_seeds[0])
                proposal[cell.key] = cell
    return blind, list(proposal.values())


def _has_square(points: set[tuple], a: int, b: int) -> bool:
    rest = {}
    for p in points:
        key = p[:a] + p[a + 1:b] + p[b + 1:]
        rest.setdefault(key, set()).add((p[a], p[b]))
    for pairs in rest.values():
        a_levels = {x for x, _ in pairs}
        for a1, a2 in itertools.combinations(a_levels, 2):
            shared = {y for x, y in pairs if x == a1} & {y for x, y in pairs if x == a2}
            if len(shared) >= 2:
                return True
    return False
