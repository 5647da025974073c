"""The driver loop: ask the strategy for a wave, record it, run it, record what happens. The store's only writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from orchestrator.execution.lease import StudyLease
from orchestrator.execution.pipeline import Pipeline
from orchestrator.execution.references import resolve_all
from orchestrator.extras import require
from orchestrator.strategies import create_strategy, wave_size

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.execution.executor import Event, RayExecutor
    from orchestrator.spec import Spec
    from orchestrator.store import Store


class Listener(Protocol):
    """What the run loop tells whoever shows a study's progress (``reporting/progress.py``)."""

    def wave_started(self, number: int, cells: list[Cell], reason: str) -> None: ...
    def event(self, event: Event) -> None: ...
    def wave_finished(self, number: int) -> None: ...
    def cells_added(self, number: int, cells: list[Cell]) -> None: ...  # backfill replicates joined the wave
    def deadline_passed(self, number: int, running: int, limit_s: float) -> None: ...  # stopped waiting for it


# `wavesweep run`'s exit status for a study that ended without a result; 1 stays "an error before or while running".
NO_RESULT = 3


@dataclass(frozen=True)
class Outcome:
    study: str
    planned: int  # runs the whole plan needs
    ran: int  # runs executed by this invocation
    runs_per_wave: int
    mode: str  # the strategy that ran (auto resolved)
    stop_reason: str | None = None  # why the study stopped (also stored with the study)


def run_study(spec: Spec, store: Store, executor: RayExecutor, listener: Listener | None = None) -> Outcome:
    """Run a study to the end of its plan, resuming from whatever the store already holds.

    Resume rule: finished cells (COMPLETE, DIVERGED, PRUNED) are kept; every other cell of a recorded wave, such as
    RUNNING ones a dead driver left behind or FAILED ones, runs again in its wave. Then new waves follow, until the
    strategy proposes none or the budget (``max_waves``, ``max_runs``, ``max_gpu_hours``: ``Strategy.budget_stop``)
    stops the study before a wave; the reason is stored with the study (``Store.study_info``). When waves are
    released, what fills their tails and when the driver stops waiting for stragglers: ``pipeline.py``.

    The study's lease (``lease.py``) is held throughout: a second driver of the same study is refused with
    :class:`~orchestrator.execution.lease.StudyBusy` before it writes anything (the CLI takes it before starting
    Ray).
    """
    executor.check_fits(spec)  # in seconds, before anything is written: a run cannot span nodes
    executor.check_artifacts(spec)  # every node sees the artifacts (or they go to an object store)
    runs_per_wave = wave_size(spec, executor.slots(spec))
    strategy = create_strategy(spec, runs_per_wave)
    for extra in strategy.extras:
        require(extra)  # `auto` may have resolved to a mode whose extra is missing: refuse before any write
    # Both before the first write: a plan over budget or a dangling store reference stores nothing.
    strategy.check_budget(runs_per_wave)
    resolved = resolve_all(spec, store)
    study_id = store.open_study(spec)
    with StudyLease(store, study_id, spec.study) as lease:
        pipeline = Pipeline(spec, store, strategy, executor, listener, study_id, resolved, lease, runs_per_wave)
        stop = pipeline.run()
        store.stop_study(study_id, stop)
    return Outcome(spec.study, strategy.planned_runs(), pipeline.ran, runs_per_wave, strategy.name, stop)


def has_work(spec: Spec, store: Store) -> bool:
    """Whether ``run_study`` would run anything; read-only, so a finished study needs no Ray at all."""
    study_id = store.study_id(spec.study)
    if study_id is None:
        return True
    if store.unfinished_waves(study_id):
        return True
    if spec.strategy.mode != "grid":
        return True  # an adaptive strategy decides from the results and the cluster's size: ask it under Ray
    return create_strategy(spec).next_wave(store.known_keys(study_id), 1, store.runs(spec.study)) is not None


def exit_code(runs: list[dict]) -> int:
    """`wavesweep run`'s exit status once the study ended: 0 when a run is COMPLETE, :data:`NO_RESULT` when none is
    (every run FAILED, DIVERGED, ...), so that a job runner such as ``ray job submit`` reports the study as failed.
    A single COMPLETE run is a result; how many runs failed around it is for `wavesweep status` to say."""
    return 0 if any(r["status"] == "COMPLETE" for r in runs) else NO_RESULT
