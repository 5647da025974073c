"""Each decision of the adaptive waves, without Ray: Waves.next_wave on run records made up from known surfaces,
the driver with an in-process executor, and what `wavesweep status` shows of a stop."""

from __future__ import annotations

import json
import math
import random
import re
import zlib
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd
import pytest

from orchestrator.analysis import FactorInfo, fit_effects
from orchestrator.designs.definitive_screening import runs_of
from orchestrator.driver import run_study
from orchestrator.executor import Finished, Started
from orchestrator.spec import parse_spec
from orchestrator.status import RunStatus
from orchestrator.store import RunResult, Store
from orchestrator.strategies import Waves, create_strategy
from orchestrator.strategies.waves_rules import borderline_terms, patience_stop


def spec(factors: dict, study: str = "w", seeds=(0,), goal: str = "minimize", **strategy):
    return parse_spec({"study": study, "experiment": "experiments.synthetic:run", "factors": factors,
                       "response": {"metric": "loss", "goal": goal}, "strategy": {"mode": "waves", **strategy},
                       "seeds": list(seeds)}, check_experiment=False)


def noise(levels: dict, seed: int, sd: float) -> float:
    """Gaussian noise drawn from the point and the seed: the same on every machine and in every process."""
    return sd * random.Random(zlib.crc32(json.dumps([levels, seed], sort_keys=True).encode())).gauss(0.0, 1.0)


