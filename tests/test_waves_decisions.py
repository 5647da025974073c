"""Each decision of the adaptive waves (screen, de-alias, explore, refine, stop), without Ray: Waves.next_wave on run
records made up from known surfaces, the driver with an in-process executor, and what `wavesweep status` shows."""

from __future__ import annotations

import json
import math
import random
import re
import zlib
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import FactorInfo, fit_effects
from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import Finished, Started
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.strategies import Waves, create_strategy
from orchestrator.strategies.waves.dealias import augment, best_fold
from orchestrator.wave_kinds import is_designed


def spec(factors: dict, study: str = "w", seeds=(0,), goal: str = "minimize", **strategy):
    return parse_spec({"study": study, "experiment": "experiments.synthetic:run", "factors": factors,
                       "response": {"metric": "loss", "goal": goal}, "strategy": {"mode": "waves", **strategy},
                       "seeds": list(seeds)}, check_experiment=False)


def noise(levels: dict, seed: int, sd: float) -> float:
    """Gaussian noise drawn from the point and the seed: the same on every machine and in every process."""
    return sd * random.Random(zlib.crc32(json.dumps([levels, seed], sort_keys=True).encode())).gauss(0.0, 1.0)


def record(plan, wave: int, value) -> list[dict]:
    return [{"wave": wave, "design": plan.design, "cell_key": c.key, "seed": c.seed, "status": "COMPLETE",
             **{f"param.{n}": v for n, v in c.levels.items()}, "metric.loss": value(c.levels, c.seed),
             "metric.gpu_s": 0.0, "metric.wall_s": 1.0} for c in plan.cells]


def simulate(strategy: Waves, runs_per_wave: int, value, max_waves: int = 10):
    """Run the strategy to its stop on ``value(levels, seed)``: the plans it made and the runs."""
    runs, known, plans = [], set(), []
    while len(plans) < max_waves and (plan := strategy.next_wave(known, runs_per_wave, runs)) is not None:
        plans.append(plan)
        runs += record(plan, len(plans), value)
        known |= {c.key for c in plan.cells}
    return plans, runs


def numbers_after(text: str, name: str) -> float:
    return float(re.search(rf"{name}=([-\d.e+]+)", text).group(1))


# --- screen: the first wave -----------------------------------------------------------------------------------------

def test_the_first_wave_screens_the_box_with_center_runs_where_the_wave_has_room():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    first = strategy.next_wave(set(), 10)
    assert first.design == "full_factorial"
    # The quarter points of each range, not its ends (docs/design.md says why), and the center.
    assert first.reason == "screen: 2^2 full factorial x 2 seeds + 2 center runs over x [0.25, 0.75], y [0.25, 0.75]"
    points = [(c.levels["x"], c.levels["y"]) for c in first.cells]
    assert sorted(set(points[:8])) == [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    assert points[8:] == [(0.5, 0.5), (0.5, 0.5)] and len({c.key for c in first.cells}) == 10


def test_screen_corners_puts_the_fraction_at_the_ends_of_each_range():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 2.0]}}, screen="corners"))
    first = strategy.next_wave(set(), 10)
    assert first.reason == "screen: 2^2 full factorial x 2 seeds + 2 center runs over x [0, 1], y [0, 2]"
    assert {(c.levels["x"], c.levels["y"]) for c in first.cells[:8]} == {(0.0, 0.0), (0.0, 2.0), (1.0, 0.0), (1.0, 2.0)}


def test_the_screen_of_a_log_and_an_integer_factor_uses_their_scale():
    strategy = create_strategy(spec({"lr": {"levels": [1e-4, 1e-2], "scale": "log"}, "rank": {"levels": [4, 16]}}))
    first = strategy.next_wave(set(), 6)
    assert sorted({c.levels["lr"] for c in first.cells[:4]}) == pytest.approx([10 ** -3.5, 10 ** -2.5], rel=1e-5)
    assert {c.levels["rank"] for c in first.cells[:4]} == {7, 13}  # 4 + 12 x 0.25 and x 0.75, integers
    centers = [(c.levels["lr"], c.levels["rank"]) for c in first.cells[4:]]
    # The geometric middle of lr, the integer middle of rank.
    assert len(centers) == 2 and all(lr == pytest.approx(1e-3) and rank == 10 for lr, rank in centers)


# --- de-alias: fold-over, augmentation -------------------------------------------------------------------

