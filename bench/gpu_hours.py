"""GPU-hours and wall clock to a target regret on a learning-curve workload: wavesweep with and without pruning, Ray
Tune ASHA, Optuna Hyperband, and greedy on one GPU.

    .venv/bin/python bench/gpu_hours.py [--surfaces llm_finetune,hartmann6,rosenbrock] [--reps 1]
        [--methods waves,prune,asha,hyperband,greedy] [--steps 60] [--step-s 0.1] [--waves 6] [--hold-off 0.25]
        [--wavesweep-hold-off SHARE] [--trials N] [--target REGRET] [--shape exp|wsd] [--quick] [--json PATH]

Run it from the repository root. ``--quick``: llm_finetune only, one repetition, 30 steps, 3 waves (a few minutes).

The workload (``experiments/curves.py``). A run trains for ``--steps`` steps, sleeping ``--step-s`` real seconds
per step (its "GPU" time), and reports its loss after each. Its final value is the surface's value plus the
surface's noise for the run's seed (``Surface.sample``: known optimum, so regret is exact); the curve starts from a
value common to all configurations and comes down at a speed set by the surface's first factor (the learning rate of
llm_finetune: a low one learns slowly) with a per-configuration jitter, so curves cross: a late bloomer looks worse
than a fast, worse configuration at the hold-off. The curve is a pure function, so every method computes exactly the
same numbers for the same (configuration, seed). Surfaces: llm_finetune (ours) and hartmann6 and rosenbrock, which
the team does not tune on; the curve's rule (speed from the first factor) was not chosen per surface.

Methods, each on the same workload (same surface, steps, step time, noise; every run's seed is the repetition's
number, as in a wavesweep study with ``seeds: [rep]``; a wavesweep backfill replicate gets a new seed, as it must):

- ``waves``: wavesweep ``mode: waves``, ``runs_per_wave: 16``, ``max_waves: --waves`` (default 6: up to 96 designed
  or proposed runs, plus the backfill replicates the driver adds at a wave's tail; the strategy may stop earlier,
  by its patience or expected gain), ``prune: false``; ``run_study`` with ``RayExecutor`` on a fresh local Ray with
  16 logical GPUs, a fresh SQLite store per study, one GPU and one CPU per run, workers reused
  (``max_runs_per_worker: 1000``, as Tune's ``reuse_actors``).
- ``prune``: the same study with its pruning defaults (``prune: true``: designed cells run to the end; proposed runs
  and backfill replicates may be pruned; ``prune_rule: bound``, ``prune_after: 50%``); ``prune_halving``,
  ``prune_median`` and ``prune_all`` (``prune: all``) are the variants. ``--wavesweep-hold-off`` overrides
  ``prune_after`` (a share of a full run, given to the spec in steps).
- ``asha``: Ray Tune 2.x, its default search (random, ``BasicVariantGenerator(random_state=rep)``) with
  ``ASHAScheduler(time_attr="training_iteration", max_t=steps, grace_period=<--hold-off, 25%: 15 of 60 steps>,
  reduction_factor=3)``, 16 concurrent trials of 1 GPU and 1 CPU each on a fresh local Ray with 16 logical GPUs,
  ``reuse_actors=True``, a report every step, Tune's automatic logger callbacks off
  (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``: they only cost time here).
- ``hyperband``: Optuna ``TPESampler(multivariate=True, constant_liar=True, n_startup_trials=16, seed=rep)`` with
  ``HyperbandPruner(min_resource=<the hold-off>, max_resource=steps, reduction_factor=3)``, ``study.optimize(...,
  n_jobs=16)`` (16 threads = 16 GPUs; no Ray), ``trial.report`` and ``trial.should_prune()`` every step.
- ``greedy``: wavesweep ``mode: greedy`` (3 levels per factor) on a fresh local Ray with 1 logical GPU,
  ``prune: true``: the careful serial search.

Budget: the same number of runs (trials) for every method: ``--trials``, or else as many as the ``waves`` study ran
in the same repetition (design + backfill; 16 x --waves when waves is not run). ``asha`` and ``hyperband`` sample that
many trials; ``greedy`` gets it as ``max_runs`` (its path usually ends sooner); ``prune`` has the waves study's
spec, so it may run a different number of runs (other replicates).

Fairness rules. The same warm-up for every side: none (every Ray side starts on a fresh Ray with no worker process;
the start-up, call to first run start, is printed apart and is not in the wall clock); 16 points before any model
(waves: its designed first wave; Optuna: 16 random startup trials; Tune's random search has no model). Every
pruner at its own recommended setting: ASHA and Hyperband with a hold-off of ``--hold-off`` (25%) and a reduction
factor of 3, wavesweep with its defaults (a longer hold-off, 50%, which it chose by measuring: docs/benchmarks.md;
``--wavesweep-hold-off 0.25`` gives it the peers'). Log-scale factors are log-scale, integer factors integer, in
every sampler.

Measured, from the runs themselves: every run appends a line per executed step to a log (``experiments.curves.train``:
the step and the wall clock ``time.time()``), before it reports the step, so a pruned run's steps count whatever
the framework records (Tune's function trainables run on asynchronously until the stop reaches them; wavesweep's
reach the run at its next report after the driver's decision). Time is simulated at one step = one GPU-minute: a
full run of 60 steps is one GPU-hour, and GPU-hours = executed steps / 60 over all runs (the sleeping GPU time; a
run's start-up and a framework's waits are not in it: they show in the wall clock). Regret after a run completes
(executed every step) = the noise-free surface value of the configuration of the best observed final value among
the completed runs so far, minus the optimum (``Surface.regret``; a pruned run is never recommended). Wall clock =
real seconds from the method's first run start to the completion that first brings the regret to the target (and to
the last run's end); GPU-hours to target = the steps executed by all runs up to that moment.

Also printed, per wavesweep study: its runs by status, the stop reason, ``wave_gaps_s`` (per wave after the first,
from the end of the runs before it to its first run's start: the driver designing it, the model's fit and proposal,
and Ray starting the runs) and ``prune_lag_steps_median`` (steps a pruned run executed past the step the driver
decided at, from the decision stored with the run: the driver reads the curves every 0.5 s and the run learns the
decision at its next report, so at 0.1 s per step a pruned run runs on about 3 to 5 steps; with steps of minutes it
would be under one). Tune's function trainables also run on until the stop reaches them; Optuna decides inside the
trial's own thread (no lag). Optuna runs in threads of this process: it has no worker start-up at all, where every
Ray side starts 16 worker processes on a fresh Ray (start s, not in the wall; the first runs still start staggered).
wavesweep's backfill depends on timing, so its run count and result vary from one call to the next: use ``--reps``.

Target regret, per surface: ``--target``, or else the median over repetitions of the unpruned ``waves`` study's final
regret plus the surface's noise SD (a difference below the noise is not one a study can see). A method that never
reaches it says so ("never"). Ratios are per repetition, then the median: GPU-hours against ``waves`` (total, and
to target), against ``asha`` (to target), and wall clock and GPU-hours against ``greedy`` (to target when both reach
it, otherwise the totals, and the verdict says which). The figures come from the run; nothing is filled in.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench` is not an installed package

from bench.scheduling import fresh_ray
from bench.search_methods import suggest
from experiments import curves
from experiments.surface import Surface
from experiments.surfaces import SURFACES, get_surface

SLOTS = 16
ETA = 3  # every pruner's reduction factor
STEPS_PER_GPU_HOUR = 60  # simulated time: one step = one GPU-minute
DEFAULT_SURFACES = "llm_finetune,hartmann6,rosenbrock"
DEFAULT_METHODS = "waves,prune,asha,hyperband,greedy"
LABELS = {
    "waves": "wavesweep waves, no pruning",
    "prune": "wavesweep waves + prune (bound, the default)",
    "prune_halving": "wavesweep waves + prune (halving)",
    "prune_median": "wavesweep waves + prune (median)",
    "prune_all": "wavesweep waves + prune: all (bound)",
    "asha": "Ray Tune random + ASHA",
    "hyperband": "Optuna TPE + Hyperband",
    "greedy": "wavesweep greedy, 1 GPU, prune",
}
PRUNE = {"prune": (True, "bound"), "prune_halving": (True, "halving"), "prune_median": (True, "median"),
         "prune_all": ("all", "bound")}
TIME_LIMIT_S = 1800.0  # Tune's time_budget_s and Optuna's timeout: a guard, far above what a side should need


@dataclass(frozen=True)
class Config:
    steps: int
    step_s: float
    waves: int
    hold_off: int  # steps: the peers' pruners (ASHA's grace period, Hyperband's min resource)
    trials: int | None
    wavesweep_hold_off: int | None = None  # steps; None: wavesweep's default (strategy.prune_after)
    shape: str = "exp"  # the curves' family (experiments/curves.py)


@dataclass
class Run:
    key: str
    params: dict[str, float]
    seed: int
    start: float
    times: list[float] = field(default_factory=list)  # wall clock after each executed step

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def end(self) -> float:
        return self.times[-1] if self.times else self.start


@dataclass
class Raw:
    """What one method did in one repetition: its runs (from the step log), when it was called and returned."""

    runs: list[Run]
    t_call: float
    t_return: float
    notes: dict[str, Any] = field(default_factory=dict)
    load_1m: float = field(default_factory=lambda: os.getloadavg()[0])  # this machine's load right after the method


# --- the step log ----------------------------------------------------------------------------------------------------


def read_log(path: Path) -> list[Run]:
    """The runs of a step log, each with its start and the time after each executed step (an earlier attempt of a
    retried run as a run of its own, ``key#1``)."""
    runs: dict[str, Run] = {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["step"] == 0:
            if rec["key"] in runs:  # a retry (its worker died): the earlier attempt's steps cost GPU time too
                earlier = runs.pop(rec["key"])
                earlier.key = f"{rec['key']}#{sum(k.startswith(rec['key'] + '#') for k in runs) + 1}"
                runs[earlier.key] = earlier
            runs[rec["key"]] = Run(rec["key"], rec["params"], rec["seed"], rec["t"])
        else:
            run = runs[rec["key"]]
            if rec["step"] != run.steps + 1:
                raise RuntimeError(f"run {rec['key']}: step {rec['step']} logged after step {run.steps}")
            run.times.append(rec["t"])
    return list(runs.values())


# --- wavesweep --------------------------------------------------------------------------------------------------------


def wavesweep_spec(surface: Surface, study: str, cfg: Config, method: str, rep: int, log: Path, artifacts: Path,
                   max_runs: int | None):
    from orchestrator.spec import parse_spec

    greedy = method == "greedy"
    factors: dict[str, dict[str, Any]] = {}
    for name, box in surface.factors.items():
        factors[name] = {"levels": box.levels(3 if greedy else 2)}
        if box.scale == "log":
            factors[name]["scale"] = "log"
    if greedy:
        strategy: dict[str, Any] = {"mode": "greedy", "prune": True, "max_runs": max_runs}
    else:
        prune, rule = PRUNE.get(method, (False, "bound"))
        strategy = {"mode": "waves", "runs_per_wave": SLOTS, "max_waves": cfg.waves, "prune": prune,
                    "prune_rule": rule}
    if cfg.wavesweep_hold_off is not None:
        strategy["prune_after"] = cfg.wavesweep_hold_off
    return parse_spec({
        "study": study, "experiment": "experiments.curves:run", "artifacts": str(artifacts),
        "fixed": {"surface": surface.name, "steps": cfg.steps, "step_s": cfg.step_s, "step_log": str(log),
                  "shape": cfg.shape},
        "factors": factors, "response": {"metric": curves.METRIC, "goal": surface.goal},
        "strategy": strategy,
        "resources": {"gpus_per_run": 1, "cpus_per_run": 1, "max_runs_per_worker": 1000, "warm_reuse": True},
        "seeds": [rep],
    })


def run_wavesweep(surface: Surface, cfg: Config, method: str, rep: int, workdir: Path, max_runs: int | None) -> Raw:
    from orchestrator.execution.driver import run_study
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.store import Store

    study = f"gpuh-{surface.name}-{method}-{rep}"
    log = workdir / f"{study}.jsonl"
    spec = wavesweep_spec(surface, study, cfg, method, rep, log, workdir / "art", max_runs)
    store = Store(f"sqlite:///{workdir / study}.db")
    with fresh_ray(1 if method == "greedy" else SLOTS), RayExecutor() as executor:  # joins the fresh Ray
        t_call = time.time()
        outcome = run_study(spec, store, executor)
        t_return = time.time()
    records = store.runs(study)
    statuses: dict[str, int] = defaultdict(int)
    stored_steps: dict[str, int] = {}
    for r in records:
        statuses[r.status] += 1
        points = [step for step, name, _ in store.curve(r["cell_key"]) if name == curves.METRIC]
        stored_steps[r["cell_key"]] = max(points, default=0)
    store.close()
    runs = read_log(log)
    # The stored curve's last step against the steps the run itself logged (a pruned run may have run on a little
    # after its last stored point: the log is what is counted).
    behind = sum(run.steps - stored_steps.get(run.key, 0) for run in runs)
    # Steps a pruned run executed past the step the driver decided at (the decision reaches the run at a later
    # report: the driver reads curves every 0.5 s), from the decision stored with the run.
    logged = {run.key: run.steps for run in runs}
    lags = [logged[r["cell_key"]] - r.prune["step"] for r in records if r.prune and r["cell_key"] in logged]
    # Per wave after the first: from the end of the last run of the waves before it to its first run's start (the
    # driver designing it: the model's fit and proposal, then Ray starting the runs), in seconds.
    wave_of = {r["cell_key"]: r.wave for r in records}
    by_wave: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_wave[wave_of[run.key.split("#")[0]]].append(run)
    numbers = sorted(by_wave)
    gaps = [round(min(r.start for r in by_wave[n]) - max(r.end for k in numbers[:i] for r in by_wave[k]), 1)
            for i, n in enumerate(numbers) if i > 0]
    failed = {s: n for s, n in statuses.items() if s not in ("COMPLETE", "PRUNED")}
    if failed:
        bad = [(r["cell_key"], r.status, r.get("error_message")) for r in records if r.status in failed]
        raise RuntimeError(f"{method}: runs ended {failed}, e.g. {bad[:2]}")
    return Raw(runs, t_call, t_return, {"statuses": dict(statuses), "stop": outcome.stop_reason,
                                        "steps_logged_not_stored": behind,
                                        "wave_gaps_s": gaps, "prune_lag_steps_median": _median(lags)})


# --- Ray Tune ASHA ---------------------------------------------------------------------------------------------------


def run_asha(surface: Surface, cfg: Config, rep: int, trials: int, workdir: Path) -> Raw:
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    log = workdir / f"asha-{surface.name}-{rep}.jsonl"
    space: dict[str, Any] = {"surface": surface.name, "steps": cfg.steps, "step_s": cfg.step_s, "seed": rep,
                             "step_log": str(log), "shape": cfg.shape}
    for name, box in surface.factors.items():
        log_scale = box.scale == "log"
        if box.integer:
            lo, hi = int(box.low), int(box.high) + 1  # Tune's integer upper bounds are exclusive
            space[name] = tune.lograndint(lo, hi) if log_scale else tune.randint(lo, hi)
        else:
            space[name] = tune.loguniform(box.low, box.high) if log_scale else tune.uniform(box.low, box.high)

    def trainable(config: dict) -> None:
        from ray import tune as tune_

        from experiments import curves as curves_

        def report(step: int, value: float) -> None:
            tune_.report({curves_.METRIC: value})

        curves_.train(config["surface"], config, config["steps"], config["step_s"], config["seed"], report,
                      step_log=config["step_log"], key=tune_.get_context().get_trial_id(), shape_name=config["shape"])

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.steps, grace_period=cfg.hold_off,
                              reduction_factor=ETA)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(metric=curves.METRIC, mode="min" if surface.goal == "minimize" else "max",
                                    scheduler=scheduler, search_alg=BasicVariantGenerator(random_state=rep),
                                    num_samples=trials, max_concurrent_trials=SLOTS, reuse_actors=True,
                                    time_budget_s=TIME_LIMIT_S),
        run_config=tune.RunConfig(storage_path=str(workdir / "tune"), name=f"asha-{surface.name}-{rep}", verbose=0),
    )
    # With the logger callbacks off there is no result file per trial, and the result grid warns about each one.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    with fresh_ray(SLOTS):
        t_call = time.time()
        with contextlib.redirect_stdout(io.StringIO()):  # Tune prints a banner and hints even at verbose=0
            grid = tuner.fit()
        t_return = time.time()
    errors = len(grid.errors)
    if errors:
        raise RuntimeError(f"asha: {errors} trials errored, e.g. {grid.errors[0]}")
    return Raw(read_log(log), t_call, t_return, {"trials": len(grid)})