def record(plan, wave: int, value) -> list[dict]:
    return [{"wave": wave, "cell_key": c.key, "seed": c.seed, "status": "COMPLETE",
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


# --- replicates when a decision hinges on a CI --------------------------------------------------------------------

# A fixed noise pattern for the 8 runs of the first wave (2^2 x 2 seeds): with x's effect 0.34, the Holm-adjusted
# p of x lands between alpha and 2.5 alpha, though its unadjusted 95% CI misses 0.
PATTERN = [0.30, -0.20, 0.10, -0.25, -0.10, 0.20, 0.05, -0.10]


def test_a_borderline_main_effect_gets_one_replicate_wave_then_a_decision():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    first = strategy.next_wave(set(), 8)
    assert first.reason == "first wave over the whole box: 2^2 full factorial x 2 seeds over x, y"
    errors = dict(zip([c.key for c in first.cells], PATTERN))
    runs = record(first, 1, lambda levels, seed: 1 + 0.34 * (2 * levels["x"] - 1))
    for run in runs:
        run["metric.loss"] += errors[run["cell_key"]]
    # The premise: x is borderline in the fit the strategy makes.
    fit = fit_effects(_frame(runs), {"x": FactorInfo((0.0, 1.0)), "y": FactorInfo((0.0, 1.0))}, "loss")
    assert [t.term for t in borderline_terms(fit, 0.05)] == ["x"] and 0.05 <= fit.term("x").p_adjusted < 0.125

    second = strategy.next_wave({c.key for c in first.cells}, 8, runs)
    assert second.design == "replicates"
    x = fit.term("x")
    assert second.reason.startswith(f"replicate before deciding: x {x.estimate:+.3g} (95% CI [{x.ci_low:.3g}, "
                                    f"{x.ci_high:.3g}], adjusted p {x.p_adjusted:.3g}, between alpha 0.05 and 0.125)")
    # Sized by runs_needed: enough runs in all to detect the estimate with 80% power, whole copies of the corners.
    needed = int(re.search(r"\((\d+) runs in all would detect", second.reason).group(1))
    assert len(second.cells) == 4 * math.ceil((needed - 8) / 4) and len(second.cells) <= 8
    # The corner points again (the region does not move), at seeds none of them has run at.
    points = {tuple(c.levels.values()) for c in first.cells}
    assert {tuple(c.levels.values()) for c in second.cells} == points
    assert not {c.key for c in second.cells} & {c.key for c in first.cells}

    # Still borderline after the replicates (same pattern again): no second replicate wave in a row.
    more = record(second, 2, lambda levels, seed: 1 + 0.2 * (2 * levels["x"] - 1))
    for run, e in zip(more, PATTERN):
        run["metric.loss"] += e
    third = strategy.next_wave({c.key for c in first.cells + second.cells}, 8, runs + more)
    assert third is not None and third.design != "replicates"


def _frame(runs):
    import pandas as pd

    return pd.DataFrame({"x": [r["param.x"] for r in runs], "y": [r["param.y"] for r in runs],
                         "loss": [r["metric.loss"] for r in runs], "status": [r["status"] for r in runs]})


def test_a_clear_effect_moves_without_replicates():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    plans, _ = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + noise(lv, s, 0.01), max_waves=2)
    assert plans[1].design != "replicates" and "x down" in plans[1].reason


# --- curvature: a central composite wave, then the fitted optimum ---------------------------------------------------

def bowl(x0: float, y0: float, cross: float = 0.0, sd: float = 0.005):
    return lambda lv, s: ((lv["x"] - x0) ** 2 + (lv["y"] - y0) ** 2 + cross * (lv["x"] - x0) * (lv["y"] - y0)
                          + noise(lv, s, sd))


def test_curvature_without_main_effects_runs_a_face_centred_ccd_inside_the_box():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    plans, _ = simulate(strategy, 10, bowl(0.5, 0.5), max_waves=2)
    assert plans[0].reason.endswith("2^2 full factorial x 2 seeds + 2 center runs over x, y")
    ccd = plans[1]
    assert ccd.design == "central_composite"
    assert re.match(r"curvature \(2 center runs .* vs corners .*, t .*, p .*\): face-centred central composite over "
                    r"x, y: 4 axial points \+ 2 center runs \(the corners are run\)", ccd.reason)
    points = [(c.levels["x"], c.levels["y"]) for c in ccd.cells]
    assert sorted(points[:4]) == [(0.0, 0.5), (0.5, 0.0), (0.5, 1.0), (1.0, 0.5)]  # on the faces: inside the box
    assert points[4:] == [(0.5, 0.5), (0.5, 0.5)] and len({c.key for c in ccd.cells}) == 6


def test_the_ccd_axial_points_of_a_log_and_an_integer_factor_stay_in_the_box():
    strategy = create_strategy(spec({"lr": {"levels": [1e-4, 1e-2], "scale": "log"}, "rank": {"levels": [4, 16]}}))

    def value(lv, s):  # a bowl in log10(lr) and rank, centred in the box
        return (math.log10(lv["lr"]) + 3) ** 2 + ((lv["rank"] - 10) / 6) ** 2 + noise(lv, s, 0.005)

    plans, runs = simulate(strategy, 10, value, max_waves=2)
    assert plans[1].design == "central_composite"
    axial = {(float(f"{c.levels['lr']:.6g}"), c.levels["rank"]) for c in plans[1].cells}
    assert axial == {(1e-4, 10), (1e-2, 10), (1e-3, 4), (1e-3, 16), (1e-3, 10)}  # geometric center for log
    assert all(1e-4 <= r["param.lr"] <= 1e-2 and 4 <= r["param.rank"] <= 16 for r in runs)


def test_after_the_ccd_the_study_moves_to_the_fitted_minimum_and_narrows_around_it():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    # A CCD on the box made up by hand (corners x 2 seeds + 2 centers, then axial points + 2 centers), on a bowl
    # whose minimum (0.6, 0.4) is inside the window and off center.
    value = bowl(0.6, 0.4, cross=0.3)
    first = strategy.next_wave(set(), 10)
    runs = record(first, 1, value)
    from orchestrator.strategies.base import WavePlan

    ccd = strategy._surface_wave({"x": (0.0, 1.0), "y": (0.0, 1.0)}, ["x", "y"],
                                 [r for r in runs if r["param.x"] in (0, 1) and r["param.y"] in (0, 1)],
                                 {c.key for c in first.cells}, 10, "made up")
    assert ccd.design == "central_composite"
    runs += record(WavePlan(ccd.cells, ccd.design, ccd.reason), 2, value)
    step = strategy.next_wave({r["cell_key"] for r in runs}, 10, runs)
    assert step.reason.startswith("response surface from the central composite (")
    assert "fitted minimum at x=" in step.reason and "inside the window: move there" in step.reason
    assert abs(numbers_after(step.reason, "x") - 0.6) < 0.01 and abs(numbers_after(step.reason, "y") - 0.4) < 0.01
    # Half the width, centred on the optimum (clipped to the box): x [0.35, 0.85], y [0.15, 0.65].
    xs, ys = {c.levels["x"] for c in step.cells}, {c.levels["y"] for c in step.cells}
    assert min(xs) == pytest.approx(0.35, abs=0.01) and max(xs) == pytest.approx(0.85, abs=0.01)
    assert min(ys) == pytest.approx(0.15, abs=0.01) and max(ys) == pytest.approx(0.65, abs=0.01)


def test_a_saddle_moves_to_the_best_observed_cell_instead():
    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}))
    # Curvature at the center is positive overall (4x^2 - y^2 about the center), but y's is negative: a saddle.
    plans, _ = simulate(strategy, 10, lambda lv, s: (4 * (lv["x"] - 0.5) ** 2 - (lv["y"] - 0.5) ** 2
                                                     + noise(lv, s, 0.005)), max_waves=3)
    assert plans[1].design == "central_composite"
    assert "has a saddle" in plans[2].reason and "move x, y to the best observed cell x=0.5, y=0" in plans[2].reason


