"""Search quality at the same run budget: adaptive waves, greedy, Optuna TPE, random search + fANOVA importance.

On the project's synthetic surfaces (experiments/surfaces.py: known optimum, known interacting pairs), each method
gets the same number of runs, repeated over several seeds. Printed per surface and method:

- regret of the recommended configuration (every method recommends its best observed run; regret is the
  noise-free gap to the optimum, also as % of the surface's spread over the box);
- interaction recall and false discovery among the pairs each method *reports* as interacting:
  - waves: two-way terms significant (Holm, 0.05) in the effects fit of the runs at the corners of the whole box
    (the screening wave and any fold-over), the fit wavesweep itself decides from;
  - greedy: its path cannot estimate interactions (`blind_spots`); it reports none;
  - TPE: wavesweep's fANOVA decomposition (bootstrap CIs + permutation floor) on its trials;
  - random + Optuna fANOVA: Optuna's importance has no pairs and no uncertainty, so it reports none; the same
    random runs through wavesweep's decomposition are a separate row.

Strategies run in-process against the surface (no Ray, no store): the strategy code is the same the driver calls.

    python bench/search_quality.py [--budget 64] [--reps 5] [--surfaces screening,llm_finetune,friedman1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.surfaces import Surface, get_surface
from orchestrator.analysis import FactorInfo, decompose, fit_effects
from orchestrator.spec import parse_spec
from orchestrator.strategies import create_strategy

RUNS_PER_WAVE = 16


@dataclass(frozen=True)
class Outcome:
    regret: float
    runs: int
    reported: frozenset[frozenset[str]] | None  # None: the method reports no interactions at all
    seconds: float


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
            runs.append({"wave": wave, "cell_key": cell.key, "seed": cell.seed, "status": "COMPLETE",
                         "wall_s": 1.0, **{f"param.{k}": v for k, v in cell.levels.items()}, "metric.y": value})
            known.add(cell.key)
    return runs


def best_params(surface: Surface, points: list[dict], values: list[float]) -> dict:
    pick = np.argmin if surface.goal == "minimize" else np.argmax
    return points[int(pick(values))]


def run_waves(surface: Surface, budget: int, rep: int) -> Outcome:
    start = time.perf_counter()
    spec = surface.spec(f"bench-waves-{rep}", mode="waves", runs_per_wave=RUNS_PER_WAVE, max_runs=budget,
                        max_waves=max(1, budget // RUNS_PER_WAVE), seeds=[rep])
    runs = simulate(surface, spec, budget, RUNS_PER_WAVE, rep)
    points = [{n: r[f"param.{n}"] for n in surface.factors} for r in runs]
    best = best_params(surface, points, [r["metric.y"] for r in runs])
    # The screening fit: runs at the corners of the whole box, coded with the box's two ends as levels.
    corners = [p | {"y": r["metric.y"]} for p, r in zip(points, runs)
               if all(p[n] in (box.low, box.high) for n, box in surface.factors.items())]
    frame = pd.DataFrame(corners)
    infos = {n: FactorInfo((box.low, box.high), box.scale) for n, box in surface.factors.items()}
    fit = fit_effects(frame, infos, "y", adjust="holm")
    reported = frozenset(frozenset(_pair(t.term)) for t in fit.terms if t.significant and t.order == 2)
    return Outcome(surface.regret(best), len(runs), reported, time.perf_counter() - start)


def run_greedy(surface: Surface, budget: int, rep: int) -> Outcome:
    start = time.perf_counter()
    spec = surface.spec(f"bench-greedy-{rep}", mode="greedy", levels=3, max_runs=budget, seeds=[rep])
    runs = simulate(surface, spec, budget, 1, rep)
    points = [{n: r[f"param.{n}"] for n in surface.factors} for r in runs]
    best = best_params(surface, points, [r["metric.y"] for r in runs])
    return Outcome(surface.regret(best), len(runs), None, time.perf_counter() - start)


def optuna_study(surface: Surface, budget: int, rep: int, sampler) -> tuple[object, list[dict], list[float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=surface.goal, sampler=sampler)

    def objective(trial) -> float:
        params = {}
        for name, box in surface.factors.items():
            log = box.scale == "log"
            if box.integer:
                params[name] = trial.suggest_int(name, int(box.low), int(box.high), log=log)
            else:
                params[name] = trial.suggest_float(name, box.low, box.high, log=log)
        return surface.sample(params, 1000 * rep + trial.number)

    study.optimize(objective, n_trials=budget)
    points = [t.params for t in study.trials]
    return study, points, [t.value for t in study.trials]


def reported_by_fanova(surface: Surface, points: list[dict], values: list[float], seed: int) -> frozenset:
    frame = pd.DataFrame(points).assign(y=values)
    infos = {n: FactorInfo(tuple(sorted(frame[n].unique())), box.scale) for n, box in surface.factors.items()}
    result = decompose(frame, infos, "y", seed=seed, n_bootstrap=BOOTSTRAP, n_permutations=PERMUTATIONS)
    return frozenset(frozenset(_pair(t.term)) for t in result.terms if t.kind == "pair" and t.verdict == "interaction")


def run_tpe(surface: Surface, budget: int, rep: int) -> Outcome:
    import optuna

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings of the multivariate sampler
        _, points, values = optuna_study(surface, budget, rep, optuna.samplers.TPESampler(seed=rep, multivariate=True))
    best = best_params(surface, points, values)
    reported = reported_by_fanova(surface, points, values, rep)
    return Outcome(surface.regret(best), budget, reported, time.perf_counter() - start)


def run_random_optuna_fanova(surface: Surface, budget: int, rep: int) -> Outcome:
    import optuna

    start = time.perf_counter()
    study, points, values = optuna_study(surface, budget, rep, optuna.samplers.RandomSampler(seed=rep))
    # Computed to show what the baseline gives: one number per parameter, no pairs, no uncertainty.
    optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=rep))
    best = best_params(surface, points, values)
    return Outcome(surface.regret(best), budget, None, time.perf_counter() - start)


def run_random_wavesweep_fanova(surface: Surface, budget: int, rep: int) -> Outcome:
    import optuna

    start = time.perf_counter()
    _, points, values = optuna_study(surface, budget, rep, optuna.samplers.RandomSampler(seed=rep))
    best = best_params(surface, points, values)
    reported = reported_by_fanova(surface, points, values, rep)
    return Outcome(surface.regret(best), budget, reported, time.perf_counter() - start)


METHODS: dict[str, Callable[[Surface, int, int], Outcome]] = {
    "waves (OLS effects)": run_waves,
    "greedy": run_greedy,
    "TPE + wavesweep fANOVA": run_tpe,
    "random + Optuna fANOVA": run_random_optuna_fanova,
    "random + wavesweep fANOVA": run_random_wavesweep_fanova,
}
BOOTSTRAP, PERMUTATIONS = 100, 99  # decompose()'s defaults: what `wavesweep analyze` uses


# --- scoring ----------------------------------------------------------------------------------------------------------


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
    true = surface.interactions
    found = [o.reported for o in outcomes if o.reported is not None]
    hits = sum(len(r & true) for r in found)
    reported = sum(len(r) for r in found)
    recall = hits / (len(true) * len(found)) if found and true else math.nan
    fdr = (reported - hits) / reported if reported else math.nan
    return {"regret_median": statistics.median(o.regret for o in outcomes),
            "regret_mean": statistics.fmean(o.regret for o in outcomes),
            "runs": statistics.fmean(o.runs for o in outcomes),
            "recall": recall if found else None, "fdr": fdr if found else None,
            "reported": reported / len(outcomes) if found else None,
            "seconds": statistics.fmean(o.seconds for o in outcomes)}


def main() -> None:
    global BOOTSTRAP, PERMUTATIONS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=64, help="runs per method and repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (noise and sampler seeds)")
    parser.add_argument("--surfaces", default="screening,llm_finetune,friedman1")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    parser.add_argument("--permutations", type=int, default=PERMUTATIONS)
    args = parser.parse_args()
    BOOTSTRAP, PERMUTATIONS = args.bootstrap, args.permutations

    print(f"budget {args.budget} runs per method, {args.reps} repetitions; waves of {RUNS_PER_WAVE}; "
          f"fANOVA with {BOOTSTRAP} bootstrap fits and {PERMUTATIONS} permutations per floor")
    for name in args.surfaces.split(","):
        surface = get_surface(name.strip())
        scale = spread(surface)
        print(f"\n{surface.name}: {len(surface.factors)} factors, optimum {surface.optimum:g} ({surface.goal}), "
              f"noise SD {surface.noise_sd:g}, spread over the box {scale:.3g}; true pairs: "
              + ", ".join(":".join(sorted(p)) for p in sorted(surface.interactions, key=sorted)))
        print(f"  {'method':28s} {'runs':>5s} {'regret med':>11s} {'(% spread)':>10s} {'regret mean':>11s} "
              f"{'pairs/rep':>9s} {'recall':>7s} {'FDR':>6s} {'s/rep':>6s}")
        for method, fn in METHODS.items():
            row = score(surface, [fn(surface, args.budget, rep) for rep in range(args.reps)])
            pct = 100 * row["regret_median"] / scale
            rec = "-" if row["recall"] is None else ("n/a" if math.isnan(row["recall"]) else f"{row['recall']:.2f}")
            fdr = "-" if row["fdr"] is None else ("n/a" if math.isnan(row["fdr"]) else f"{row['fdr']:.2f}")
            rep_pairs = "none" if row["reported"] is None else f"{row['reported']:.1f}"
            print(f"  {method:28s} {row['runs']:5.0f} {row['regret_median']:11.4g} {pct:9.2f}% "
                  f"{row['regret_mean']:11.4g} {rep_pairs:>9s} {rec:>7s} {fdr:>6s} {row['seconds']:6.1f}")
    print("\nrecall: true pairs reported / true pairs; FDR: reported pairs that are not true / reported pairs; "
          "'-': the method reports no interactions (greedy cannot estimate them; Optuna's fANOVA has no pairs).")


if __name__ == "__main__":
    main()
