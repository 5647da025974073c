"""Search quality at the same run budget and the same parallelism: adaptive waves against batch peers.

What runs. On the project's synthetic surfaces (experiments/surfaces.py: known optimum, known interacting pairs;
default screening, llm_finetune, friedman1, and two from the literature the team does not tune on, hartmann6 and
rosenbrock), every method gets the same number of runs (``--budget``, default 64), repeated ``--reps`` times
(default 10; repetition r seeds the sampler with r and the noise with 1000 r + the run's index; waves and greedy:
1000 r + the cell's seed, r). Everything runs in-process against the surface (no Ray, no store).

Equal parallelism: waves of 16. Each of these methods asks for 16 runs, gets all 16 results, then asks again
(4 rounds of information at 64 runs); none sees a result of a batch before the whole batch is chosen (checked: the
batch sizes each method actually produced are printed):

- waves: wavesweep's ``mode: waves`` strategy, driven as the driver drives it (``create_strategy(spec, 16)``,
  ``next_wave(known, 16, runs)`` until it returns None or the budget is spent). Its first wave is a designed
  16-run fraction over the whole box; a wave may hold fewer than 16 runs if the strategy says so.
- Ax batch: ax-platform 1.x ``Client`` with an explicit GenerationStrategy: exactly 16 Sobol trials (seeded; the
  step needs all 16 observed before it hands over), then Ax's default modular BoTorch generator (SingleTaskGP,
  qLogNoisyExpectedImprovement) with no trial limit and no parallelism cap, asked for 16 trials at a time with
  ``get_next_trials(max_trials=16)`` (Ax builds the 16 one by one, the earlier ones pending, on one model fit). The
  strategy is moved past Sobol before each ask (``current_generator_run_limit()``): asked while still on the
  finished Sobol step, Ax caps the request at what that step may still generate, and the first model batch is 1.
- Optuna TPE batch: ``TPESampler(multivariate=True, constant_liar=True, n_startup_trials=16)``, ask 16 trials
  (each one's params drawn before the next is asked, so the liar sees them), evaluate, tell 16.
- Optuna GP batch: ``GPSampler(n_startup_trials=16)``, the same ask-16/tell-16 loop (Optuna 5's GPSampler scores
  each new point by qLogEI jointly with the trials still running, so a batch spreads out).
- random search: Optuna's ``RandomSampler`` (batches are immaterial).

The same warm-up on every side: 16 points before any model (waves: its first designed wave; Ax: 16 Sobol; Optuna:
16 random, ``n_startup_trials=16``). Log-scale factors are log-scale parameters and integer factors integer
parameters in every sampler.

References, not equal-parallelism peers (printed below the peers):

- TPE sequential: ``TPESampler(multivariate=True, n_startup_trials=16)``, one trial at a time: 64 rounds of
  information where the batch methods get 4.
- GP sequential, *the limit*: ``GPSampler(n_startup_trials=16)`` one trial at a time, 64 rounds: roughly what
  a model-based search can do with this many runs when nothing runs in parallel.
- greedy: wavesweep's one-GPU strategy (one factor at a time, 3 levels; it plans 2 runs per step); it stops when
  its path ends, usually well before the budget.

Measured, per surface and method, over the repetitions:

- regret of the recommended configuration: every method recommends its best *observed* run (Ax too, not its model's
  best point); regret is the noise-free gap from there to the optimum, median and mean, and the median as % of the
  surface's spread over the box (worst of 20,000 uniform points minus the optimum);
- best-so-far: the median regret of that recommendation after 16, 32, 48, ... runs (in the order the runs were
  asked; a method that stopped early keeps its last recommendation), and **waves to Ax**: the first k such that the
  median regret after 16 k runs is at most Ax's median regret at the full budget (">K" if never within the budget);
- interaction recall (true pairs reported / true pairs) and false discovery rate (reported pairs not true / reported
  pairs), over the pairs each method reports:
  - waves: two-way terms significant (Holm, 0.05) in ``fit_surface``, the second-order response surface over all
    its runs (``wavesweep analyze --method surface``: main effects, quadratics, two-way interactions, each factor
    coded over its box); and, on a line of its own, those of ``fit_effects`` on the runs of its *designed* waves only
    (``orchestrator.wave_kinds.is_designed``; space-filling and model-proposed waves are left out), each factor coded
    over its distinct values (quadratic terms where a factor has 3+); a factor held constant is left out; no pairs if
    a fit refuses the runs;
  - the sampling peers: wavesweep's fANOVA decomposition (``decompose``: bootstrap CIs and a permutation noise
    floor; a pair is reported when its verdict is "interaction") on all their runs. It costs seconds per call, so it
    runs only for the methods in ``--fanova`` (default: TPE batch and Ax batch); the others print "-";
  - greedy: its path cannot estimate interactions; it reports none;
- seconds per repetition: the search, and the pair analysis apart, each in one process with one torch/BLAS thread.

    python bench/search_quality.py [--budget 64] [--reps 10] [--jobs 2]
        [--surfaces screening,llm_finetune,friedman1,hartmann6,rosenbrock]
        [--methods waves,ax_batch,tpe_batch,gp_batch,random,tpe_seq,gp_seq,greedy]
        [--fanova tpe_batch,ax_batch] [--bootstrap 100] [--permutations 99]

``--jobs N`` runs the (surface, method, repetition) tasks in N worker processes, a fresh process per task; every task
is seeded and runs on one thread, so the results do not depend on N (the seconds do, on a machine with fewer free
cores than jobs). ``--jobs 0`` runs them all in this process, for quick checks: state that outlives a task there can
change the next task's result.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.surface import Surface
from experiments.surfaces import get_surface
from orchestrator.analysis import FactorInfo, decompose, fit_effects, fit_surface
from orchestrator.spec import parse_spec
from orchestrator.strategies import create_strategy
from orchestrator.wave_kinds import is_designed

RUNS_PER_WAVE = 16
DEFAULT_SURFACES = "screening,llm_finetune,friedman1,hartmann6,rosenbrock"
DEFAULT_FANOVA = "tpe_batch,ax_batch"
REFERENCE = "ax_batch"  # "waves to Ax" counts against this method's median regret at the full budget
BOOTSTRAP, PERMUTATIONS = 100, 99  # decompose()'s defaults: what `wavesweep analyze` uses


@dataclass(frozen=True)
class Search:
    """What a method did: the runs in the order they were asked, and the sizes of its batches."""

    points: list[dict]
    values: list[float]
    batches: list[int]  # runs asked before any result of them was told, batch by batch
    reported: frozenset[frozenset[str]] | None = None  # pairs from the method's own analysis (waves); None: none
    designed: frozenset[frozenset[str]] | None = None  # waves: the pairs of the designed waves' OLS fit alone


@dataclass(frozen=True)
class Outcome:
    regret: float
    runs: int
    curve: tuple[float, ...]  # regret of the recommendation after 16, 32, ... runs
    batches: tuple[int, ...]
    reported: frozenset[frozenset[str]] | None  # None: the method reports no pairs (or they were not computed)
    designed: frozenset[frozenset[str]] | None  # waves: the designed waves' OLS pairs, printed on a line of its own
    seconds: float  # the search, wall clock
    cpu_seconds: float  # the search, CPU time of the process (less sensitive to a busy machine)
    pair_seconds: float  # the pair analysis, wall clock


# --- the methods ------------------------------------------------------------------------------------------------------


def simulate(surface: Surface, spec: dict, budget: int, runs_per_wave: int, rep: int) -> list[dict]:
    """Drive a wavesweep strategy as the driver would, with the surface standing in for Ray and the store."""
    spec = parse_spec(spec, check_experiment=False)
    strategy = create_strategy(spec, runs_per_wave)
    runs: list[dict] = []
    known: set[str] = set()
    wave = 0
    while len(runs) < budget:
        plan = strategy.next_wave(known, runs_per_wave, runs)
        if plan is None:
            break
        wave += 1
        for cell in plan.cells[: budget - len(runs)]:
            value = surface.sample(cell.levels, cell.seed + 1000 * rep)
            runs.append({"wave": wave, "design": plan.design, "cell_key": cell.key, "seed": cell.seed,
                         "status": "COMPLETE", "wall_s": 1.0, **{f"param.{k}": v for k, v in cell.levels.items()},
                         "metric.y": value})
            known.add(cell.key)
    return runs


def _batches(runs: list[dict]) -> list[int]:
    sizes: dict[int, int] = {}
    for r in runs:
        sizes[r["wave"]] = sizes.get(r["wave"], 0) + 1
    return [sizes[w] for w in sorted(sizes)]


def designed_pairs(surface: Surface, runs: list[dict]) -> frozenset[frozenset[str]]:
    """Significant (Holm, 0.05) two-way terms of the effects fit on the runs of the designed waves."""
    designed = [r for r in runs if is_designed(r.get("design"))]
    if not designed:
        return frozenset()
    frame = pd.DataFrame([{**{n: r[f"param.{n}"] for n in surface.factors}, "y": r["metric.y"]} for r in designed])
    infos = {n: FactorInfo(tuple(sorted(frame[n].unique())), box.scale)
             for n, box in surface.factors.items() if frame[n].nunique() >= 2}
    if not infos:
        return frozenset()
    try:
        fit = fit_effects(frame, infos, "y", adjust="holm")
    except ValueError:
        return frozenset()
    return frozenset(frozenset(_pair(t.term)) for t in fit.terms if t.significant and t.order == 2)


def surface_pairs(surface: Surface, runs: list[dict]) -> frozenset[frozenset[str]]:
    """Significant (Holm, 0.05) two-way terms of the second-order fit over every run (``analyze --method
    surface``)."""
    frame = pd.DataFrame([{**{n: r[f"param.{n}"] for n in surface.factors}, "y": r["metric.y"]} for r in runs])
    infos = {n: FactorInfo((box.low, box.high), box.scale) for n, box in surface.factors.items()}
    try:
        fit = fit_surface(frame, infos, "y", adjust="holm")
    except ValueError:
        return frozenset()
    return frozenset(frozenset(_pair(t.term)) for t in fit.terms if t.significant and t.order == 2)


def search_waves(surface: Surface, budget: int, rep: int, screen: str = "quarter") -> Search:
    spec = surface.spec(f"bench-waves-{rep}", mode="waves", runs_per_wave=RUNS_PER_WAVE, max_runs=budget,
                        max_waves=max(1, math.ceil(budget / RUNS_PER_WAVE)), seeds=[rep], screen=screen)
    runs = simulate(surface, spec, budget, RUNS_PER_WAVE, rep)
    points = [{n: r[f"param.{n}"] for n in surface.factors} for r in runs]
    return Search(points, [r["metric.y"] for r in runs], _batches(runs), surface_pairs(surface, runs),
                  designed_pairs(surface, runs))


def search_waves_corners(surface: Surface, budget: int, rep: int) -> Search:
    return search_waves(surface, budget, rep, screen="corners")


def search_greedy(surface: Surface, budget: int, rep: int) -> Search:
    spec = surface.spec(f"bench-greedy-{rep}", mode="greedy", levels=3, max_runs=budget, seeds=[rep])
    runs = simulate(surface, spec, budget, 1, rep)
    points = [{n: r[f"param.{n}"] for n in surface.factors} for r in runs]
    return Search(points, [r["metric.y"] for r in runs], _batches(runs))


def _suggest(trial, surface: Surface) -> dict:
    params = {}
    for name, box in surface.factors.items():
        log = box.scale == "log"
        if box.integer:
            params[name] = trial.suggest_int(name, int(box.low), int(box.high), log=log)
        else:
            params[name] = trial.suggest_float(name, box.low, box.high, log=log)
    return params


def optuna_batches(surface: Surface, budget: int, rep: int, sampler, batch: int) -> Search:
    """Ask ``batch`` trials (each one's params drawn before the next is asked), evaluate them, tell them all."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=surface.goal, sampler=sampler)
    points: list[dict] = []
    values: list[float] = []
    batches: list[int] = []
    while len(points) < budget:
        told = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        asked = []
        for _ in range(min(batch, budget - len(points))):
            trial = study.ask()
            asked.append((trial, _suggest(trial, surface)))
        # No result of this batch is known to the sampler before the whole batch is drawn.
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) != told or any(
                t.state != TrialState.RUNNING for t in study.get_trials(deepcopy=False)[told:]):
            raise RuntimeError("a trial of the batch was told before the whole batch was asked")
        results = [surface.sample(params, 1000 * rep + len(points) + i) for i, (_, params) in enumerate(asked)]
        for (trial, params), value in zip(asked, results):
            study.tell(trial, value)
            points.append(params)
            values.append(value)
        batches.append(len(asked))
    return Search(points, values, batches)