def test_six_factors_in_a_resolution_iv_fraction_get_a_definitive_screening_wave():
    names = [f"x{i}" for i in range(6)]
    strategy = create_strategy(spec({n: {"levels": [0.0, 1.0]} for n in names}))

    def value(lv, s):  # curved in x0 and x1 only, no main effects over the box
        return (lv["x0"] - 0.5) ** 2 + (lv["x1"] - 0.5) ** 2 + noise(lv, s, 0.002)

    plans, _ = simulate(strategy, 18, value, max_waves=3)
    assert "2^(6-2) resolution IV" in plans[0].reason and plans[0].reason.endswith("+ 2 center runs over "
                                                                                     "x0, x1, x2, x3, x4, x5")
    dsd = plans[1]
    assert dsd.design == "definitive_screening" and len(dsd.cells) == runs_of(6) == 13
    assert "definitive screening over x0, x1, x2, x3, x4, x5: 13 runs" in dsd.reason
    assert all(c.levels[n] in (0.0, 0.5, 1.0) for c in dsd.cells for n in names)
    # The step after it: x0 and x1 are curved (their quadratics), the others inert and fixed.
    step = plans[2].reason
    assert step.startswith("response surface from the definitive screening")
    assert all(f"x{i} inert, fixed at" in step for i in range(2, 6))
    assert "fitted minimum at x0=" in step
    assert abs(numbers_after(step, "x0") - 0.5) < 0.02 and abs(numbers_after(step, "x1") - 0.5) < 0.02


def test_a_saturated_wave_with_large_interactions_is_judged_by_lenth_not_stopped_on():
    # The LLM fine-tuning surface's first wave: 2^(7-3) IV in 16 runs leaves 1 residual df, and its interactions
    # are large. Pooling them into the error (the old rule) called every factor inert and stopped after one wave
    # with regret 0.57; judged by Lenth's method, lr:batch_size is significant and aliased, so the fraction folds.
    from experiments.surfaces import get_surface

    surface = get_surface("llm_finetune")
    study = surface.spec("llm", runs_per_wave=16)
    study["response"]["metric"] = "loss"  # the name record() writes
    strategy = create_strategy(parse_spec(study, check_experiment=False), 16)
    plans, runs = simulate(strategy, 16, lambda lv, s: surface.sample(lv, s), max_waves=2)
    assert plans[0].reason.startswith("first wave over the whole box: 2^(7-3) resolution IV")
    assert plans[1].design == "fold_over" and "learning_rate:batch_size is aliased with" in plans[1].reason