# --- Optuna Hyperband ---------------------------------------------------------------------------------------------


def run_hyperband(surface: Surface, cfg: Config, rep: int, trials: int, workdir: Path) -> Raw:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log = workdir / f"hyperband-{surface.name}-{rep}.jsonl"
    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_startup_trials=SLOTS, seed=rep)
    pruner = optuna.pruners.HyperbandPruner(min_resource=cfg.hold_off, max_resource=cfg.steps, reduction_factor=ETA)
    study = optuna.create_study(direction=surface.goal, sampler=sampler, pruner=pruner)

    def objective(trial) -> float:
        params = suggest(trial, surface)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return curves.train(surface.name, params, cfg.steps, cfg.step_s, rep, report, step_log=str(log),
                            key=f"trial-{trial.number}", shape_name=cfg.shape)

    t_call = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings (multivariate, constant_liar)
        study.optimize(objective, n_trials=trials, n_jobs=SLOTS, timeout=TIME_LIMIT_S, catch=())
    t_return = time.time()
    states: dict[str, int] = defaultdict(int)
    for t in study.trials:
        states[t.state.name] += 1
    return Raw(read_log(log), t_call, t_return, {"states": dict(states)})


# --- figures ----------------------------------------------------------------------------------------------------------


def gpu_hours(steps: int) -> float:
    return steps / STEPS_PER_GPU_HOUR