def search_tpe_batch(surface: Surface, budget: int, rep: int) -> Search:
    import optuna

    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_startup_trials=RUNS_PER_WAVE,
                                         seed=rep)
    return optuna_batches(surface, budget, rep, sampler, RUNS_PER_WAVE)


def search_gp_batch(surface: Surface, budget: int, rep: int) -> Search:
    import optuna

    sampler = optuna.samplers.GPSampler(seed=rep, n_startup_trials=RUNS_PER_WAVE)
    return optuna_batches(surface, budget, rep, sampler, RUNS_PER_WAVE)


def search_random(surface: Surface, budget: int, rep: int) -> Search:
    import optuna

    return optuna_batches(surface, budget, rep, optuna.samplers.RandomSampler(seed=rep), RUNS_PER_WAVE)


def search_tpe_sequential(surface: Surface, budget: int, rep: int) -> Search:
    import optuna

    sampler = optuna.samplers.TPESampler(multivariate=True, n_startup_trials=RUNS_PER_WAVE, seed=rep)
    return optuna_batches(surface, budget, rep, sampler, 1)


def search_gp_sequential(surface: Surface, budget: int, rep: int) -> Search:
    import optuna

    sampler = optuna.samplers.GPSampler(seed=rep, n_startup_trials=RUNS_PER_WAVE)
    return optuna_batches(surface, budget, rep, sampler, 1)


