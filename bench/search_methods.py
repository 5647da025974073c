"""The searches that bench/search_quality.py compares, each run in-process against a synthetic surface.

wavesweep's own strategies (mode waves, greedy) are driven as the driver drives them; the batch peers (Optuna TPE,
GP and random search, Ax's Sobol + BoTorch) ask a whole batch before any of its results is told. Every search returns
a :class:`Search`: its runs in the order they were asked and the sizes of its batches. What each method does, and
why the comparison is fair, is told in bench/search_quality.py's docstring.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import pandas as pd

from experiments.surface import Surface
from orchestrator.analysis import FactorInfo, fit_effects, fit_surface
from orchestrator.spec import parse_spec
from orchestrator.strategies import create_strategy
from orchestrator.wave_kinds import is_designed

RUNS_PER_WAVE = 16  # equal parallelism: every batch method asks this many runs before it is told any


@dataclass(frozen=True)
class Search:
    """What a method did: the runs in the order they were asked, and the sizes of its batches."""

    points: list[dict]
    values: list[float]
    batches: list[int]  # runs asked before any result of them was told, batch by batch
    reported: frozenset[frozenset[str]] | None = None  # pairs from the method's own analysis (waves); None: none
    designed: frozenset[frozenset[str]] | None = None  # waves: the pairs of the designed waves' OLS fit alone


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


def suggest(trial, surface: Surface) -> dict:
    """An Optuna trial's point in the surface's box (log factors on a log scale, integers as integers)."""
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
            asked.append((trial, suggest(trial, surface)))
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


def _pair(term: str) -> tuple[str, str]:
    """The two factors of a two-way term: "a:b", "a:b^2", "a^2:b", "opt[x]:b"."""
    a, b = term.split(":")
    return a.split("^")[0].split("[")[0], b.split("^")[0].split("[")[0]

