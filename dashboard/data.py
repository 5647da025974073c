"""What each view shows, as DataFrames: SQL for the counts and extremes over all studies, one column-selective
load per study (no ORM objects: 20,000 runs load in well under a second), pandas for the rest. No Streamlit here,
so the app, the tests and ``bench/dashboard_scale.py`` call the same functions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import Engine, String, and_, case, func, or_, select, type_coerce
from sqlalchemy.orm import aliased

from orchestrator.reporting.report import WaveSplit, wave_kind
from orchestrator.run_record import (
    COST_SOURCES,
    METRIC,
    RunStatus,
    earlier_attempts_s,
    metric_key,
    param_key,
    saved_s,
)
from orchestrator.store.models import CurvePointModel, MetricModel, RunModel, StudyModel, WaveModel, decode_float

STATUSES = [s.value for s in RunStatus]
UNFINISHED = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class Study:
    """One study as every per-study view needs it. ``runs`` has one row per run: ``run_id``, ``wave``,
    ``cell_key``, ``seed``, ``status``, ``attempts``, ``started_at``, ``finished_at`` (UTC), ``wall_s``, ``host``,
    ``device``, ``error_kind``, ``error_message``, ``backfill`` (added to fill devices idle at its wave's tail),
    ``param.<factor>``, ``metric.<name>`` and ``cost_s`` (what the run cost: GPU-seconds, or its wall time when it
    held no GPU, as the budget counts it)."""

    name: str
    spec: dict[str, Any]  # as recorded
    factors: list[str]
    metric: str
    goal: str  # minimize or maximize
    mode: str
    stop_reason: str | None
    stopped_at: datetime | None
    # number, design, reason, runs, one column per status present, created_at, finished_at, the driver's idle_s,
    # idle_unit and capacity (NaN where it did not count them), deadline_at (NaT unless it passed), backfill (runs)
    waves: pd.DataFrame
    runs: pd.DataFrame

    @property
    def response(self) -> str:
        return metric_key(self.metric)

    @property
    def split(self) -> WaveSplit:
        """Which waves are designed (the effects fit uses their runs) and which proposed (a model's batch, a
        space-filling sample: the decomposition uses them too)."""
        counts = self.runs["wave"].value_counts()  # not wave_split's loop: 20,000 runs, on every view
        return WaveSplit({int(n): d for n, d in zip(self.waves["number"], self.waves["design"])},
                         {int(n): int(c) for n, c in counts.items()})

    @property
    def live(self) -> bool:
        """Runs are running, or queued in a study that has not stopped (see :func:`_state`)."""
        status = self.runs["status"]
        return bool((status == "RUNNING").any() or (self.stop_reason is None and (status == "PENDING").any()))


# --- all studies ---------------------------------------------------------------------------------------------------

def studies(engine: Engine) -> pd.DataFrame:
    """One row per study: name, state, runs, one column per status, metric, goal, best (best single run),
    gpu_hours, last_update, stop_reason."""
    with engine.connect() as conn:
        rows = conn.execute(select(StudyModel.id, StudyModel.name, StudyModel.spec, StudyModel.updated_at,
                                   StudyModel.stop_reason).order_by(StudyModel.created_at)).all()
        counts = conn.execute(select(RunModel.study_id, type_coerce(RunModel.status, String), func.count())
                              .group_by(RunModel.study_id, RunModel.status)).all()
        metrics = {row.spec["response"]["metric"] for row in rows}
        best = conn.execute(
            select(RunModel.study_id, MetricModel.name, func.min(MetricModel.value), func.max(MetricModel.value))
            .join(MetricModel, MetricModel.run_id == RunModel.id)
            .where(RunModel.status == RunStatus.COMPLETE, MetricModel.kind == "finite", MetricModel.name.in_(metrics))
            .group_by(RunModel.study_id, MetricModel.name)).all()
        cost = conn.execute(_cost_query()).all()
        earlier: dict[int, float] = {}
        for _, study_id, seconds in _earlier_attempts_s(conn):
            earlier[study_id] = earlier.get(study_id, 0.0) + seconds
        last = conn.execute(select(RunModel.study_id, func.max(RunModel.started_at), func.max(RunModel.finished_at))
                            .group_by(RunModel.study_id)).all()
    by_status: dict[int, dict[str, int]] = {}
    for study_id, status, n in counts:
        by_status.setdefault(study_id, {})[status] = n
    extremes = {(study_id, name): (low, high) for study_id, name, low, high in best}
    hours = {study_id: ((seconds or 0.0) + earlier.get(study_id, 0.0)) / 3600 for study_id, seconds in cost}
    latest = {study_id: max((t for t in times if t is not None), default=None) for study_id, *times in last}
    records = []
    for row in rows:
        metric, goal = row.spec["response"]["metric"], row.spec["response"].get("goal", "minimize")
        low, high = extremes.get((row.id, metric), (None, None))
        counts_of = by_status.get(row.id, {})
        records.append({
            "study": row.name, "state": _state(counts_of, row.stop_reason), "runs": sum(counts_of.values()),
            **{s: counts_of.get(s, 0) for s in STATUSES},
            "metric": metric, "goal": goal, "best": low if goal == "minimize" else high,
            "gpu_hours": hours.get(row.id, 0.0),
            "last_update": max((t for t in (latest.get(row.id), row.updated_at) if t is not None), default=None),
            "stop_reason": row.stop_reason,
        })
    columns = ["study", "state", "runs", *STATUSES, "metric", "goal", "best", "gpu_hours", "last_update",
               "stop_reason"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    # Statuses no run of any study has would be columns of zeros: drop them.
    return frame.drop(columns=[s for s in STATUSES if not frame[s].any()])


def _cost_query():
    """Seconds the last (or current) attempt of each study's runs cost (the budget's rule, ``run_record.run_cost_s``,
    without the earlier attempts: :func:`_earlier_attempts_s`): the first usable of ``COST_SOURCES``."""
    query, values = select(RunModel.study_id), []
    for column, positive in COST_SOURCES:
        if column.startswith(METRIC):
            metric = aliased(MetricModel)
            query = query.outerjoin(metric, and_(metric.run_id == RunModel.id,
                                                 metric.name == column.removeprefix(METRIC)))
            value = metric.value
        else:
            value = getattr(RunModel, column)
        values.append(case((value > 0, value)) if positive else value)
    return query.add_columns(func.sum(func.coalesce(*values))).group_by(RunModel.study_id)


def _earlier_attempts_s(conn, study_id: int | None = None) -> list[tuple[int, int, float]]:
    """(run id, study id, seconds) of the runs that spent time on attempts before their last one
    (``run_record.earlier_attempts_s``), of every study or of ``study_id``'s. Only runs with such attempts are read
    (retried, or waiting for a retry): they are few, and their attempt logs are JSON the database cannot sum."""
    query = (select(RunModel.id, RunModel.study_id, type_coerce(RunModel.status, String), RunModel.attempt_log)
             .where(RunModel.attempt_log.is_not(None),
                    or_(RunModel.attempts > 1, RunModel.status == RunStatus.PENDING)))
    if study_id is not None:
        query = query.where(RunModel.study_id == study_id)
    return [(run_id, study, earlier_attempts_s(json.loads(log) if isinstance(log, str) else log, status))
            for run_id, study, status, log in conn.execute(query).all()]


def _state(counts: dict[str, int], stop_reason: str | None) -> str:
    # RUNNING first: a resumed study re-runs its unfinished waves before anything clears its earlier stop reason.
    if counts.get("RUNNING"):
        return "running"
    if stop_reason is not None:
        return "stopped"
    # Not stopped and nothing running: between waves, or the driver is gone (run the same command to resume).
    return "pending" if counts.get("PENDING") else "idle"


# --- one study -----------------------------------------------------------------------------------------------------

def load_study(engine: Engine, name: str) -> Study | None:
    """The study ``name`` with its waves and runs; None when the store has no such study."""
    with engine.connect() as conn:
        row = conn.execute(select(StudyModel.id, StudyModel.spec, StudyModel.stop_reason, StudyModel.stopped_at)
                           .where(StudyModel.name == name)).first()
        if row is None:
            return None
        waves = pd.DataFrame(conn.execute(
            select(WaveModel.number, WaveModel.design, WaveModel.reason, WaveModel.created_at, WaveModel.finished_at,
                   WaveModel.idle_s, WaveModel.idle_unit, WaveModel.capacity, WaveModel.deadline_at)
            .where(WaveModel.study_id == row.id).order_by(WaveModel.number)).all(), columns=_WAVE_COLUMNS)
        counts = conn.execute(
            select(WaveModel.number, type_coerce(RunModel.status, String), func.count())
            .join(RunModel, RunModel.wave_id == WaveModel.id).where(WaveModel.study_id == row.id)
            .group_by(WaveModel.number, RunModel.status)).all()
        runs = conn.execute(
            select(RunModel.id, WaveModel.number, RunModel.cell_key, type_coerce(RunModel.params, String),
                   RunModel.seed,
                   type_coerce(RunModel.status, String), RunModel.attempts, _raw(RunModel.started_at),
                   _raw(RunModel.finished_at), RunModel.wall_s, RunModel.host, RunModel.device, RunModel.error_kind,
                   RunModel.error_message, RunModel.backfill, type_coerce(RunModel.prune, String))
            .join(WaveModel, RunModel.wave_id == WaveModel.id).where(RunModel.study_id == row.id)
            .order_by(WaveModel.number, RunModel.id)).all()
        metrics = conn.execute(
            select(MetricModel.run_id, MetricModel.name, MetricModel.value, MetricModel.kind)
            .join(RunModel, MetricModel.run_id == RunModel.id).where(RunModel.study_id == row.id)).all()
        earlier = {run_id: seconds for run_id, _, seconds in _earlier_attempts_s(conn, row.id)}
    spec = row.spec
    runs = _runs_frame(runs, metrics, list(spec["factors"]), earlier)
    return Study(
        name=name, spec=spec, factors=list(spec["factors"]), metric=spec["response"]["metric"],
        goal=spec["response"].get("goal", "minimize"), mode=spec.get("strategy", {}).get("mode", "auto"),
        stop_reason=row.stop_reason, stopped_at=row.stopped_at, waves=_wave_counts(waves, counts, runs), runs=runs,
    )


_WAVE_COLUMNS = ["number", "design", "reason", "created_at", "finished_at", "idle_s", "idle_unit", "capacity",
                 "deadline_at"]


def _wave_counts(waves: pd.DataFrame, counts: list, runs: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(counts, columns=["number", "status", "n"])
    wide = table.pivot_table(index="number", columns="status", values="n", aggfunc="sum", fill_value=0)
    wide = wide[[s for s in STATUSES if s in wide.columns]]
    out = waves.merge(wide, left_on="number", right_index=True, how="left")
    present = list(wide.columns)
    out[present] = out[present].fillna(0).astype(int)
    out.insert(3, "runs", out[present].sum(axis=1) if present else 0)
    out[["idle_s", "capacity"]] = out[["idle_s", "capacity"]].astype(float)
    out["deadline_at"] = pd.to_datetime(out["deadline_at"], utc=True)
    out["backfill"] = out["number"].map(runs.groupby("wave")["backfill"].sum()).fillna(0).astype(int)
    return out


def _raw(column):
    """A time column as the driver returns it (text on SQLite, stored in UTC), for pandas to parse all at once:
    SQLAlchemy's per-value conversion is a third of the load time of 20,000 runs."""
    return type_coerce(column, String)