def test_an_aliased_interaction_is_de_aliased_before_the_model_takes_over():
    # Seven factors in 16 runs: the 2^(7-3) IV screen aliases a:b with c:e and f:g. No fold-over clears all three,
    # so the de-alias wave is a D-optimal augmentation, after which every two-factor interaction is estimable and
    # the fit names a:b alone.
    names = "abcdefg"
    strategy = create_strategy(spec({n: {"levels": [-1.0, 1.0]} for n in names}), 16)
    value = lambda lv, s: 2 * lv["a"] + lv["b"] + 3 * lv["a"] * lv["b"] + noise(lv, s, 0.02)
    first = strategy.next_wave(set(), 16)
    runs = record(first, 1, value)
    second = strategy.next_wave({c.key for c in first.cells}, 16, runs)
    assert first.reason.startswith("screen: 2^(7-3) resolution IV")
    assert second.design == "augmentation" and is_designed(second.design)
    assert second.reason.startswith("de-alias: D-optimal augmentation: 16 corner points that, with the 16 run, make "
                                    "every two-factor interaction estimable")
    assert "a:b is aliased with c:e, f:g" in second.reason
    both = runs + record(second, 2, value)
    assert all(r[f"param.{n}"] in (-0.5, 0.5) for r in both for n in names)  # the screening region's corners
    frame = pd.DataFrame({**{n: [r[f"param.{n}"] for r in both] for n in names},
                          "loss": [r["metric.loss"] for r in both]})
    fit = fit_effects(frame, {n: FactorInfo((-0.5, 0.5)) for n in names}, "loss")
    assert not fit.not_estimable and all(not t.aliased_with for t in fit.terms)
    assert {t.term for t in fit.terms if t.significant and t.order == 2} == {"a:b"}
    # The wave after it is the model's, told all 32 runs.
    third = strategy.next_wave({r["cell_key"] for r in both}, 16, both)
    assert third.design == "model" and "told 32 finished runs" in third.reason


def test_a_four_wave_study_leaves_every_wave_after_the_screen_to_the_model():
    # The screen of the test above, in a study of four waves: a de-alias wave would leave the model two, so the
    # second wave is the model's (MODEL_WAVES_AFTER), and the screen's aliased chains stay for the surface fit.
    names = "abcdefg"
    strategy = create_strategy(spec({n: {"levels": [-1.0, 1.0]} for n in names}, max_waves=4), 16)
    value = lambda lv, s: 2 * lv["a"] + lv["b"] + 3 * lv["a"] * lv["b"] + noise(lv, s, 0.02)
    first = strategy.next_wave(set(), 16)
    runs = record(first, 1, value)
    second = strategy.next_wave({c.key for c in first.cells}, 16, runs)
    assert second.design == "model" and "told 16 finished runs" in second.reason