def ax_generation_strategy(rep: int):
    """Exactly 16 Sobol trials, all observed before the model takes over; then BoTorch with no limit and no cap."""
    from ax.adapter.registry import Generators
    from ax.generation_strategy.generation_node import GenerationStep
    from ax.generation_strategy.generation_strategy import GenerationStrategy

    return GenerationStrategy(name=f"Sobol{RUNS_PER_WAVE}+BoTorch", nodes=[
        GenerationStep(generator=Generators.SOBOL, num_trials=RUNS_PER_WAVE, min_trials_observed=RUNS_PER_WAVE,
                       generator_kwargs={"seed": rep}, should_deduplicate=True),
        # Ax's default modular BoTorch generator: SingleTaskGP and qLogNoisyExpectedImprovement.
        GenerationStep(generator=Generators.BOTORCH_MODULAR, num_trials=-1, max_parallelism=None,
                       should_deduplicate=True),
    ])


def search_ax_batch(surface: Surface, budget: int, rep: int) -> Search:
    from ax.api.client import Client
    from ax.api.configs import RangeParameterConfig

    for handler in logging.getLogger("ax").handlers:  # Ax logs every trial at INFO
        handler.setLevel(logging.WARNING)
    client = Client(random_seed=rep)
    client.configure_experiment(name=f"bench-ax-{surface.name}-{rep}", parameters=[
        RangeParameterConfig(name=name, parameter_type="int" if box.integer else "float",
                             bounds=(int(box.low), int(box.high)) if box.integer else (box.low, box.high),
                             scaling="log" if box.scale == "log" else "linear")
        for name, box in surface.factors.items()])
    client.configure_optimization(objective="-y" if surface.goal == "minimize" else "y")
    strategy = ax_generation_strategy(rep)
    client.set_generation_strategy(strategy)
    points: list[dict] = []
    values: list[float] = []
    batches: list[int] = []
    while len(points) < budget:
        want = min(RUNS_PER_WAVE, budget - len(points))
        # Move the strategy past the Sobol step first: asked while still on it (all 16 observed, none left to
        # generate), get_next_trials caps the whole request at what Sobol may still generate, i.e. one trial.
        strategy.current_generator_run_limit()
        trials = client.get_next_trials(max_trials=want)
        if len(trials) != want:
            raise RuntimeError(f"Ax returned {len(trials)} trials for a batch of {want}")
        results = {index: surface.sample(params, 1000 * rep + len(points) + i)
                   for i, (index, params) in enumerate(trials.items())}
        # Told only now, after the whole batch was generated.
        for index, params in trials.items():
            client.complete_trial(trial_index=index, raw_data={"y": results[index]})
            points.append({name: params[name] for name in surface.factors})
            values.append(results[index])
        batches.append(len(trials))
    return Search(points, values, batches)