def test_nothing_significant_by_lenth_replicates_before_calling_factors_inert():
    # Five equal main effects in the 8 runs of a 2^(5-2) III fraction: no residual df, and Lenth's pseudo SE
    # (which assumes most effects are null) is inflated by them, so nothing is significant. That is no evidence of
    # inert factors: replicate first.
    names = [f"x{i}" for i in range(5)]
    strategy = create_strategy(spec({n: {"levels": [-1, 1]} for n in names}))
    plans, runs = simulate(strategy, 8, lambda lv, s: sum(lv.values()) + noise(lv, s, 0.1), max_waves=2)
    frame = pd.DataFrame({**{n: [r[f"param.{n}"] for r in runs[:8]] for n in names},
                          "loss": [r["metric.loss"] for r in runs[:8]]})
    fit = fit_effects(frame, {n: FactorInfo((-1, 1)) for n in names}, "loss")
    assert fit.method == "lenth" and not any(t.significant for t in fit.terms)
    assert plans[1].design == "replicates"
    assert "no term is significant by Lenth's pseudo standard error" in plans[1].reason
    assert len(plans[1].cells) == 8 and {c.seed for c in plans[1].cells}.isdisjoint({c.seed for c in plans[0].cells})


# --- stopping ------------------------------------------------------------------------------------------------------

def moving_runs(bests: list[float], regions: list[float]) -> list[dict]:
    """One wave per entry: the ends of the window [r, r + 1] in x (y fixed) and 2 center runs 0.05 apart, whose
    mean (best + 0.025) is the wave's best cell."""
    runs = []
    for wave, (best, low) in enumerate(zip(bests, regions), start=1):
        for x, value in ((low, best + 1), (low + 1, best + 1), (low + 0.5, best), (low + 0.5, best + 0.05)):
            runs.append({"wave": wave, "status": "COMPLETE", "param.x": x, "param.y": 0, "metric.loss": value})
    return runs


def test_patience_counts_only_waves_that_moved_without_improving_beyond_noise():
    s = spec({"x": {"levels": [0.0, 10.0]}, "y": {"levels": [0, 1]}}, patience=2)
    strategy = create_strategy(s)
    # Noise SD of the center pairs: 0.05 / sqrt(2) = 0.0354, so 2 x SD = 0.0707. Waves 2 and 3 moved the region
    # and improved on wave 1 by 0.05 only.
    runs = moving_runs([1.0, 0.95, 0.95], [0.0, 2.0, 4.0])
    assert strategy.next_wave(set(), 6, runs) is None
    assert strategy.stop_reason == ("no improvement: the last 2 waves that moved did not beat the best cell mean loss "
                                    "1.025 (wave 1, x=0.5, y=0) by more than 0.0707 (2 x noise SD 0.0354); "
                                    "patience 2")

    def stop(bests, regions, patience=2):
        return patience_stop(moving_runs(bests, regions), "loss", "minimize", ["x", "y"], patience, strategy._region)

    assert stop([1.0, 0.9, 0.95], [0.0, 2.0, 4.0]) is None  # wave 2 improved by 0.1 > 0.0707: the count restarts
    assert stop([1.0, 1.0, 1.0], [0.0, 0.0, 2.0]) is None  # wave 2 stayed on wave 1's region: it does not count
    assert stop([1.0, 1.0, 1.0], [0.0, 0.0, 2.0], patience=1) is not None