def trajectory(surface: Surface, raw: Raw, cfg: Config) -> list[tuple[float, float]]:
    """(time of a completion, regret of the best observed completed run then), in order of completion."""
    done = sorted((r for r in raw.runs if r.steps == cfg.steps), key=lambda r: r.end)
    sign = 1.0 if surface.goal == "minimize" else -1.0
    best: tuple[float, dict] | None = None
    out = []
    for run in done:
        final = curves.final_value(surface.name, run.params, run.seed)
        if best is None or sign * final < sign * best[0]:
            best = (final, run.params)
        out.append((run.end, surface.regret(best[1])))
    return out


def figures(surface: Surface, raw: Raw, cfg: Config, target: float | None) -> dict[str, Any]:
    runs = raw.runs
    if not runs:
        return {"runs": 0, "regret": math.inf, "reached": False}
    first = min(r.start for r in runs)
    steps = sum(r.steps for r in runs)
    path = trajectory(surface, raw, cfg)
    out: dict[str, Any] = {
        "runs": len(runs), "complete": sum(r.steps == cfg.steps for r in runs),
        "regret": path[-1][1] if path else math.inf, "gpu_h": gpu_hours(steps), "steps": steps,
        "wall_s": max(r.end for r in runs) - first, "startup_s": first - raw.t_call,
        "call_s": raw.t_return - raw.t_call, "load_1m": raw.load_1m, "notes": raw.notes,
    }
    out["reached"] = False
    if target is not None:
        hit = next((t for t, regret in path if regret <= target + 1e-12), None)
        if hit is not None:
            done = sum(1 for r in runs for t in r.times if t <= hit)
            out.update(reached=True, wall_to_s=hit - first, gpu_h_to=gpu_hours(done))
    return out


