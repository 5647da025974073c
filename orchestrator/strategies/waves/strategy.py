"""Adaptive waves: screen, de-alias, refine, stop.

1. SCREEN (designed; ``screen.py``): a two-level fraction of the screening region (each numeric factor at the
   quarter points of its range, a categorical at its two levels), with center runs where the wave has room.
2. DE-ALIAS (designed; ``dealias.py``), once, when the screen's fit (``screen.read``) has a significant effect
   aliased with a two-factor interaction and the budget leaves the model three waves after it: the fold-over that
   clears the significant alias chains, or a D-optimal augmentation where none can. In a four-wave study it never
   runs: the model needs all three waves (measured, docs/benchmarks.md), and the interactions come from the
   second-order fit over every run (``analyze --method surface``) instead.
3. REFINE (proposed; ``refine.py``): a Gaussian process told every finished run, designed or not, proposes the whole
   wave jointly (qLogNEI) over the whole range of every open numeric factor. Inert factors (no term touching them
   with p under 0.2 on a fit with a real noise estimate, no curvature at the center) are fixed at their better
   screening level, a categorical at its better level. A screen that found nothing goes straight here too: the
   acquisition explores where the model is unsure, never the same points again; with nothing to fit a model on
   (fewer than two distinct results), EXPLORE (``explore.py``): a scrambled Sobol wave over the box.
4. STOP: the budget (``max_waves``, default 6; ``max_runs``; ``max_gpu_hours``), ``patience`` proposed waves without
   improving the best cell mean by more than 2 x the noise SD, or a model that expects the next batch to gain
   less than a tenth of the noise SD. The stop reason says which.

Effects come from the designed waves only (``orchestrator/wave_kinds.py``); the recommendation from all runs.
The strategy keeps no state: the screening region is read back from the first wave's runs and each wave's kind
from its stored design, so a resumed study takes the same decisions.
"""

from __future__ import annotations

from orchestrator.cells import Seeds, WavePlan
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.errors import SpecError, WavesweepError
from orchestrator.run_record import RunRecord, records
from orchestrator.strategies.base import Strategy
from orchestrator.strategies.waves.dealias import fold_wave
from orchestrator.strategies.waves.explore import explore_wave
from orchestrator.strategies.waves.refine import refine_wave
from orchestrator.strategies.waves.rules import patience_stop
from orchestrator.strategies.waves.screen import INSETS, Reading, read, screen_wave
from orchestrator.strategies.waves.space import Region, axes, screening_region
from orchestrator.wave_kinds import is_designed

DEFAULT_MAX_WAVES = 6
DE_ALIAS = {"fold_over", "augmentation"}  # the designs of the (one) de-alias wave
# A de-alias wave runs only if at least this many waves are left for the model after it. With 2 (a four-wave study
# de-aliasing at wave 2), the lost model wave cost llm_finetune regret 0.036 against 0.026 (same seeds) and
# hartmann6 0.29 against 0.15 (two bench runs), for designed-fit interaction recall 0.23 against 0.07 on
# llm_finetune, while the surface fit over all 64 runs recalls 0.73-0.87 without it (two seed sets).
MODEL_WAVES_AFTER = 3