def test_best_fold_clears_what_a_fold_over_can_and_augment_finds_estimable_points():
    # 2^(4-1) IV (D = ABC): AB = CD. Folding on one factor clears both; on every factor it reproduces the fraction.
    letters, clear = best_fold(("ABCD",), "ABCD", [{"AB", "CD"}])
    assert letters == "A" and clear == 2
    # Augmenting those 8 runs by 8 corners for the full two-factor model: the other half, the full 2^4.
    old = np.array([[a, b, c, a * b * c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    new, model = augment(old, 8, [(0, 1), (2, 3)])
    assert model == "every two-factor interaction"
    both = {tuple(r) for r in np.vstack([old, new])}
    assert len(both) == 16


# --- explore: nothing significant -----------------------------------------------------------------------------------

def test_a_screen_that_finds_nothing_goes_to_the_model_which_looks_inside_the_box():
    names = [f"x{i}" for i in range(5)]
    strategy = create_strategy(spec({n: {"levels": [0.0, 1.0]} for n in names}))
    # A bump between the screen's levels that the screen cannot see: flat and noisy there.
    value = lambda lv, s: -3 * math.exp(-40 * sum((v - 0.5) ** 2 for v in lv.values())) + noise(lv, s, 0.05)
    first = strategy.next_wave(set(), 16)
    runs = record(first, 1, value)
    second = strategy.next_wave({c.key for c in first.cells}, 16, runs)
    assert second.design == "model" and not is_designed(second.design)
    screened = {tuple(c.levels.values()) for c in first.cells}
    proposed = [tuple(c.levels.values()) for c in second.cells]
    assert len(proposed) == 16 and not screened & set(proposed)  # never the same points again
    assert all(0 <= v <= 1 for p in proposed for v in p)
    assert all(len({p[i] for p in proposed}) >= 3 for i in range(5))  # more than the screen's two levels


def test_with_nothing_to_fit_a_model_on_the_next_wave_explores_the_box():
    names = [f"x{i}" for i in range(3)]
    strategy = create_strategy(spec({n: {"levels": [0.0, 1.0]} for n in names}))
    first = strategy.next_wave(set(), 8)
    runs = record(first, 1, lambda lv, s: 1.0)  # every run the same: no model can be fitted
    second = strategy.next_wave({c.key for c in first.cells}, 8, runs)
    assert second.design == "space_filling" and not is_designed(second.design)
    assert second.reason.startswith("explore: fewer than two distinct finished results to fit a model on")
    explored = [tuple(c.levels.values()) for c in second.cells]
    assert len(explored) == 8 and all(len({p[i] for p in explored}) == 8 for i in range(3))
    assert all(0 <= v <= 1 for p in explored for v in p)


# --- refine: the model's waves ---------------------------------------------------------------------------------------

def test_refine_fixes_an_inert_factor_and_searches_the_others_over_their_whole_range():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 2.0]}, "y": {"levels": [0.0, 1.0]},
                                     "z": {"levels": [0.0, 1.0]}}))
    # Linear; z inert, and its noise too (the noise depends on x, y and the seed only), so every contrast of z is
    # exactly 0 and no term touches it. 2^3 x 2 seeds: an OLS fit with 9 residual df, no center runs.
    value = lambda lv, s: 1 + lv["x"] + 2 * lv["y"] + noise({"x": lv["x"], "y": lv["y"]}, s, 0.01)
    plans, runs = simulate(strategy, 16, value, max_waves=2)
    assert plans[0].reason.endswith("2^3 full factorial x 2 seeds over x [0.5, 1.5], y [0.25, 0.75], z [0.25, 0.75]")
    refine = plans[1]
    assert refine.design == "model" and refine.reason.startswith("refine: z inert, fixed at ")
    assert "points proposed jointly over x, y by a Gaussian process and qLogNEI, told 16 finished runs" in refine.reason
    assert len({c.levels["z"] for c in refine.cells}) == 1
    assert all(0 <= c.levels["x"] <= 2 and 0 <= c.levels["y"] <= 1 for c in refine.cells)
    # Jointly chosen, so not 16 copies of one point.
    assert len({(c.levels["x"], c.levels["y"]) for c in refine.cells}) >= 8


def test_refine_finds_an_interior_optimum_the_screen_only_brackets():
    # (x - 0.6)^2 + (y - 0.3)^2 over [0, 1]^2: minimum 0 strictly inside the box.
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, max_waves=4))
    value = lambda lv, s: (lv["x"] - 0.6) ** 2 + (lv["y"] - 0.3) ** 2 + noise(lv, s, 0.002)
    plans, runs = simulate(strategy, 10, value, max_waves=4)
    assert [p.design for p in plans][1:] == ["model"] * (len(plans) - 1) and len(plans) >= 3
    best = min(runs, key=lambda r: r["metric.loss"])
    # Stated tolerance: the best run within 0.08 of the optimum in each factor (the screen's nearest point is 0.3
    # away in x, 0.2 in y).
    assert abs(best["param.x"] - 0.6) <= 0.08 and abs(best["param.y"] - 0.3) <= 0.08


def test_the_model_stops_the_study_when_it_expects_nothing_beyond_the_noise():
    from orchestrator.cells import Seeds
    from orchestrator.strategies.waves.refine import refine_wave
    from orchestrator.strategies.waves.space import axes

    s = spec({"x": {"levels": [0.0, 1.0]}})
    # A plateau measured densely and repeatedly: no point is expected to beat it.
    runs = [{"wave": 1, "status": "COMPLETE", "param.x": x / 20, "metric.loss": 1.0 + noise({"x": x}, seed, 0.05)}
            for x in range(21) for seed in range(6)]
    said = refine_wave(axes(s), ["x"], {}, runs, "loss", "minimize", Seeds("w", ["x"], [0]), 8, 2, "test")
    assert isinstance(said, str) and said.startswith("the model expects no improvement beyond the noise")


# --- stopping ------------------------------------------------------------------------------------------------------

