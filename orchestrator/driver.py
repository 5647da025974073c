"""The driver loop: ask the strategy for a wave, record it, run it, record what happens. The store's only writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from orchestrator.executor import Finished, Progress, Started
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


def run_study(spec: Spec, store: Store, executor: RayExecutor, listener: Listener | None = None) -> Outcome:
    """Run a study to the end of its plan, resuming from whatever the store already holds.

    Resume rule: finished cells (COMPLETE, DIVERGED, PRUNED) are kept; every other cell of a recorded wave, such as
    RUNNING ones a dead driver left behind or FAILED ones, runs again in its wave. Then new waves follow.
    """
    strategy = create_strategy(spec)
    runs_per_wave = spec.strategy.runs_per_wave or executor.slots(spec)
    strategy.check_budget(runs_per_wave)  # before the first write: a plan over budget stores nothing
    study_id = store.open_study(spec)
    ran = 0
    for number, cells in store.unfinished_waves(study_id):
        ran += _run_wave(spec, store, executor, listener, study_id, number, cells, f"resume of wave {number}")
    while (plan := strategy.next_wave(store.known_keys(study_id), runs_per_wave)) is not None:
        number = store.add_wave(study_id, plan)
        ran += _run_wave(spec, store, executor, listener, study_id, number, plan.cells, plan.reason)
    return Outcome(spec.study, strategy.planned_runs(), ran, runs_per_wave)


def has_work(spec: Spec, store: Store) -> bool:
    """Whether ``run_study`` would run anything; read-only, so a finished study needs no Ray at all."""
    study_id = store.study_id(spec.study)
    if study_id is None:
        return True
    if store.unfinished_waves(study_id):
        return True
    return create_strategy(spec).next_wave(store.known_keys(study_id), runs_per_wave=1) is not None


def _run_wave(spec: Spec, store: Store, executor: RayExecutor, listener: Listener | None, study_id: int,
              number: int, cells: list[Cell], reason: str) -> int:
    if listener:
        listener.wave_started(number, cells, reason)
    for event in executor.run(spec, cells):
        if isinstance(event, Started):
            store.mark_running(event.cell_key, host=event.host, device=event.device, started_at=event.started_at)
        elif isinstance(event, Progress):
            store.add_curve_points(event.points)
        elif isinstance(event, Finished):
            store.finish_run(event.cell_key, event.result)
        if listener:
            listener.event(event)  # after the write: what is shown is what is stored
    store.finish_wave(study_id, number)
    if listener:
        listener.wave_finished(number)
    return len(cells)