class Waves(Strategy):
    name = "waves"
    adaptive = True
    extras = ("search",)

    def __init__(self, spec):
        super().__init__(spec)
        for name, factor in spec.factors.items():
            if factor.kind == "categorical" and len(factor.levels) != 2:
                raise SpecError([(f"factors.{name}.levels", ("mode waves needs two levels for a categorical factor "
                                                             "(or mode grid for more)"), list(factor.levels))])
        self.axes = axes(spec)
        self.max_waves = spec.strategy.max_waves or DEFAULT_MAX_WAVES

    def planned_runs(self) -> int:
        return self.spec.strategy.max_runs or 0  # unknown in advance: it depends on the results

    def check_budget(self, runs_per_wave: int) -> None:
        try:
            choose_fraction(len(self.axes), runs_per_wave // len(self.spec.run_seeds))
        except WavesweepError as exc:
            raise SpecError([("strategy.runs_per_wave", f"mode waves: {exc}", runs_per_wave)]) from None

    def propose(self, known_keys: set[str], runs_per_wave: int, runs: list[RunRecord]) -> WavePlan | None:
        self.stop_reason = None
        runs = list(runs)
        seeds = Seeds(self.spec.study, self.spec.factors, self.spec.run_seeds, known_keys)
        if not runs:
            region = screening_region(self.axes, INSETS[self.spec.strategy.screen])
            plan = screen_wave(region, self.axes, seeds, runs_per_wave)
        else:
            plan = self.budget_stop(runs) or self._patience(runs) or self._after(runs, seeds, runs_per_wave)
        if plan is None or isinstance(plan, str):
            self.stop_reason = plan or "no factor is left open"
            return None
        cells = [c for c in plan.cells if c.key not in known_keys]
        if not cells:
            self.stop_reason = f"the next wave would only repeat recorded runs ({plan.reason})"
            return None
        if why := self.budget_stop(runs, cells):
            self.stop_reason = f"{why} (it would have been: {plan.reason})"
            return None
        return WavePlan(cells, plan.design, plan.reason)

    def _patience(self, runs: list[RunRecord]) -> str | None:
        # Only proposed waves count as moves: a designed wave after the screen (the de-alias wave) was run to learn,
        # not to improve. A token per proposed wave makes each one "move"; designed waves share one.
        runs = records(runs)
        waves = {r.wave: r.get("design") for r in runs}
        return patience_stop(runs, self.spec.response.metric, self.spec.response.goal, list(self.spec.factors),
                             self.spec.strategy.patience,
                             lambda wave_runs: "designed" if is_designed(waves[wave_runs[0].wave])
                             else wave_runs[0].wave)

    def _after(self, runs: list[RunRecord], seeds: Seeds, runs_per_wave: int) -> WavePlan | str:
        metric, goal = self.spec.response.metric, self.spec.response.goal
        region = self._screened_region(runs)
        designed = [r for r in runs if is_designed(r.get("design"))]
        kinds = {r.get("design") for r in runs}
        wave = max(r.wave for r in runs) + 1
        reading = read(region, self.axes, designed, metric, goal)
        if reading is None:
            return "no finished run at the screening points to fit effects on"
        # One de-alias wave at most, before any proposed wave, and only while the budget leaves the model at least
        # MODEL_WAVES_AFTER waves after it: the effects need it, but each designed wave is one the model loses.
        if reading.aliased and not kinds & DE_ALIAS and all(is_designed(k) for k in kinds) \
                and self._waves_left(runs, wave, runs_per_wave) > MODEL_WAVES_AFTER:
            if plan := fold_wave(region, self.axes, seeds, reading, designed, runs_per_wave):
                return plan
        open_, fixed, why = self._open_factors(region, reading)
        if not open_:
            return f"every factor is fixed: {why}"
        plan = refine_wave(self.axes, open_, fixed, runs, metric, goal, seeds, runs_per_wave, wave, why)
        if plan is None:
            return explore_wave(self.axes, open_, fixed, seeds, runs_per_wave, wave,
                                "fewer than two distinct finished results to fit a model on")
        return plan

    def _waves_left(self, runs: list[RunRecord], wave: int, runs_per_wave: int) -> int:
        """Waves the budget still allows, this one included (max_waves, and max_runs in whole waves)."""
        left = self.max_waves - wave + 1
        if self.spec.strategy.max_runs is not None:
            left = min(left, (self.spec.strategy.max_runs - len(runs)) // runs_per_wave)
        return left

    def _open_factors(self, region: Region, reading: Reading) -> tuple[list[str], dict, str]:
        """The numeric factors the model searches, the values of the others, and why, in words."""
        fixed = {**region.fixed}
        said = []
        for name in region.active:
            if name in reading.inert:
                fixed[name] = reading.better[name]
                said.append(f"{name} inert, fixed at {_show(fixed[name])}")
            elif not self.axes[name].numeric:
                fixed[name] = reading.better[name]
                said.append(f"{name} at its better level {_show(fixed[name])}")
        if reading.curvature[0]:
            said.append(f"curvature at the center ({reading.curvature[1]}): no factor called inert")
        open_ = [n for n in region.active if n not in fixed]
        return open_, fixed, "; ".join(said) or "every factor stays open"

    def _screened_region(self, runs: list[RunRecord]) -> Region:
        """The region the first wave screened, read back from its runs (what a resumed study recorded)."""
        number = min(r.wave for r in runs)
        first = [r for r in runs if r.wave == number]
        windows = {}
        for name, axis in self.axes.items():
            values = sorted({r.levels[name] for r in first}, key=lambda v: (str(type(v)), v))
            windows[name] = values[0] if len(values) == 1 else (values[0], values[-1]) if axis.numeric \
                else tuple(values)
        return Region.of(windows)


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
