"""The driver loop: ask the strategy for a wave, record it, run it, record what happens. The store's only writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from orchestrator.executor import Finished, Job, Progress, Retry, Started
from orchestrator.lease import StudyLease
from orchestrator.references import resolve_all, substitute
from orchestrator.strategies import create_strategy

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.executor import Event, RayExecutor
    from orchestrator.spec import Spec
    from orchestrator.store import Store


class Listener(Protocol):
    def wave_started(self, number: int, cells: list[Cell], reason: str) -> None: ...
    def event(self, event: Event) -> None: ...
    def wave_finished(self, number: int) -> None: ...


@dataclass(frozen=True)
class Outcome:
    study: str
    planned: int  # runs the whole plan needs
    ran: int  # runs executed by this invocation
    runs_per_wave: int
    mode: str  # the strategy that ran (auto resolved)
    stop_reason: str | None = None  # why the study stopped (also stored with the study)


# Why a strategy that gives no reason of its own stopped proposing waves.
_DONE = {"grid": "every cell of the full factorial is recorded"}


def run_study(spec: Spec, store: Store, executor: RayExecutor, listener: Listener | None = None) -> Outcome:
    """Run a study to the end of its plan, resuming from whatever the store already holds.

    Resume rule: finished cells (COMPLETE, DIVERGED, PRUNED) are kept; every other cell of a recorded wave, such as
    RUNNING ones a dead driver left behind or FAILED ones, runs again in its wave. Then new waves follow, until the
    strategy proposes none or the budget (``max_waves``, ``max_runs``, ``max_gpu_hours``: ``Strategy.budget_stop``)
    stops the study before a wave; the reason is stored with the study (``Store.study_info``).

    The study's lease (``orchestrator/lease.py``) is held throughout: a second driver of the same study is refused
    with :class:`~orchestrator.lease.StudyBusy` before it writes anything (the CLI takes it before starting Ray).
    """
    executor.check_fits(spec)  # in seconds, before anything is written: a run cannot span nodes
    slots = executor.slots(spec)
    strategy = create_strategy(spec, slots)
    runs_per_wave = spec.strategy.runs_per_wave or slots
    # Both before the first write: a plan over budget or a dangling store reference stores nothing.
    strategy.check_budget(runs_per_wave)
    resolved = resolve_all(spec, store)
    study_id = store.open_study(spec)
    with StudyLease(store, study_id, spec.study) as lease:
        wave = _WaveRunner(spec, store, executor, listener, study_id, resolved, lease)
        return _run_waves(spec, store, strategy, wave, study_id, runs_per_wave)


def _run_waves(spec: Spec, store: Store, strategy, wave: _WaveRunner, study_id: int, runs_per_wave: int) -> Outcome:
    ran = 0
    for number, cells in store.unfinished_waves(study_id):
        ran += wave.run(number, cells, f"resume of wave {number}")
    while True:
        runs = store.runs(spec.study)
        plan = strategy.next_wave(store.known_keys(study_id), runs_per_wave, runs)
        if plan is None:
            stop = _stop_reason(strategy, runs)
        elif stop := strategy.budget_stop(runs, plan.cells):
            stop += f" (it would have been: {plan.reason})"
        if stop is not None:
            store.stop_study(study_id, stop)
            break
        ran += wave.run(store.add_wave(study_id, plan), plan.cells, plan.reason)
    return Outcome(spec.study, strategy.planned_runs(), ran, runs_per_wave, strategy.name, stop)


def _stop_reason(strategy, runs: list[dict]) -> str:
    """Why no wave follows: the strategy's own reason, else its budget, else what its mode means by done."""
    if strategy.stop_reason:
        return strategy.stop_reason
    if strategy.adaptive and (budget := strategy.budget_stop(runs)):
        return budget
    return _DONE.get(strategy.name, f"the {strategy.name} strategy proposes no further wave")


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


@dataclass
class _WaveRunner:
    spec: Spec
    store: Store
    executor: RayExecutor
    listener: Listener | None
    study_id: int
    resolved: dict[str, str]  # store reference -> artifact directory
    lease: StudyLease

    def run(self, number: int, cells: list[Cell], reason: str) -> int:
        if self.listener:
            self.listener.wave_started(number, cells, reason)
        jobs, inputs = {}, {}
        for cell in cells:
            params, inputs[cell.key] = substitute({**self.spec.fixed, **cell.levels, "seed": cell.seed}, self.resolved)
            artifact_dir = str(Path(self.spec.artifacts).resolve() / self.spec.study / cell.key)
            jobs[cell.key] = Job(cell, params, artifact_dir)
        self.lease.check()
        for event in self.executor.run(self.spec, list(jobs.values()), poll=self.lease.check):
            if isinstance(event, Started):
                self.store.mark_running(event.cell_key, host=event.host, device=event.device,
                                        started_at=event.started_at, inputs=inputs[event.cell_key], gpus=event.gpus)
            elif isinstance(event, Progress):
                self.store.add_curve_points(event.points)
            elif isinstance(event, Retry):
                self.store.retry_run(event.cell_key, event.result)
            elif isinstance(event, Finished):
                self.store.finish_run(event.cell_key, event.result)
            if self.listener:
                self.listener.event(event)  # after the write: what is shown is what is stored
        self.store.finish_wave(self.study_id, number)
        if self.listener:
            self.listener.wave_finished(number)
        return len(cells)
