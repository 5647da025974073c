"""Runs from outside the store, as the analysis wants them: a CSV file or an Optuna study.

Each source gives a :class:`Runs`: one row per run (factor columns, the response, ``status``), the factors'
:class:`~orchestrator.analysis.FactorInfo`, and notes on what was left out. Optuna is imported only when an Optuna
study is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from orchestrator.analysis import FactorInfo, infer_factors
from orchestrator.errors import WavesweepError
from orchestrator.run_record import metric_key, param_key

if TYPE_CHECKING:
    from orchestrator.reporting.report import WaveSplit

# Optuna trial states -> wavesweep run statuses, so the analysis' failed-runs rule applies to them unchanged.
_OPTUNA_STATUS = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAILED", "RUNNING": "RUNNING",
                  "WAITING": "PENDING"}


@dataclass(frozen=True)
class Runs:
    frame: pd.DataFrame
    factors: dict[str, FactorInfo]
    response: str
    goal: Literal["minimize", "maximize"] | None  # None: the source does not say
    source: str  # in words, for titles
    designed: bool | None  # None: unknown (decided from the data)
    notes: tuple[str, ...] = ()
    fixed: dict = field(default_factory=dict)  # the study's fixed params (an optimizer, use_rslora: read by hints)
    # A study's runs: its waves' kinds, and the wave of each row of ``frame`` (None for a CSV or an Optuna study)
    split: WaveSplit | None = None
    waves: tuple[int, ...] | None = None

    def designed_only(self) -> Runs:
        """The runs of designed waves (all of them where nothing says which waves are designed)."""
        if self.split is None or self.waves is None:
            return self
        keep = set(self.split.designed)
        rows = pd.Series([wave in keep for wave in self.waves], index=self.frame.index, dtype=bool)
        return replace(self, frame=self.frame[rows], waves=tuple(w for w in self.waves if w in keep))


def csv_runs(path: Path, response: str, factors: Iterable[str], log: Iterable[str] = (),
             goal: Literal["minimize", "maximize"] | None = None) -> Runs:
    if not path.is_file():
        raise WavesweepError(f"--csv: file not found: {path}")
    frame = _export_names(pd.read_csv(path), [*factors, *log], response)
    names = list(factors)
    missing = [c for c in [*names, response] if c not in frame.columns]
    if missing:
        raise WavesweepError(f"--csv: no column(s) {missing} in {path}; columns: {list(frame.columns)}")
    try:
        infos = infer_factors(frame, names, log=log)
    except ValueError as exc:
        raise WavesweepError(f"--csv: {exc}") from None
    return Runs(frame, infos, response, goal, path.name, None)


def _export_names(frame: pd.DataFrame, factors: list[str], response: str) -> pd.DataFrame:
    """A `wavesweep export` as is: its columns ``param.<factor>`` and ``metric.<response>`` answer to the names of
    the spec (``--factors learning_rate --response eval_loss``), so effects are named as the spec names them."""
    renames = {param_key(name): name for name in factors if name not in frame.columns}
    if response not in frame.columns:
        renames[metric_key(response)] = response
    return frame.rename(columns={old: new for old, new in renames.items() if old in frame.columns})


def optuna_runs(storage: str, study_name: str, response: str | None = None) -> Runs:
    """The trials of an Optuna study: its parameters as factors, an objective value as the response.

    ``response`` picks an objective of a multi-objective study by its metric name or index (``"0"``); the default
    is the only objective. Log-scale distributions become log-scale factors and categorical ones categorical, so
    effects are coded as the sampler saw the space. A parameter missing from some finished trials (a conditional
    search space) cannot be analysed with the others: it is left out, and a note says so.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise WavesweepError(f"--optuna-study: no study {study_name!r} in the storage; studies there: "
                             f"{', '.join(names) or 'none'}") from None
    except Exception as exc:  # noqa: BLE001 - Optuna raises many kinds for a bad storage URL; say which URL
        from orchestrator.store import mask

        raise WavesweepError(f"--optuna-storage: cannot open {mask(storage)}: {exc}") from None
    names = study.metric_names or [str(i) for i in range(len(study.directions))]
    index = _objective_index(response, names)
    column = response if response and not response.isdigit() else f"value_{index}" if len(names) > 1 else "value"

    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise WavesweepError(f"Optuna study {study_name!r} has no trials")
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    every = set.intersection(*(set(t.params) for t in finished)) if finished else set()
    seen = sorted({p for t in trials for p in t.params})
    kept = [p for p in seen if p in every]
    notes = []
    dropped = [p for p in seen if p not in every]
    if dropped:
        notes.append(f"parameters missing from some finished trials (conditional search space) left out: {dropped}")
    rows = []
    for trial in trials:
        if not all(p in trial.params for p in kept):
            continue  # a running or failed trial that never sampled a parameter: nothing to place it at
        value = trial.values[index] if trial.values is not None else float("nan")
        rows.append({**{p: trial.params[p] for p in kept}, column: value,
                     "status": _OPTUNA_STATUS.get(trial.state.name, trial.state.name)})
    frame = pd.DataFrame(rows, columns=[*kept, column, "status"])
    distributions = finished[-1].distributions if finished else trials[-1].distributions
    infos = {}
    for name in kept:
        dist = distributions[name]
        levels = frame[name].dropna().unique().tolist()
        if len(levels) < 2:
            notes.append(f"parameter {name!r} took one value only ({levels[0]!r}): nothing to estimate, left out")
            frame = frame.drop(columns=name)
            continue
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            infos[name] = FactorInfo(tuple(sorted(levels, key=str)), "linear", "categorical")
        else:
            infos[name] = FactorInfo(tuple(sorted(levels)), "log" if dist.log else "linear", "numeric")
    goal = "maximize" if study.directions[index].name == "MAXIMIZE" else "minimize"
    return Runs(frame, infos, column, goal, f"Optuna study {study_name}", None, tuple(notes))


def _objective_index(response: str | None, names: list[str]) -> int:
    if response is None:
        if len(names) > 1:
            raise WavesweepError(f"--response: the study has {len(names)} objectives; name one of {names} "
                                 f"(or its index 0..{len(names) - 1})")
        return 0
    if response.isdigit() and int(response) < len(names):
        return int(response)
    if response in names:
        return names.index(response)
    raise WavesweepError(f"--response: must name an objective of the study ({names}) or its index; got {response!r}")