def test_max_waves_max_runs_and_converged_stops_say_why():
    s = spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, max_waves=2)
    strategy = create_strategy(s)
    plans, runs = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + lv["y"] + noise(lv, s, 0.01))
    assert len(plans) == 2 and strategy.stop_reason == "max_waves reached: 2 waves run, max_waves 2"

    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, max_runs=12))
    plans, runs = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + lv["y"] + noise(lv, s, 0.01))
    assert len(runs) == 8
    # The next wave (2^2 x 2 seeds, less the 2 corners shared with the first) would pass max_runs: not started.
    assert strategy.stop_reason.startswith("the next wave would need 6 runs, 4 left of max_runs 12 (it would have "
                                           "been: x down")

    strategy = create_strategy(spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, patience=99))
    plans, runs = simulate(strategy, 8, lambda lv, s: 1 + 2 * lv["x"] + lv["y"] + noise(lv, s, 0.01))
    assert strategy.stop_reason.startswith("converged: x down")
    assert strategy.stop_reason.endswith("every numeric window is below 1/8 of its range")


# --- the GPU-hours budget through the driver, the stored reason, `wavesweep status` --------------------------------

class InProcessExecutor:
    """The executor's interface without Ray: each run costs ``gpu_s`` GPU-seconds and returns ``value``."""

    def __init__(self, value, gpu_s: float, slots: int = 10):
        self.value, self.gpu_s, self._slots = value, gpu_s, slots

    def check_fits(self, spec) -> None:
        """Every request fits: this executor has no nodes to outgrow."""

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

    def running_for(self, key):
        return None

    def step(self, poll=None):
        jobs, self.live = list(self.live.values()), {}
        for job in jobs:
            now = datetime.now(UTC)
            yield Started(job.cell.key, "here", "cuda:0", now)
            metrics = {"loss": self.executor.value(job.cell.levels, job.cell.seed), "gpu_s": self.executor.gpu_s,
                       "wall_s": 1.0}
            yield Finished(job.cell.key, RunResult(status=RunStatus.COMPLETE, metrics=metrics, started_at=now,
                                                   finished_at=now, wall_s=1.0))


def gpu_spec(**strategy):
    return spec({"x": {"levels": [0.0, 1.0]}, "y": {"levels": [0.0, 1.0]}}, study="gpu", runs_per_wave=10,
                **strategy)


def test_the_driver_stops_before_a_wave_that_would_pass_max_gpu_hours_and_stores_why(sqlite_url):
    store = Store(sqlite_url)
    # 10 runs of 0.5 GPU-h: 5 GPU-h spent, 2 left; the next wave (the CCD: 6 runs, ~3 GPU-h) does not fit.
    outcome = run_study(gpu_spec(max_gpu_hours=7.0), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=1800))
    assert outcome.ran == 10 and len(store.waves("gpu")) == 1
    reason = ("the next wave would need ~3 GPU-h (6 runs at 0.5 GPU-h each), 2 left of max_gpu_hours 7 (it would "
              "have been: curvature (")
    assert outcome.stop_reason.startswith(reason)
    info = store.study_info("gpu")
    assert info["stop_reason"] == outcome.stop_reason and info["stopped_at"] is not None

    # A larger budget: the study goes on (the stop is cleared by the new wave), and stops once it is spent.
    outcome = run_study(gpu_spec(max_gpu_hours=8.0), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=1800))
    assert outcome.ran == 6 and outcome.stop_reason == "GPU-hours budget spent: 8 GPU-h used, max_gpu_hours 8"
    assert store.study_info("gpu")["stop_reason"] == outcome.stop_reason


def test_a_cpu_study_counts_run_hours(sqlite_url):
    store = Store(sqlite_url)
    # gpu_s 0 (no GPU): each run counts its wall time, 1 s; 10 runs = 10 s, and the next wave would need 6 s more.
    budget = 14 / 3600
    outcome = run_study(gpu_spec(max_gpu_hours=budget), store, InProcessExecutor(bowl(0.5, 0.5), gpu_s=0.0))
    assert outcome.ran == 10 and outcome.stop_reason.startswith("the next wave would need ~0.00167 GPU-h (6 runs")


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