_RUN_COLUMNS = ["run_id", "wave", "cell_key", "params", "seed", "status", "attempts", "started_at", "finished_at",
                "wall_s", "host", "device", "error_kind", "error_message", "backfill", "prune"]


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame, built column by column: pandas probes every SQLAlchemy Row for attributes otherwise,
    which costs more than the query on 20,000 runs."""
    values = list(zip(*rows)) if rows else [()] * len(columns)
    return pd.DataFrame(dict(zip(columns, values)), columns=columns)


def _params(values: list) -> list[dict]:
    """Params JSON: text on SQLite, parsed as one array (one json.loads call instead of one per run, 3x faster);
    PostgreSQL's driver hands them over parsed."""
    if values and isinstance(values[0], str):
        return json.loads("[" + ",".join(values) + "]")
    return list(values)


def _runs_frame(rows: list, metric_rows: list, factors: list[str], earlier: dict[int, float]) -> pd.DataFrame:
    runs = _frame(rows, _RUN_COLUMNS)
    runs["backfill"] = runs["backfill"].astype(bool)
    params = pd.DataFrame.from_records(_params(list(runs.pop("params"))), index=runs.index, columns=factors)
    runs[[param_key(f) for f in factors]] = params
    for column in ("started_at", "finished_at"):
        # One unit whatever the values (all NULL parses as seconds): timeline() fills with a microsecond "now".
        runs[column] = pd.to_datetime(runs[column], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    if metric_rows:
        metrics = _frame(metric_rows, ["run_id", "name", "value", "kind"])
        # (value, kind) pairs: databases disagree about NaN and infinity, so the kind says which (models.py).
        special = metrics["kind"] != "finite"
        metrics.loc[special, "value"] = [decode_float(None, k) for k in metrics.loc[special, "kind"]]
        wide = metrics.pivot(index="run_id", columns="name", values="value").add_prefix(METRIC)
        runs = runs.join(wide.astype(float), on="run_id")
    final = _final_cost_s(runs)
    before = runs["run_id"].map(earlier).fillna(0.0).astype(float)
    runs["cost_s"] = final.fillna(0.0).add(before).where(final.notna() | (before > 0))
    # Device-seconds a pruned run did not spend (run_record.saved_s, the status' figure); its decision as a dict.
    prune = [json.loads(p) if isinstance(p, str) and status == RunStatus.PRUNED else None
             for p, status in zip(runs["prune"], runs["status"])]
    runs["prune"] = prune
    runs["saved_s"] = [saved_s(p, None if math.isnan(c) else c) if p else 0.0 for p, c in zip(prune, final)]
    return runs


def _final_cost_s(runs: pd.DataFrame) -> pd.Series:
    """``run_record.final_cost_s``, vectorised: the first usable of ``COST_SOURCES``; NaN when none is. The cost
    column (``run_cost_s``) adds the run's earlier attempts to it."""
    cost = pd.Series(np.nan, index=runs.index)
    for column, positive in COST_SOURCES:
        if column in runs:
            values = pd.to_numeric(runs[column], errors="coerce")
            usable = np.isfinite(values) & ((values > 0) if positive else True)
            cost = cost.where(cost.notna() | ~usable, values)
    return cost


def curve(engine: Engine, run_id: int) -> pd.DataFrame:
    """A run's learning curves: step, name, value (one row per reported point)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(CurvePointModel.step, CurvePointModel.name, CurvePointModel.value, CurvePointModel.kind)
            .where(CurvePointModel.run_id == run_id)
            .order_by(CurvePointModel.name, CurvePointModel.step, CurvePointModel.id)).all()
    return pd.DataFrame([(step, name, decode_float(value, kind)) for step, name, value, kind in rows],
                        columns=["step", "name", "value"])


# --- per-view aggregates -------------------------------------------------------------------------------------------

def completed(study: Study) -> pd.DataFrame:
    """COMPLETE runs with a finite response (the runs the analysis uses)."""
    runs = study.runs
    if study.response not in runs:
        return runs.iloc[0:0]
    return runs[(runs["status"] == "COMPLETE") & np.isfinite(runs[study.response].astype(float))]


def cell_table(study: Study, runs: pd.DataFrame | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Mean response per cell (factor levels) over its completed seeds, best first: the factors, ``n``, ``mean``,
    ``std``, ``ci_low``, ``ci_high`` (1 - alpha, t on n - 1 df; NaN with one seed) and ``cost_s`` (mean)."""
    runs = completed(study) if runs is None else runs
    params = [param_key(f) for f in study.factors]
    if runs.empty:
        return pd.DataFrame(columns=[*study.factors, "n", "mean", "std", "ci_low", "ci_high", "cost_s"])
    # sort=False: levels of one factor may mix types (1.5 and "auto") that cannot be ordered.
    grouped = runs.groupby(params, sort=False, dropna=False)
    table = grouped.agg(**{f: (p, "first") for f, p in zip(study.factors, params)},
                        n=(study.response, "count"), mean=(study.response, "mean"), std=(study.response, "std"),
                        cost_s=("cost_s", "mean")).reset_index(drop=True)
    n = table["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = stats.t.ppf(1 - alpha / 2, n - 1) * table["std"].to_numpy() / np.sqrt(n)
    table["ci_low"], table["ci_high"] = table["mean"] - margin, table["mean"] + margin
    table = table.sort_values("mean", ascending=study.goal == "minimize", kind="stable").reset_index(drop=True)
    return table[[*study.factors, "n", "mean", "std", "ci_low", "ci_high", "cost_s"]]


def prune_words(prune: dict, metric: str) -> str:
    """A pruned run's decision in a sentence: the rule, the step, the numbers, the predicted final."""
    said = (f"Pruned at step {prune['step']} of {prune['full_steps']} by the {prune['rule']} rule: {metric} "
            f"{prune['value']:.4g} against a bar of {prune['threshold']:.4g} + noise margin {prune['margin']:.3g} "
            f"({prune['peers']} peers at that step)")
    if prune.get("predicted") is not None and prune.get("interval"):
        low, high = prune["interval"]
        said += f"; its curve predicts a final {prune['predicted']:.4g} (95% PI [{low:.4g}, {high:.4g}])"
    return said + (f". {prune['note'].capitalize()}." if prune.get("note") else ".")


def wave_progress(study: Study) -> pd.DataFrame:
    """Per wave: number, design, reason, runs, the count per status, done (finished share), cost_s (spent), saved_s
    (what its pruned runs did not spend)."""
    waves = study.waves.copy()
    finished = [s for s in STATUSES if s not in UNFINISHED and s in waves]
    waves["done"] = waves[finished].sum(axis=1) / waves["runs"].where(waves["runs"] > 0) if finished else 0.0
    spent = study.runs.groupby("wave")[["cost_s", "saved_s"]].sum()
    waves["cost_s"] = waves["number"].map(spent["cost_s"]).fillna(0.0)
    waves["saved_s"] = waves["number"].map(spent["saved_s"]).fillna(0.0)
    return waves


def decisions(study: Study) -> pd.DataFrame:
    """Per wave: wave, design, kind ("designed", or "proposed (model)" / "proposed (space_filling)"), reason, runs,
    best (best cell mean over the runs of this and earlier waves), gpu_hours (spent up to this wave)."""
    done = completed(study)
    progress = wave_progress(study)
    best = pd.Series(math.nan, index=progress["number"])
    if len(done):
        # Sums and counts per (cell, wave), accumulated over waves: every prefix's cell means in one pass.
        cell = done.groupby([param_key(f) for f in study.factors], sort=False, dropna=False).ngroup()
        sums = done.groupby([cell, done["wave"]])[study.response].agg(["sum", "count"]).unstack(fill_value=0)
        sums = sums.reindex(columns=pd.MultiIndex.from_product([["sum", "count"], progress["number"]]), fill_value=0)
        means = sums["sum"].cumsum(axis=1) / sums["count"].cumsum(axis=1).where(lambda c: c > 0)
        best = means.min() if study.goal == "minimize" else means.max()
    return pd.DataFrame({"wave": progress["number"], "design": progress["design"],
                         "kind": progress["design"].map(wave_kind), "reason": progress["reason"],
                         "runs": progress["runs"], "best": best.to_numpy(),
                         "gpu_hours": progress["cost_s"].cumsum() / 3600})


def pareto_front(study: Study) -> pd.DataFrame:
    """Cells by mean cost (cost_s) and mean response, with ``front`` True for the cells no other cell beats on
    both: nothing cheaper is as good."""
    cells = cell_table(study)
    cells = cells[cells["cost_s"].notna()].sort_values(["cost_s", "mean"],
                                                       ascending=[True, study.goal == "minimize"])
    sign = 1.0 if study.goal == "minimize" else -1.0
    best_so_far = (sign * cells["mean"]).cummin()
    cells["front"] = (sign * cells["mean"]) <= best_so_far.shift(fill_value=math.inf) - 1e-12
    cells["label"] = describe_cells(cells, study.factors)
    return cells.reset_index(drop=True)


def describe_cells(cells: pd.DataFrame, factors: list[str]) -> pd.Series:
    """"x=1, y=0.5" per row."""
    text = pd.Series("", index=cells.index)
    for i, factor in enumerate(factors):
        text = text + ("" if i == 0 else ", ") + f"{factor}=" + cells[factor].astype(str)
    return text


def filter_runs(runs: pd.DataFrame, statuses: list[str] | None = None, waves: list[int] | None = None,
                levels: dict[str, list] | None = None) -> pd.DataFrame:
    """The runs table under the Runs view's filters (None or empty: no filter)."""
    keep = pd.Series(True, index=runs.index)
    if statuses:
        keep &= runs["status"].isin(statuses)
    if waves:
        keep &= runs["wave"].isin(waves)
    for factor, chosen in (levels or {}).items():
        if chosen:
            keep &= runs[param_key(factor)].isin(chosen)
    return runs[keep]