# --- the command ---------------------------------------------------------------------------------------------------


def run_method(method: str, surface: Surface, cfg: Config, rep: int, workdir: Path, trials: int) -> Raw:
    if method == "asha":
        return run_asha(surface, cfg, rep, trials, workdir)
    if method == "hyperband":
        return run_hyperband(surface, cfg, rep, trials, workdir)
    return run_wavesweep(surface, cfg, method, rep, workdir, trials if method == "greedy" else None)


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _f(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else ("inf" if math.isinf(x) else format(x, fmt))


def summarize(surface: Surface, raws: dict[str, list[Raw]], cfg: Config, target_arg: float | None) -> dict:
    """Figures per method and repetition against the target, and the ratios, for one surface."""
    if target_arg is not None:
        target, basis = target_arg, "--target"
    elif "waves" in raws:
        target = statistics.median(figures(surface, r, cfg, None)["regret"] for r in raws["waves"]) + surface.noise_sd
        basis = "median final regret of waves (no pruning) + the noise SD"
    else:
        target, basis = None, "none (waves not run and no --target)"
    per = {m: [figures(surface, r, cfg, target) for r in rs] for m, rs in raws.items()}

    def ratio(m: str, ref: str, key: str) -> float | None:
        if ref not in per or m not in per:
            return None
        vals = [a.get(key) / b.get(key) for a, b in zip(per[m], per[ref])
                if a.get(key) is not None and b.get(key) and math.isfinite(b.get(key))]
        return _median(vals)

    # Against greedy at the regret greedy itself reached (per repetition): the same answer, whoever gets it first.
    at_greedy: dict[str, list[tuple[float, float]]] = {}
    for m, rs in raws.items():
        for raw, g_raw in zip(rs, raws.get("greedy", []) if m != "greedy" else []):
            g_regret = figures(surface, g_raw, cfg, None)["regret"]
            mine, theirs = figures(surface, raw, cfg, g_regret), figures(surface, g_raw, cfg, g_regret)
            if mine["reached"] and theirs["reached"] and mine["wall_to_s"] and mine["gpu_h_to"]:
                at_greedy.setdefault(m, []).append((theirs["wall_to_s"] / mine["wall_to_s"],
                                                    mine["gpu_h_to"] / theirs["gpu_h_to"]))

    rows = {}
    for m, figs in per.items():
        pairs = at_greedy.get(m, [])
        rows[m] = {
            "at_greedy_wall_x": _median([a for a, _ in pairs]), "at_greedy_gpu_h": _median([b for _, b in pairs]),
            "at_greedy_reps": len(pairs),
            "runs": _median([f["runs"] for f in figs]), "complete": _median([f.get("complete") for f in figs]),
            "regret": _median([f["regret"] for f in figs]), "reached": sum(f["reached"] for f in figs),
            "reps": len(figs), "gpu_h_to": _median([f.get("gpu_h_to") for f in figs]),
            "wall_to_s": _median([f.get("wall_to_s") for f in figs]), "gpu_h": _median([f.get("gpu_h") for f in figs]),
            "wall_s": _median([f.get("wall_s") for f in figs]),
            "startup_s": _median([f.get("startup_s") for f in figs]),
            "call_s": _median([f.get("call_s") for f in figs]), "load_1m": _median([f.get("load_1m") for f in figs]),
            "gpu_h_vs_waves": ratio(m, "waves", "gpu_h"), "gpu_h_to_vs_waves": ratio(m, "waves", "gpu_h_to"),
            "gpu_h_to_vs_asha": ratio(m, "asha", "gpu_h_to"),
            "gpu_h_vs_greedy": ratio(m, "greedy", "gpu_h"), "gpu_h_to_vs_greedy": ratio(m, "greedy", "gpu_h_to"),
            "greedy_wall_x": _median([b["wall_s"] / a["wall_s"] for a, b in zip(figs, per.get("greedy", []))]),
            "greedy_wall_to_x": _median([b["wall_to_s"] / a["wall_to_s"] for a, b in zip(figs, per.get("greedy", []))
                                         if a.get("wall_to_s") and b.get("wall_to_s")]),
        }
    return {"target": target, "target_basis": basis, "rows": rows, "per_rep": per}


def report(surface: Surface, res: dict, cfg: Config) -> None:
    rows = res["rows"]
    print(f"\n{surface.name} ({surface.goal}, optimum {surface.optimum:.4g}, noise SD {surface.noise_sd:g}, "
          f"spread {curves.spread(surface.name):.3g}); target regret {_f(res['target'], '.4g')} "
          f"({res['target_basis']})")
    print(f"  {'method':35s} {'runs':>5s} {'full':>5s} {'regret':>8s} {'reached':>7s} {'GPU-h>tgt':>9s} "
          f"{'wall>tgt':>8s} {'GPU-h':>7s} {'wall s':>7s} {'start s':>7s} {'call s':>7s} {'load':>5s}")
    for m, r in rows.items():
        print(f"  {LABELS[m]:35s} {_f(r['runs'], '.0f'):>5s} {_f(r['complete'], '.0f'):>5s} "
              f"{_f(r['regret'], '.4f'):>8s} "
              f"{str(r['reached']) + '/' + str(r['reps']):>7s} "
              f"{_f(r['gpu_h_to'], '.2f') if r['reached'] else 'never':>9s} "
              f"{_f(r['wall_to_s'], '.1f') if r['reached'] else 'never':>8s} {_f(r['gpu_h'], '.2f'):>7s} "
              f"{_f(r['wall_s'], '.1f'):>7s} {_f(r['startup_s'], '.1f'):>7s} {_f(r['call_s'], '.1f'):>7s} "
              f"{_f(r['load_1m'], '.1f'):>5s}")
    print(f"  {'ratios (median over reps)':35s} {'GPU-h/waves':>11s} {'>tgt/waves':>10s} {'>tgt/asha':>9s} "
          f"{'GPU-h/greedy':>12s} {'>tgt/greedy':>11s} {'greedy wall x':>13s} {'>tgt x':>7s}")
    for m, r in rows.items():
        print(f"  {LABELS[m]:35s} {_f(r['gpu_h_vs_waves'], '.2f'):>11s} {_f(r['gpu_h_to_vs_waves'], '.2f'):>10s} "
              f"{_f(r['gpu_h_to_vs_asha'], '.2f'):>9s} {_f(r['gpu_h_vs_greedy'], '.2f'):>12s} "
              f"{_f(r['gpu_h_to_vs_greedy'], '.2f'):>11s} {_f(r['greedy_wall_x'], '.1f'):>13s} "
              f"{_f(r['greedy_wall_to_x'], '.1f'):>7s}")
    for m, figs in res["per_rep"].items():
        notes = "; ".join(json.dumps(f.get("notes", {}), default=str) for f in figs)
        print(f"    {m}: {notes}")


def verdicts(surface: Surface, res: dict) -> list[str]:
    rows, out = res["rows"], []
    waves, asha, greedy = rows.get("waves"), rows.get("asha"), rows.get("greedy")
    for m in (k for k in rows if k in PRUNE):
        r = rows[m]
        if waves:
            same = r["regret"] is not None and r["regret"] <= waves["regret"] + surface.noise_sd
            ok = r["gpu_h_vs_waves"] is not None and r["gpu_h_vs_waves"] <= 0.6 and same
            out.append(f"{surface.name} {m}: GPU-h {_f(r['gpu_h_vs_waves'], '.2f')}x of waves (<= 0.6), final regret "
                       f"{_f(r['regret'], '.4f')} vs {_f(waves['regret'], '.4f')} (within noise {surface.noise_sd:g}: "
                       f"{'yes' if same else 'no'}): {'yes' if ok else 'no'}; to target: "
                       f"{_f(r['gpu_h_to_vs_waves'], '.2f')}x")
        if asha:
            if not r["reached"]:
                line = "did not reach the target"
            elif not asha["reached"]:
                line = "yes (ASHA never reached the target)"
            else:
                line = ("yes" if r["gpu_h_to"] <= asha["gpu_h_to"] else "no") + \
                       f" ({_f(r['gpu_h_to'], '.2f')} vs ASHA {_f(asha['gpu_h_to'], '.2f')} GPU-h to target)"
            out.append(f"{surface.name} {m}: GPU-h to target <= ASHA's: {line}")
        if greedy:
            if r["reached"] and greedy["reached"]:
                speed, gpu, basis, bound = r["greedy_wall_to_x"], r["gpu_h_to_vs_greedy"], "to target", ("", "")
            elif r["reached"]:
                # Greedy's whole run did not get there: its totals bound its time and GPU-hours to the target below.
                speed = greedy["wall_s"] / r["wall_to_s"] if r["wall_to_s"] else None
                gpu = r["gpu_h_to"] / greedy["gpu_h"] if greedy["gpu_h"] else None
                basis, bound = ("this method to target against greedy's totals, which never reached it (regret "
                                f"{_f(greedy['regret'], '.4f')}): bounds"), (">", "<")
            else:
                speed, gpu, basis, bound = r["greedy_wall_x"], r["gpu_h_vs_greedy"], "totals (this method did not " \
                    "reach the target)", ("", "")
            ok = speed is not None and speed >= 8 and gpu is not None and gpu <= 1.0
            out.append(f"{surface.name} {m}: vs greedy on 1 GPU ({basis}): {bound[0]}{_f(speed, '.1f')}x faster "
                       f"(>= 8), {bound[1]}{_f(gpu, '.2f')}x its GPU-h (<= 1): {'yes' if ok else 'no'}")
            if r["at_greedy_reps"]:
                speed, gpu = r["at_greedy_wall_x"], r["at_greedy_gpu_h"]
                ok = speed >= 8 and gpu <= 1.0
                out.append(f"{surface.name} {m}: vs greedy at greedy's own final regret ({r['at_greedy_reps']} reps): "
                           f"{_f(speed, '.1f')}x faster (>= 8), {_f(gpu, '.2f')}x its GPU-h (<= 1): "
                           f"{'yes' if ok else 'no'}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--surfaces", default=None, help=f"comma list (default {DEFAULT_SURFACES})")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma list of: " + ", ".join(LABELS))
    parser.add_argument("--reps", type=int, default=None, help="repetitions (seeds 0..reps-1; default 1)")
    parser.add_argument("--steps", type=int, default=None, help="steps of a full run (default 60; --quick 30)")
    parser.add_argument("--step-s", type=float, default=0.1, help="real seconds per step (default 0.1)")
    parser.add_argument("--waves", type=int, default=None, help="max_waves of the waves studies (default 6; --quick 3)")
    parser.add_argument("--hold-off", type=float, default=0.25,
                        help="the peers' hold-off: share of a full run (ASHA's grace period, Hyperband's min resource)")
    parser.add_argument("--wavesweep-hold-off", type=float, default=None,
                        help="wavesweep's strategy.prune_after as a share of a full run (default: its own, 50%%)")
    parser.add_argument("--trials", type=int, default=None,
                        help="runs per method (default: as many as the waves study ran in the same repetition)")
    parser.add_argument("--target", type=float, default=None, help="target regret (default: from the waves study)")
    parser.add_argument("--shape", default="exp", choices=curves.SHAPES, help="curve family: experiments/curves.py")
    parser.add_argument("--quick", action="store_true", help="llm_finetune, 1 rep, 30 steps, 3 waves")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="A not p.d.")  # the GP's Cholesky jitter notes, from the waves driver
    surfaces_text = args.surfaces or ("llm_finetune" if args.quick else DEFAULT_SURFACES)
    steps = args.steps or (30 if args.quick else 60)
    cfg = Config(steps=steps, step_s=args.step_s, waves=args.waves or (3 if args.quick else 6),
                 hold_off=max(1, math.ceil(args.hold_off * steps)), trials=args.trials,
                 wavesweep_hold_off=None if args.wavesweep_hold_off is None
                 else max(1, math.ceil(args.wavesweep_hold_off * steps)), shape=args.shape)
    reps = args.reps or 1
    methods = _names(args.methods, list(LABELS), "methods")
    methods.sort(key=lambda m: m != "waves")  # waves first: it sets the others' trial count
    surfaces = [get_surface(n) for n in _names(surfaces_text, sorted(SURFACES), "surfaces")]
    print(f"{steps} steps of {cfg.step_s} s per full run (simulated: 1 step = 1 GPU-minute), hold-off "
          f"{cfg.hold_off} steps, waves: {cfg.waves} x {SLOTS}, {reps} rep(s); methods: {', '.join(methods)}",
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="wavesweep-gpuh-"))
    out: dict[str, Any] = {"config": {**cfg.__dict__, "reps": reps, "methods": methods}, "surfaces": {}}
    verdict_lines: list[str] = []
    started = time.time()
    try:
        for surface in surfaces:
            raws: dict[str, list[Raw]] = defaultdict(list)
            for rep in range(reps):
                trials = cfg.trials or SLOTS * cfg.waves
                for method in methods:
                    t0 = time.time()
                    raw = run_method(method, surface, cfg, rep, workdir, trials)
                    raws[method].append(raw)
                    if method == "waves" and cfg.trials is None:
                        trials = len(raw.runs)
                    f = figures(surface, raw, cfg, None)
                    print(f"[{surface.name} rep {rep}] {method}: {f['runs']} runs ({f.get('complete', 0)} full), "
                          f"regret {_f(f['regret'], '.4f')}, {_f(f.get('gpu_h'), '.2f')} GPU-h, wall "
                          f"{_f(f.get('wall_s'), '.1f')} s, {time.time() - t0:.0f} s in all; {raw.notes}", flush=True)
            res = summarize(surface, raws, cfg, args.target)
            report(surface, res, cfg)
            verdict_lines += verdicts(surface, res)
            out["surfaces"][surface.name] = {
                **res, "runs": {m: [[{"key": r.key, "steps": r.steps, "start": r.start, "end": r.end, "seed": r.seed,
                                      "params": r.params} for r in raw.runs] for raw in rs]
                                for m, rs in raws.items()}}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nruns: runs started; full: runs that executed every step; regret: of the best observed completed run; "
          "reached: repetitions that reached the target; GPU-h>tgt, wall>tgt: GPU-hours (executed steps / 60) and "
          "real seconds from the first run start until the target was reached; GPU-h, wall s: in all; start s: "
          "call to first run start (not in the wall); call s: the whole call; load: 1-minute load average of this "
          "machine right after the method (other work on the same cores slows every wall clock). GPU-h/waves etc.: "
          "ratios per repetition, median; greedy wall x: greedy's wall / this method's (its speed-up on 16 GPUs).")
    print(f"{time.time() - started:.0f} s in all")
    print()
    for line in verdict_lines:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