@dataclass(frozen=True)
class Method:
    label: str
    search: Callable[[Surface, int, int], Search]
    pairs: str  # "ols": its own effects fit; "fanova": wavesweep's decomposition when asked; "none": cannot
    peer: bool  # an equal-parallelism peer (waves of 16); False: a reference row


METHODS: dict[str, Method] = {
    "waves": Method("waves (surface fit, all runs)", search_waves, "ols", True),
    "waves_corners": Method("waves, screen: corners", search_waves_corners, "ols", True),
    "ax_batch": Method("Ax Sobol16 + BoTorch, q=16", search_ax_batch, "fanova", True),
    "tpe_batch": Method("Optuna TPE, batches of 16", search_tpe_batch, "fanova", True),
    "gp_batch": Method("Optuna GP, batches of 16", search_gp_batch, "fanova", True),
    "random": Method("random search", search_random, "fanova", True),
    "tpe_seq": Method("Optuna TPE, sequential", search_tpe_sequential, "fanova", False),
    "gp_seq": Method("Optuna GP, sequential (limit)", search_gp_sequential, "fanova", False),
    "greedy": Method("greedy (1 GPU)", search_greedy, "none", False),
}


# --- one task: a method on a surface, one repetition -----------------------------------------------------------------


def _limit_threads() -> None:
    """One torch and one BLAS thread: each task is timed alone, and ``--jobs`` workers do not oversubscribe."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def run_task(surface_name: str, method_key: str, rep: int, budget: int, fanova: bool,
             bootstrap: int, permutations: int) -> Outcome:
    _limit_threads()
    surface = get_surface(surface_name)
    method = METHODS[method_key]
    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature and BoTorch's numerical warnings
        found = method.search(surface, budget, rep)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    start = time.perf_counter()
    reported = found.reported
    if method.pairs == "fanova" and fanova:
        reported = reported_by_fanova(surface, found.points, found.values, rep, bootstrap, permutations)
    pair_seconds = time.perf_counter() - start
    curve = tuple(regret_of_best(surface, found.points[:n], found.values[:n])
                  for n in checkpoints(budget))
    return Outcome(curve[-1], len(found.points), curve, tuple(found.batches), reported, found.designed, seconds,
                   cpu_seconds, pair_seconds)


def _task(args: tuple) -> tuple[tuple, Outcome | str]:
    """Worker entry point: the outcome, or the error in words (a crashing method does not stop the benchmark)."""
    try:
        return args, run_task(*args)
    except Exception:
        return args, traceback.format_exc()


def _worker_init() -> None:
    _limit_threads()
    # Imported once here, so the first task of a process is not timed with the imports (Ax's take seconds).
    import ax.api.client  # noqa: F401
    import botorch  # noqa: F401
    import optuna  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import statsmodels.api  # noqa: F401

    for handler in logging.getLogger("ax").handlers:
        handler.setLevel(logging.WARNING)


# --- scoring ----------------------------------------------------------------------------------------------------------


def checkpoints(budget: int) -> list[int]:
    """Run counts at which the best-so-far is read: after each 16 runs, and the budget."""
    return [min(k * RUNS_PER_WAVE, budget) for k in range(1, math.ceil(budget / RUNS_PER_WAVE) + 1)]


def regret_of_best(surface: Surface, points: list[dict], values: list[float]) -> float:
    """Regret of the best observed run (a method with no runs yet has none: infinite regret)."""
    if not points:
        return math.inf
    pick = np.argmin if surface.goal == "minimize" else np.argmax
    return surface.regret(points[int(pick(values))])


def reported_by_fanova(surface: Surface, points: list[dict], values: list[float], seed: int,
                       bootstrap: int = BOOTSTRAP, permutations: int = PERMUTATIONS) -> frozenset:
    frame = pd.DataFrame(points).assign(y=values)
    infos = {n: FactorInfo(tuple(sorted(frame[n].unique())), box.scale)
             for n, box in surface.factors.items() if frame[n].nunique() >= 2}
    result = decompose(frame, infos, "y", seed=seed, n_bootstrap=bootstrap, n_permutations=permutations,
                       look_ahead=False)  # the pairs are scored; the mains' look-ahead would only cost time
    return frozenset(frozenset(_pair(t.term)) for t in result.terms if t.kind == "pair" and t.verdict == "interaction")


def _pair(term: str) -> tuple[str, str]:
    """The two factors of a two-way term: "a:b", "a:b^2", "a^2:b", "opt[x]:b"."""
    a, b = term.split(":")
    return a.split("^")[0].split("[")[0], b.split("^")[0].split("[")[0]


def spread(surface: Surface, n: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    values = [surface.value(surface.random_point(rng)) for _ in range(n)]
    worst = max(values) if surface.goal == "minimize" else min(values)
    return abs(worst - surface.optimum)


def score(surface: Surface, outcomes: list[Outcome]) -> dict:
    row = _score_pairs(surface, [o.reported for o in outcomes if o.reported is not None], len(outcomes))
    designed = [o.designed for o in outcomes if o.designed is not None]
    row["designed"] = _score_pairs(surface, designed, len(outcomes)) if designed else None
    return {**row, "regret_median": statistics.median(o.regret for o in outcomes),
            "regret_mean": statistics.fmean(o.regret for o in outcomes),
            "curve": [statistics.median(o.curve[k] for o in outcomes) for k in range(len(outcomes[0].curve))],
            "runs": statistics.fmean(o.runs for o in outcomes),
            "seconds": statistics.fmean(o.seconds for o in outcomes),
            "cpu_seconds": statistics.fmean(o.cpu_seconds for o in outcomes),
            "pair_seconds": statistics.fmean(o.pair_seconds for o in outcomes),
            "batches": sorted({batch_text(o.batches) for o in outcomes}),
            "rounds": statistics.fmean(len(o.batches) for o in outcomes)}


def _score_pairs(surface: Surface, found: list[frozenset], n: int) -> dict:
    true = surface.interactions
    hits = sum(len(r & true) for r in found)
    reported = sum(len(r) for r in found)
    recall = hits / (len(true) * len(found)) if found and true else math.nan
    fdr = (reported - hits) / reported if reported else math.nan
    return {"recall": recall if found else None, "fdr": fdr if found else None,
            "reported": reported / n if found else None}


def waves_to_reach(curve: list[float], target: float | None) -> str:
    if target is None:
        return "n/a"
    for k, regret in enumerate(curve, start=1):
        if regret <= target + 1e-12:
            return str(k)
    return f">{len(curve)}"


def batch_text(batches) -> str:
    """Batch sizes, run-length coded: [16, 16, 16, 8] -> "16x3,8"."""
    parts: list[str] = []
    for size, group in itertools.groupby(batches):
        count = len(list(group))
        parts.append(f"{size}x{count}" if count > 1 else str(size))
    return ",".join(parts)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "n/a" if math.isnan(x) else f"{x:.2f}"


# --- the command ------------------------------------------------------------------------------------------------------


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=64, help="runs per method and repetition")
    parser.add_argument("--reps", type=int, default=10, help="repetitions (noise and sampler seeds)")
    parser.add_argument("--surfaces", default=DEFAULT_SURFACES, help="comma list of experiments/surfaces.py names")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of: " + ", ".join(METHODS))
    parser.add_argument("--fanova", default=DEFAULT_FANOVA,
                        help="methods whose runs get wavesweep's fANOVA for pairs (costly); 'none' for none")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the (surface, method, rep) tasks, a fresh one per task; 0: all "
                             "in this process (quick checks only: state can pass from one task to the next)")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    parser.add_argument("--permutations", type=int, default=PERMUTATIONS)
    args = parser.parse_args(argv)
    if args.budget < 1 or args.reps < 1 or args.jobs < 0:
        raise SystemExit("--budget and --reps must be at least 1, --jobs at least 0")
    surfaces = [get_surface(n) for n in _names(args.surfaces, list(_known_surfaces()), "surfaces")]
    methods = _names(args.methods, list(METHODS), "methods")
    fanova = set(_names(args.fanova, list(METHODS), "--fanova methods"))
    fanova &= {m for m in methods if METHODS[m].pairs == "fanova"}

    tasks = [(s.name, m, rep, args.budget, m in fanova, args.bootstrap, args.permutations)
             for s in surfaces for m in methods for rep in range(args.reps)]
    results: dict[tuple[str, str], list[Outcome]] = {}
    errors: dict[tuple[str, str], str] = {}
    started = time.perf_counter()

    def record(task: tuple, result: Outcome | str, done: int) -> None:
        key = (task[0], task[1])
        if isinstance(result, str):
            errors.setdefault(key, result)
            print(f"[{done}/{len(tasks)}] {task[0]} {task[1]} rep {task[2]}: FAILED\n{result}", file=sys.stderr)
            return
        results.setdefault(key, []).append(result)
        print(f"[{done}/{len(tasks)}] {task[0]} {task[1]} rep {task[2]}: regret {result.regret:.4g}, "
              f"batches {batch_text(result.batches)}, {result.seconds:.1f} s"
              + (f" + pairs {result.pair_seconds:.1f} s" if task[4] else ""), file=sys.stderr, flush=True)

    # The slowest methods first, so the pool is not left waiting on one long task at the end.
    order = {"gp_seq": 0, "ax_batch": 1, "gp_batch": 2, "tpe_seq": 3, "tpe_batch": 4}
    tasks.sort(key=lambda t: (order.get(t[1], 9), not t[4]))
    if args.jobs == 0:  # in this process, every task after the other: quick, but state may pass between tasks
        _worker_init()
        for done, task in enumerate(tasks, start=1):
            record(*_task(task), done)
    else:
        import multiprocessing

        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = "1"  # inherited by the workers before they import torch and numpy
        # A fresh process per task (max_tasks_per_child=1), so no library state can pass from one task to the next,
        # at a few seconds of imports each. (Suspected once, from a throwaway script's llm_finetune median of 0.027
        # against the bench's 0.042; not confirmed: runs with reused and with fresh workers gave every regret to the
        # digit, docs/benchmarks.md.)
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, max_tasks_per_child=1) as pool:
            futures = [pool.submit(_task, task) for task in tasks]
            for done, future in enumerate(as_completed(futures), start=1):
                record(*future.result(), done)
    report(surfaces, methods, fanova, args, results, errors, time.perf_counter() - started)


def _known_surfaces() -> list[str]:
    from experiments.surfaces import SURFACES

    return sorted(SURFACES)


def report(surfaces: list[Surface], methods: list[str], fanova: set[str], args, results: dict, errors: dict,
           wall_s: float) -> None:
    marks = checkpoints(args.budget)
    print(f"budget {args.budget} runs per method, {args.reps} repetitions; equal parallelism: batches of "
          f"{RUNS_PER_WAVE}, 16 points before any model on every side; pairs by fANOVA ({args.bootstrap} bootstrap "
          f"fits, {args.permutations} permutations per floor) for: {', '.join(sorted(fanova)) or 'none'}; "
          f"{args.jobs} job(s), {wall_s:.0f} s in all")
    for surface in surfaces:
        scale = spread(surface)
        print(f"\n{surface.name}: {len(surface.factors)} factors, optimum {surface.optimum:g} ({surface.goal}), "
              f"noise SD {surface.noise_sd:g}, spread over the box {scale:.3g}; true pairs: "
              + ", ".join(":".join(sorted(p)) for p in sorted(surface.interactions, key=sorted)))
        rows = {m: score(surface, results[(surface.name, m)]) for m in methods if (surface.name, m) in results
                and len(results[(surface.name, m)]) == args.reps}
        target = rows[REFERENCE]["regret_median"] if REFERENCE in rows else None
        print(f"  {'method':31s} {'runs':>4s} {'rounds':>6s} {'regret med':>10s} {'%spread':>8s} "
              f"{'regret mean':>11s} {'waves to Ax':>11s} {'pairs by':>8s} {'pairs/rep':>9s} {'recall':>6s} "
              f"{'FDR':>5s} {'s/rep':>6s} {'cpu s':>6s} {'+pairs s':>8s}")
        for group in (True, False):
            keys = [m for m in methods if METHODS[m].peer == group]
            if not group and keys:
                print("  -- references, not equal-parallelism peers --")
            for m in keys:
                if (surface.name, m) in errors:
                    print(f"  {METHODS[m].label:31s} FAILED: {errors[(surface.name, m)].strip().splitlines()[-1]}")
                    continue
                if m not in rows:
                    continue
                row = rows[m]
                pairs_by = {"ols": "surface", "none": "cannot"}.get(METHODS[m].pairs, "fANOVA" if m in fanova else "-")
                rep_pairs = "-" if row["reported"] is None else f"{row['reported']:.1f}"
                print(f"  {METHODS[m].label:31s} {row['runs']:4.0f} {row['rounds']:6.1f} {row['regret_median']:10.4g} "
                      f"{100 * row['regret_median'] / scale:7.2f}% {row['regret_mean']:11.4g} "
                      f"{waves_to_reach(row['curve'], target):>11s} {pairs_by:>8s} {rep_pairs:>9s} "
                      f"{_fmt(row['recall']):>6s} {_fmt(row['fdr']):>5s} {row['seconds']:6.1f} "
                      f"{row['cpu_seconds']:6.1f} {row['pair_seconds']:8.1f}")
                if (d := row["designed"]) is not None:
                    print(f"  {'  pairs of its designed waves':31s} {'':4s} {'':6s} {'':10s} {'':8s} {'':11s} {'':11s} "
                          f"{'OLS':>8s} {_fmt(d['reported']):>9s} {_fmt(d['recall']):>6s} {_fmt(d['fdr']):>5s}")
        print(f"  median regret of the recommendation after {', '.join(map(str, marks))} runs; batch sizes seen:")
        for m in methods:
            if m in rows:
                curve = " ".join(f"{v:9.4g}" for v in rows[m]["curve"])
                print(f"    {METHODS[m].label:31s} {curve}   batches: {' | '.join(rows[m]['batches'])}")
        if target is None:
            print(f"  (waves to Ax: n/a, {REFERENCE} was not run on this surface)")
    print(f"\nrounds: batches asked before any of their results was told (a sequential method: one per run). "
          f"waves to Ax: first k with median regret after 16k runs <= {REFERENCE}'s median regret at "
          f"{args.budget} runs. pairs by: surface = significant two-way terms (Holm 0.05) of the second-order fit "
          f"over all the method's runs (analyze --method surface); OLS = the same of the effects fit on the designed "
          f"waves alone (the line under the waves row); fANOVA = wavesweep's decomposition of all the method's runs; '-' = not computed (see "
          f"--fanova); cannot = greedy's path cannot estimate pairs. recall: true pairs reported / true pairs; FDR: "
          f"reported pairs not true / reported pairs. s/rep: wall seconds of search per repetition, one thread "
          f"(cpu s: its CPU seconds); +pairs s: wall seconds of the pair analysis.")


if __name__ == "__main__":
    main()
