"""`wavesweep analyze`: pick the runs (a study, a CSV, an Optuna study), the method, and print the result.

Three methods, because designed and undesigned runs need different tools:

- ``ols``: effects with CIs from the coded design (:func:`orchestrator.analysis.fit_effects`), for factorial waves
  and grids, plus reparametrisation hints for interactions the literature explains.
- ``fanova``: a random-forest variance decomposition with bootstrap CIs and permutation noise floors
  (:func:`orchestrator.analysis.decompose`), for points no design placed: greedy paths, Optuna or W&B searches.
- ``surface``: a second-order response surface by OLS over every run (:func:`orchestrator.analysis.fit_surface`):
  the interactions of a waves study whose screen was saturated and whose later waves a model proposed.

``auto`` takes ``fanova`` for a greedy study, and for external runs where a factor has more than
:data:`DESIGNED_MAX_LEVELS` distinct values (a sampler's continuous draws); ``ols`` otherwise.

A waves study may mix designed waves with proposed ones (a space-filling sample, a model's batch:
:mod:`orchestrator.wave_kinds`). Its ``ols`` fit (what ``auto`` keeps: a waves study is run for it) uses the runs of
the designed waves only, its ``fanova`` decomposition and ``surface`` fit every run, and the output says which runs
each used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.errors import WavesweepError
from orchestrator.reporting.report import span
from orchestrator.reporting.sources import Runs, csv_runs, optuna_runs

DESIGNED_MAX_LEVELS = 5  # a factorial design rarely has more levels per factor; a sampler's draws nearly all differ
METHODS = ("auto", "ols", "fanova", "surface")


def load_runs(*, study: str | None, store: str | None, csv: Path | None, response: str | None,
              factors: str | None, log: str, optuna_storage: str | None, optuna_study: str | None,
              goal: str | None = None) -> Runs:
    sources = [name for name, given in (("STUDY", study), ("--csv", csv), ("--optuna-storage", optuna_storage))
               if given is not None]
    if len(sources) != 1:
        raise WavesweepError("give one source of runs: a STUDY in the store, --csv FILE (with --response and "
                             "--factors), or --optuna-storage URL --optuna-study NAME; got "
                             + (", ".join(sources) or "none"))
    if optuna_storage is not None:
        if not optuna_study:
            raise WavesweepError("--optuna-storage needs --optuna-study NAME")
        return optuna_runs(optuna_storage, optuna_study, response)
    if csv is not None:
        if not response or not factors:
            raise WavesweepError("--csv needs --response COL and --factors a,b,c")
        if goal not in (None, "minimize", "maximize"):
            raise WavesweepError(f"--goal: must be minimize or maximize; got {goal!r}")
        return csv_runs(csv, response, _names(factors), _names(log), goal)
    return _study_runs(study, store)


def choose_method(method: str, runs: Runs) -> str:
    if method not in METHODS:
        raise WavesweepError(f"--method: must be one of {', '.join(METHODS)}; got {method!r}")
    if method != "auto":
        return method
    if runs.designed is not None:
        if runs.split is not None and not runs.split.designed:
            return "fanova"  # every wave was proposed: nothing the coded fit may use
        return "ols" if runs.designed else "fanova"
    many = [n for n in runs.factors if runs.frame[n].nunique() > DESIGNED_MAX_LEVELS]
    return "fanova" if many else "ols"


def analyze(runs: Runs, method: str, *, fmt: str, adjust: str, alpha: float, seed: int,
            console: Console, detect: float | None = None) -> None:
    from orchestrator.analysis import decompose, fit_effects, fit_surface, reparam_hints
    from orchestrator.reporting.report import (
        needed_runs,
        print_decomposition,
        print_effects,
        print_hints,
    )

    if fmt not in ("table", "json", "csv"):
        raise WavesweepError(f"--format: must be table, json or csv; got {fmt!r}")
    if adjust not in ("holm", "fdr_bh", "none"):
        raise WavesweepError(f"--adjust: must be holm, fdr_bh or none; got {adjust!r}")
    if not 0 < alpha < 1:
        raise WavesweepError(f"--alpha: must be between 0 and 1; got {alpha}")
    if detect is not None and not (detect > 0 and detect < float("inf")):
        raise WavesweepError(f"--detect: must be a positive coded effect; got {detect}")
    asked, method = method, choose_method(method, runs)
    title = f"{runs.response} in {runs.source}" + (f" ({runs.goal})" if runs.goal else "")
    fallback = None
    if asked == "auto" and method == "fanova" and (runs.split is None or runs.split.designed) \
            and (few := _too_few_for_fanova(runs)):
        # A short greedy path: a forest on a handful of runs says nothing. The coded fit still shows, through
        # its aliasing, which interactions the runs cannot separate.
        method, fallback = "ols", few
    runs, used = runs_for(method, runs)
    try:
        if method == "ols":
            result = fit_effects(runs.frame, runs.factors, runs.response, alpha=alpha,
                                 adjust=None if adjust == "none" else adjust)
            # A CSV says nothing of the goal: hints then assume a loss (minimize), as they say.
            hints = reparam_hints(result, runs.factors, runs.frame, fixed=runs.fixed, goal=runs.goal or "minimize")
        elif method == "surface":
            result = fit_surface(runs.frame, runs.factors, runs.response, alpha=alpha,
                                 adjust=None if adjust == "none" else adjust)
            hints = []
        else:
            result = decompose(runs.frame, runs.factors, runs.response, alpha=alpha, seed=seed)
            hints = []
    except ValueError as exc:
        which = f" ({used['note']})" if used else ""
        raise WavesweepError(f"cannot analyse {runs.source} by {method}{which}: {exc}") from None
    if runs.notes or fallback:
        result = replace(result, notes=(*runs.notes, *([fallback] if fallback else []), *result.notes))

    if fmt == "json":
        out: dict[str, Any] = result.to_dict()
        out["method_used"] = method
        if used:
            out["runs_used"] = used
        if method == "ols":
            out["hints"] = [h.to_dict() for h in hints]
        if method == "ols" and detect is not None:
            out["runs_needed"] = {"effect": detect, "power": 0.8, "runs": needed_runs(result, detect)}
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    elif fmt == "csv":
        frame = result.to_frame()
        if used:  # every row's estimate comes from the same runs
            frame = frame.assign(runs_used=used["runs"], waves_used=" ".join(map(str, used["waves"])))
        sys.stdout.write(frame.to_csv(index=False))
    else:
        if used:
            console.print(f"Runs: {used['note']}.", highlight=False, soft_wrap=True, markup=False)
        if method == "ols":
            print_effects(console, result, f"Effects on {title}", detect)
            print_hints(console, hints)
        elif method == "surface":
            print_effects(console, result, f"Response surface of {title} (second-order, every run)", power=False)
        else:
            print_decomposition(console, result, f"Variance decomposition of {title}")


def runs_for(method: str, runs: Runs) -> tuple[Runs, dict[str, Any] | None]:
    """The runs ``method`` may use and, for a study with proposed waves, which ones in JSON form (runs, waves,
    designs, left_out, note); None for every other source, whose output stays as it was.

    The coded OLS fit takes the designed waves' runs only: a proposed wave's points are no design, and would lend
    the fit's aliasing and intervals a geometry they do not have. The decomposition is made for undesigned points,
    so it takes them all."""
    split = runs.split
    if split is None or not split.has_proposals:
        return runs, None
    if method in ("fanova", "surface"):
        what = "decomposition" if method == "fanova" else "second-order fit"
        return runs, {**split.to_dict(split.designs), "left_out": None, "note": f"{what} of {split.all_runs()}"}
    if not split.designed:
        raise WavesweepError(f"--method ols: every wave of {runs.source} is proposed ({span(split.proposed)}: "
                             f"{', '.join(split.names(split.proposed))}), not a design the effects fit may use; "
                             f"--method fanova decomposes all {split.n_all} runs")
    note = f"effects from {split.used()}; {split.left_out()}; `--method fanova` decomposes all {split.n_all}"
    left_out = {**split.to_dict(split.proposed), "why": "not a design"}
    return runs.designed_only(), {**split.to_dict(split.designed), "left_out": left_out, "note": note}


def _too_few_for_fanova(runs: Runs) -> str | None:
    from orchestrator.analysis import select_runs

    used = len(select_runs(runs.frame, runs.response).runs)
    needed = 2 * len(runs.factors) + 2
    if used >= needed:
        return None
    return (f"{used} usable runs are too few for the variance decomposition of undesigned runs (it needs "
            f"2 x factors + 2 = {needed}): fitted by OLS on the coded factors instead, whose aliasing shows what "
            "the runs cannot separate")


def _study_runs(study: str, store: str | None) -> Runs:
    from orchestrator.analysis import factor_infos
    from orchestrator.reporting.report import recorded_spec, study_frame, wave_split
    from orchestrator.spec import parse_spec
    from orchestrator.store import Store
    from orchestrator.wave_kinds import resolved_mode

    db = Store(store, writer=False)
    spec = parse_spec(recorded_spec(db, study), check_experiment=False)
    metric = spec.response.metric
    records, waves = db.runs(study), db.waves(study)
    frame = study_frame(records, list(spec.factors), metric)
    # A greedy path is not a design: one factor at a time leaves most pairs unseparated. Every other mode runs
    # designs (auto resolves to greedy only on one slot, and the runs say which: greedy's first wave is the
    # replicated start point), possibly followed by proposed waves (see runs_for).
    greedy = resolved_mode(spec.strategy.mode, waves[0]["design"] if waves else None) == "greedy"
    run_waves = tuple(int(r["wave"]) for r in records)
    split = wave_split({w["number"]: w["design"] for w in waves}, run_waves)
    return Runs(frame, factor_infos(spec.factors), metric, spec.response.goal, f"study {study}", not greedy,
                fixed=dict(spec.fixed), split=split, waves=run_waves)


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