def test_patience_counts_only_proposed_waves_that_did_not_improve_beyond_noise():
    s = spec({"x": {"levels": [0.0, 10.0]}, "y": {"levels": [0.0, 1.0]}}, patience=2)
    strategy = create_strategy(s)

    def wave(number, design, best):  # two runs of the wave's best point 0.05 apart, one worse run
        return [{"wave": number, "design": design, "status": "COMPLETE", "param.x": float(number), "param.y": 0.0,
                 "metric.loss": v} for v in (best, best + 0.05)] + \
               [{"wave": number, "design": design, "status": "COMPLETE", "param.x": 10.0 - number, "param.y": 1.0,
                 "metric.loss": best + 1}]

    # Noise SD of the pairs: 0.05 / sqrt(2) = 0.0354, so 2 x SD = 0.0707. Waves 3 and 4 (the model's) improved on
    # wave 1 by 0.05 only; wave 2 (a fold-over) did not improve either, and does not count.
    runs = wave(1, "full_factorial", 1.0) + wave(2, "fold_over", 1.0) + wave(3, "model", 0.95) + \
        wave(4, "model", 0.95)
    assert strategy.next_wave(set(), 6, runs) is None
    assert strategy.stop_reason == ("no improvement: the last 2 waves that moved did not beat the best cell mean loss "
                                    "1.025 (wave 1, x=1.0, y=0.0) by more than 0.0707 (2 x noise SD 0.0354); "
                                    "patience 2")
    # The model's first wave improved by 0.1 > 0.0707: the count restarts, and one quiet wave is not enough.
    runs = wave(1, "full_factorial", 1.0) + wave(2, "model", 0.9) + wave(3, "model", 0.9)
    assert strategy._patience(runs) is None


def test_max_waves_and_max_runs_stops_say_why():
    s = spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, max_waves=2)
    strategy = create_strategy(s)
    plans, runs = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + lv["y"] + noise(lv, s, 0.01))
    assert len(plans) == 2 and strategy.stop_reason == "max_waves reached: 2 waves run, max_waves 2"

    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, max_runs=12))
    plans, runs = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + lv["y"] + noise(lv, s, 0.01))
    assert len(runs) == 8
    assert strategy.stop_reason.startswith("the next wave would need 8 runs, 4 left of max_runs 12 (it would have "
                                           "been: refine: ")


def test_plan_and_run_choose_the_same_mode(sqlite_url):
    from orchestrator.reporting.plan import make_plan
    from orchestrator.strategies import wave_size

    auto = spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, study="auto", mode="auto")
    fixed = auto.model_copy(update={"strategy": auto.strategy.model_copy(update={"runs_per_wave": 8})})
    for study, slots, mode in ((auto, 1, "greedy"), (auto, 8, "waves"), (fixed, 1, "waves")):
        plan = make_plan(study, wave_size(study, slots), None)
        outcome = run_study(study.model_copy(update={"study": f"{mode}-{slots}"}), Store(sqlite_url),
                            InProcessExecutor(lambda lv, s: lv["x"] + lv["y"], gpu_s=1.0, slots=slots))
        assert outcome.mode == mode and plan.mode == mode, (slots, study.strategy)


# --- the GPU-hours budget through the driver, the stored reason, `wavesweep status` --------------------------------

class InProcessExecutor:
    """The executor's interface without Ray: each run costs ``gpu_s`` GPU-seconds and returns ``value``."""

    def __init__(self, value, gpu_s: float, slots: int = 10):
        self.value, self.gpu_s, self._slots = value, gpu_s, slots

    def check_fits(self, spec) -> None:
        """Every request fits: this executor has no nodes to outgrow."""

    def check_artifacts(self, spec) -> None:
        """One process: every run sees the artifacts."""

    def slots(self, spec) -> int:
        return self._slots

    def capacity(self, spec) -> tuple[float, float]:
        return 0.0, float(self._slots)

    @contextmanager
    def session(self, spec):
        yield _InProcessAttempts(self)


class _InProcessAttempts:
    """Runs each submitted attempt at once, when the driver next steps."""

    def __init__(self, executor):
        self.executor, self.live = executor, {}

    def request(self, job, alone):
        return 0.0, 1.0

    def used(self):
        return 0.0, float(len(self.live))

    def submit(self, job, number, alone):
        self.live[job.cell.key] = job

    @property
    def current(self):  # cell key -> its live attempt, as Attempts has it
        return self.live

    def running_for(self, key):
        return None

    def step(self, poll=None, wait_s=0.5):
        jobs, self.live = list(self.live.values()), {}
        for job in jobs:
            now = datetime.now(UTC)
            yield Started(job.cell.key, "here", "cuda:0", now)
            metrics = {"loss": self.executor.value(job.cell.levels, job.cell.seed), "gpu_s": self.executor.gpu_s,
                       "wall_s": 1.0}
            yield Finished(job.cell.key, RunResult(status=RunStatus.COMPLETE, metrics=metrics, started_at=now,
                                                   finished_at=now, wall_s=1.0))


