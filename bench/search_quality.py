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
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not an installed package

from bench.search_methods import (
    RUNS_PER_WAVE,
    Search,
    _pair,  # noqa: F401  (unused here, kept importable from here: tests/test_bench_search_quality.py reads it)
    ax_generation_strategy,  # noqa: F401  (as _pair)
    designed_pairs,  # noqa: F401  (as _pair)
    search_ax_batch,
    search_gp_batch,
    search_gp_sequential,
    search_greedy,
    search_random,
    search_tpe_batch,
    search_tpe_sequential,
    search_waves,
    search_waves_corners,
    simulate,  # noqa: F401  (unused here, kept importable from here: tests/test_surface_fit.py imports it)
    surface_pairs,  # noqa: F401  (as _pair)
)
from bench.search_scoring import (
    BOOTSTRAP,
    PERMUTATIONS,
    Outcome,
    _fmt,
    batch_text,
    checkpoints,
    regret_of_best,
    reported_by_fanova,
    score,
    spread,
    waves_to_reach,
)
from experiments.surface import Surface
from experiments.surfaces import get_surface

DEFAULT_SURFACES = "screening,llm_finetune,friedman1,hartmann6,rosenbrock"
DEFAULT_FANOVA = "tpe_batch,ax_batch"
REFERENCE = "ax_batch"  # "waves to Ax" counts against this method's median regret at the full budget


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
