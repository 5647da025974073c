"""A run record, in one place: its statuses (one closed set, shared by the store, the executor and the CLI), the
record itself (:class:`RunRecord`: what the store holds of a run, typed, with its flat row), what one attempt ended
with (:class:`RunResult`, which the executor reports and the store records), and what a run cost (the budget's
rule: the strategies stop on it, the dashboard shows it)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any


class RunStatus(str, Enum):
    PENDING = "PENDING"  # in the store, not yet handed to Ray
    RUNNING = "RUNNING"  # a worker started it
    COMPLETE = "COMPLETE"  # run() returned the response metric
    FAILED = "FAILED"  # an exception, a dead or lost worker; error_kind and traceback say which
    DIVERGED = "DIVERGED"  # the loss became NaN/inf or exploded: a result about the configuration
    TIMEOUT = "TIMEOUT"  # ran past resources.timeout_s; its worker was killed
    OOM = "OOM"  # out of memory, on every attempt (each retry ran alone)
    PRUNED = "PRUNED"  # stopped early by the strategy


# Statuses that hold a result of the configuration itself; resume keeps them. A DIVERGED run would diverge again
# with the same seed, so it is not re-run. Everything else (a crash, a driver that died mid-run) is requeued.
FINISHED = frozenset({RunStatus.COMPLETE, RunStatus.DIVERGED, RunStatus.PRUNED})


# A run's flat row names its factor levels and its metrics with these prefixes (a factor and a metric may share a
# name): the store's rows, the dashboard's frames and the export's columns all read them from here.
PARAM, METRIC = "param.", "metric."


def param_key(factor: str) -> str:
    return PARAM + factor


def metric_key(metric: str) -> str:
    return METRIC + metric


class RunRecord(Mapping[str, Any]):
    """One run as the store holds it (``Store.runs`` builds them), read by the strategies, the run loop, the
    reports, the cost model and the export alike.

    Typed where code reasons about a run: ``levels`` (factor -> level), ``metrics`` (name -> final value),
    ``status``, ``wave``, ``seed``, ``cost_s`` (every attempt counted, the budget's rule). As a read-only mapping it is
    the flat row a table wants: ``run_id``, ``cell_key``, ``wave``, ``design``, ``seed``, ``status``, ``attempts``,
    ``param.<factor>``, ``metric.<name>``, timings, error, ``earlier_attempts_s``."""

    __slots__ = ("_row", "levels", "metrics")

    def __init__(self, row: Mapping[str, Any]):
        self._row = dict(row)
        self.levels = {k[len(PARAM):]: v for k, v in self._row.items() if k.startswith(PARAM)}
        self.metrics = {k[len(METRIC):]: v for k, v in self._row.items() if k.startswith(METRIC)}

    @classmethod
    def build(cls, head: Mapping[str, Any], levels: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
              tail: Mapping[str, Any] | None = None) -> RunRecord:
        """A record from its parts, its row in this order (an export's columns follow it): ``head`` (identity,
        status), the levels, the metrics, ``tail`` (timings, error, ...)."""
        return cls({**head, **{PARAM + k: v for k, v in levels.items()},
                    **{METRIC + k: v for k, v in (metrics or {}).items()}, **(tail or {})})

    @property
    def status(self) -> str | None:
        return self._row.get("status")

    @property
    def wave(self) -> int | None:
        return self._row.get("wave")

    @property
    def seed(self) -> int | None:
        return self._row.get("seed")

    @property
    def cost_s(self) -> float | None:
        return run_cost_s(self)

    def value(self, metric: str) -> float | None:
        """The run's result for ``metric``: a finite number from a COMPLETE run, else None (no result yet, a failed
        run, NaN or infinity)."""
        value = self.metrics.get(metric)
        if self.status != RunStatus.COMPLETE or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def prune(self) -> dict[str, Any] | None:
        """Why the pruner stopped the run (``execution/pruning.Decision`` as stored), None unless it is PRUNED."""
        prune = self._row.get("prune")
        return prune if self.status == RunStatus.PRUNED and isinstance(prune, Mapping) else None

    def estimate(self, metric: str) -> float | None:
        """What a model is told of the run: its result (``value``), or for a pruned run of the response the final
        value its curve predicted when it was stopped (else its value at that step, a pessimistic stand-in for an
        improving curve). None for every other run."""
        if (value := self.value(metric)) is not None or (prune := self.prune) is None:
            return value
        guess = prune.get("predicted")
        guess = guess if isinstance(guess, (int, float)) and math.isfinite(guess) else prune.get("value")
        return float(guess) if isinstance(guess, (int, float)) and math.isfinite(guess) else None

    @property
    def saved_s(self) -> float:
        """Device-seconds a pruned run did not spend: what it used x (a full run's steps / the steps it ran - 1), an
        estimate that takes its time per step as constant. 0 for every other run."""
        return saved_s(self.prune, final_cost_s(self))

    def __getitem__(self, key: str) -> Any:
        return self._row[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)

    def __repr__(self) -> str:
        return f"RunRecord({self._row!r})"


def records(runs: Iterable[Mapping[str, Any]]) -> list[RunRecord]:
    """``runs`` as records: a flat row (a test's, a benchmark's, an older caller's) becomes one; a record stays."""
    return [r if isinstance(r, RunRecord) else RunRecord(r) for r in runs]


@dataclass(frozen=True)
class RunResult:
    """What the executor learned about one finished attempt of a cell."""

    status: RunStatus
    metrics: dict[str, float]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_s: float | None = None
    host: str | None = None
    device: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    artifact_dir: str | None = None


def earlier_attempts_s(attempt_log: Iterable[Mapping[str, Any]] | None, status: str) -> float:
    """Device-seconds of the attempts that ended before a run's current or last one (which reports its own cost in
    its metrics): the budget counts every attempt, since a retried run spent GPU time on each. A PENDING run has no
    current attempt, so every ended one is earlier. Wall x gpus; wall alone for an attempt without GPUs."""
    entries = list(attempt_log or [])
    total = 0.0
    for entry in entries[:None if status == RunStatus.PENDING else -1]:
        # An attempt closed because its driver died ends when the next driver started, maybe hours later: its
        # real end is unknown, and counting until then could spend a budget on time no GPU worked.
        if entry.get("error_kind") == "driver_died":
            continue
        try:
            start, end = (datetime.fromisoformat(entry[key]) for key in ("started_at", "finished_at"))
        except (KeyError, TypeError, ValueError):  # never started (its worker died first), or still open
            continue
        # Times read back from a database without time zones (SQLite) are naive UTC.
        start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        gpus = entry.get("gpus")
        gpus = gpus if isinstance(gpus, (int, float)) and gpus > 0 else 1.0
        total += max(0.0, (end - start).total_seconds()) * gpus
    return total


def run_cost_s(run: Mapping[str, Any]) -> float | None:
    """What a run cost, in seconds of the budget's unit: its GPU-seconds (``metric.gpu_s``, wall time x GPUs, set
    by the worker), or its wall time when it held no GPU (a CPU-only study counts run-hours); plus what its earlier
    attempts cost (``earlier_attempts_s``: a retried run spent GPU time on each). None when the run has reported
    neither (not finished, or its worker died before it could, and no earlier attempt ended)."""
    final = final_cost_s(run)
    earlier = run.get("earlier_attempts_s")
    earlier = float(earlier) if isinstance(earlier, (int, float)) and math.isfinite(earlier) and earlier > 0 else 0.0
    if final is None:
        return earlier or None
    return final + earlier


# Where the cost of a run's current or last attempt is read, first usable one wins, and whether it must be positive:
# the worker's GPU-seconds (0 on a run that held no GPU), else its wall time, else the store's (a worker that died
# before it reported). The dashboard reads the same columns in SQL and in pandas.
COST_SOURCES: tuple[tuple[str, bool], ...] = ((METRIC + "gpu_s", True), (METRIC + "wall_s", False), ("wall_s", False))


def final_cost_s(run: Mapping[str, Any]) -> float | None:
    """The cost of a run's current or last attempt alone, as it reported it (see :func:`run_cost_s`)."""
    for key, positive in COST_SOURCES:
        value = run.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 or not positive):
            return float(value)
    return None


def saved_s(prune: Mapping[str, Any] | None, used: float | None) -> float:
    """Device-seconds that a run pruned by ``prune`` (its stored decision) did not spend, having used ``used`` on its
    last attempt: ``used x (full_steps / steps it ran - 1)``, its time per step taken as constant. 0 without a
    decision or a cost. The status, its JSON and the dashboard all count it so."""
    ran = (prune or {}).get("ran_to") or (prune or {}).get("step")
    full = (prune or {}).get("full_steps")
    if used is None or not isinstance(ran, (int, float)) or ran <= 0 or not isinstance(full, (int, float)):
        return 0.0
    return max(0.0, used * (full / ran - 1))


def spent_hours(runs: Iterable[Mapping[str, Any]]) -> tuple[float, float | None]:
    """(GPU-hours the runs used, every attempt counted; mean GPU-hours of a run that reported its cost, its retries
    included, None when none did). A run still waiting for a retry counts in what was used, not in the mean: its
    cost so far is not what a run costs."""
    runs = list(runs)
    spent = sum(c for c in map(run_cost_s, runs) if c is not None)
    done = [run_cost_s(r) for r in runs if final_cost_s(r) is not None]
    return spent / 3600, (sum(done) / len(done) / 3600 if done else None)