def bowl(x0: float, y0: float, sd: float = 0.005):
    return lambda lv, s: (lv["x"] - x0) ** 2 + (lv["y"] - y0) ** 2 + noise(lv, s, sd)


def gpu_spec(**strategy):
    return spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, study="gpu", runs_per_wave=10,
                **strategy)


def test_the_driver_stops_before_a_wave_that_would_pass_max_gpu_hours_and_stores_why(sqlite_url):
    store = Store(sqlite_url)
    # 10 runs of 0.5 GPU-h: 5 GPU-h spent, 2 left; the next wave (the model's: 10 runs, ~5 GPU-h) does not fit.
    outcome = run_study(gpu_spec(max_gpu_hours=7.0), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=1800))
    assert outcome.ran == 10 and len(store.waves("gpu")) == 1
    reason = ("the next wave would need ~5 GPU-h (10 runs at 0.5 GPU-h each), 2 left of max_gpu_hours 7 (it would "
              "have been: refine: ")
    assert outcome.stop_reason.startswith(reason)
    info = store.study_info("gpu")
    assert info["stop_reason"] == outcome.stop_reason and info["stopped_at"] is not None

    # A larger budget: the study goes on (the stop is cleared by the new wave), and stops once it is spent.
    outcome = run_study(gpu_spec(max_gpu_hours=10.0), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=1800))
    assert outcome.ran == 10 and outcome.stop_reason == "GPU-hours budget spent: 10 GPU-h used, max_gpu_hours 10"
    assert store.study_info("gpu")["stop_reason"] == outcome.stop_reason


def test_a_cpu_study_counts_run_hours(sqlite_url):
    store = Store(sqlite_url)
    # gpu_s 0 (no GPU): each run counts its wall time, 1 s; 10 runs = 10 s, and the next wave would need 10 s more.
    budget = 14 / 3600
    outcome = run_study(gpu_spec(max_gpu_hours=budget), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=0.0))
    assert outcome.ran == 10 and outcome.stop_reason.startswith("the next wave would need ~0.00278 GPU-h (10 runs")


def test_status_shows_why_the_study_stopped(sqlite_url):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    store = Store(sqlite_url)
    outcome = run_study(gpu_spec(max_gpu_hours=7.0), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=1800))
    store.close()
    runner = CliRunner()
    one = runner.invoke(app, ["status", "gpu", "--store", sqlite_url])
    assert one.exit_code == 0, one.output
    assert "Stopped (" in one.output and outcome.stop_reason in one.output.replace("\n", "")
    every = runner.invoke(app, ["status", "--store", sqlite_url], env={"COLUMNS": "400"})
    assert every.exit_code == 0 and "stopped because" in every.output


def test_the_gpu_hours_budget_stops_the_grid_too(sqlite_url):
    grid = parse_spec({"study": "g", "experiment": "experiments.synthetic:run",
                       "factors": {"x": {"levels": [0, 1, 2]}, "y": {"levels": [0, 1]}},
                       "response": {"metric": "loss"}, "seeds": [0, 1],
                       "strategy": {"mode": "grid", "runs_per_wave": 4, "max_gpu_hours": 2.5}}, check_experiment=False)
    store = Store(sqlite_url)
    outcome = run_study(grid, store, InProcessExecutor(lambda lv, s: lv["x"] + lv["y"], gpu_s=900))
    # 4 runs of 0.25 GPU-h per wave: 1 GPU-h a wave; after two (2 GPU-h), a third would pass 2.5.
    assert outcome.ran == 8 and len(store.waves("g")) == 2
    assert outcome.stop_reason.startswith("the next wave would need ~1 GPU-h (4 runs at 0.25 GPU-h each), 0.5 left "
                                          "of max_gpu_hours 2.5 (")
    finished = run_study(grid.model_copy(update={"strategy": grid.strategy.model_copy(update={"max_gpu_hours": None})}),
                         store, InProcessExecutor(lambda lv, s: lv["x"] + lv["y"], gpu_s=900))
    assert finished.ran == 4 and store.study_info("g")["stop_reason"] == "every cell of the full factorial is recorded"
