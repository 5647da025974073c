"""The run loop, the store's only writer: ask the strategy for a wave, record it, run it, record what happens, until
the strategy or the budget stops the study. :func:`run_study` checks and opens the study, :class:`RunLoop` runs it.

A wave is a designed set of cells; it is not a barrier on the devices. The rules:

- **Release.** grid (a fixed plan) with backfill: every wave at once, so the scheduler can start the longest runs
  of the whole plan first; with a GPU-hours budget, one wave at a time, released as soon as the queue runs dry, so
  the budget is checked per wave. An adaptive strategy (waves, greedy), and any study with ``backfill: false``: the
  next wave once every design cell of the open waves has ended or its wave's deadline has passed, because its design
  depends on their results.
- **Backfill** (adaptive ``waves`` only; grid fills its tails with later waves): while a wave waits for its last
  runs and devices are idle, run replicates of the wave's best cells (new seeds), which sharpen the estimate of the
  configuration a researcher will use. A replicate starts only if it is predicted to end before the straggler it
  waits for: its predicted time must not exceed how long the straggler has already run (under heavy-tailed run
  times a run that has gone on for t is expected to need about t more). Budgets count replicates.
- **Deadline** (``strategy.wave_deadline``): past it the driver stops waiting; the next wave is designed from the
  finished runs while the stragglers run on and are recorded when they end.
- **Pruning** (``strategy.prune``, ``pruning.py``): every learning-curve point of the response metric goes to the
  pruner; a prunable run (a model-proposed wave's, a backfill replicate, a greedy step; a designed cell only with
  ``prune: all``) whose curve is clearly worse than its peers' at the same step is stopped: its next ``ctx.report``
  raises ``Pruned``, the decision is stored with it, and its device goes to the next queued run.
- **Idle device-seconds** are counted by the scheduler and stored against the oldest open wave (the gap while the
  driver designs the next wave counts against the wave before it).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.artifacts import run_location
from orchestrator.cells import Cell, Seeds
from orchestrator.execution.costs import CostModel
from orchestrator.execution.curve_cap import CurveCap
from orchestrator.execution.events import Finished, Job, Progress, Retry, Started
from orchestrator.execution.lease import StudyLease
from orchestrator.execution.outcome import Listener, Outcome
from orchestrator.execution.pruning import Pruner
from orchestrator.execution.references import resolve_all, substitute
from orchestrator.execution.scheduler import EPS, Scheduler
from orchestrator.extras import require
from orchestrator.run_record import RunRecord, RunStatus
from orchestrator.sizing import run_request
from orchestrator.strategies import create_strategy, wave_size
from orchestrator.wave_kinds import GREEDY, is_designed

if TYPE_CHECKING:
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.spec import Spec
    from orchestrator.store import Store

# Why a strategy that gives no reason of its own stopped proposing waves.
_DONE = {"grid": "every cell of the full factorial is recorded"}
IDLE_FLUSH_S = 5.0  # how often idle device-seconds are written (and at every wave's end)
REPLICATE_AMONG = 3  # backfill spreads replicates over the wave's best few points
PRUNE_WAIT_S = 0.1  # the loop's turn while prunable runs are live (0.5 s otherwise): one inbox drain per turn


@dataclass
class OpenWave:
    number: int
    cells: set[str]  # cell keys not yet ended (design and backfill)
    design: set[str]  # design cell keys not yet ended
    size: int  # design cells in all
    first_start: float | None = None  # time.monotonic() of its first run's start
    walls: list[float] = field(default_factory=list)  # wall times of its ended design runs
    deadline_passed: bool = False
    backfilled: int = 0  # replicates added to its tail (at most its size)

    @property
    def blocking(self) -> bool:
        """Whether a result-dependent next wave must still wait for it."""
        return bool(self.design) and not self.deadline_passed


class RunLoop:
    """Runs a study's waves on ``executor`` until the strategy or the budget stops it; returns the stop reason."""

    def __init__(self, spec: Spec, store: Store, strategy, executor, listener, study_id: int,
                 resolved: dict[str, str], lease: StudyLease, runs_per_wave: int):
        self.spec, self.store, self.strategy, self.executor = spec, store, strategy, executor
        self.listener, self.study_id, self.resolved, self.lease = listener, study_id, resolved, lease
        self.runs_per_wave = runs_per_wave
        limits = spec.strategy
        self.lookahead = not strategy.adaptive and limits.backfill and limits.max_gpu_hours is None
        self.replicates = limits.backfill and strategy.name == "waves"
        self.deadline = limits.deadline
        self.open: dict[int, OpenWave] = {}
        self.jobs: dict[str, Job] = {}
        self.wave_of: dict[str, int] = {}
        self.last_wave: int | None = None
        self.stop: str | None = None
        self.ran = 0
        self._asked_at: int | None = None  # runs ended when an adaptive strategy last said "no wave" with runs live
        self._tail_runs: tuple[int, list[dict[str, Any]]] | None = None  # (runs ended, Store.runs) for backfill
        runs = store.runs(spec.study)
        self._done: list[RunRecord] = [r for r in runs if r.status == "COMPLETE"]
        self._fitted_on = -1
        self.costs = CostModel(spec, self._done)
        self._flushed = time.monotonic()
        self.pruner = self._pruner(runs) if limits.prune is not False else None
        self.prunable: set[str] = set()  # cell keys the pruner may stop
        self.group_of: dict[str, str] = {}  # cell key -> its replicate group (_group), made once per queued cell
        self.decided: dict[str, dict] = {}  # cell key -> the decision that stopped it, until it ends
        # A turn's writes go to the store in one transaction (Store.apply), and are shown after it.
        self._ops: list[tuple[str, Any]] = []
        self._shown: list[Any] = []
        self.cap = CurveCap(spec.resources.max_curve_points)

    def _pruner(self, runs: list[RunRecord]) -> Pruner:
        """The pruner, told every recorded curve (a resumed study judges against the runs it already has)."""
        metric = self.spec.response.metric
        pruner = Pruner(self.spec.strategy.prune_rule, self.spec.response.goal, self.spec.strategy.hold_off)
        groups = {r["cell_key"]: _group(r.levels) for r in runs}
        for key, points in self.store.curves(self.spec.study, metric).items():
            for step, value in points:
                pruner.add(key, groups.get(key, key), step, value)
        for r in runs:
            pruner.finished(r["cell_key"], r.value(metric))
        return pruner

    def run(self) -> str:
        with self.executor.session(self.spec) as attempts:
            self.attempts = attempts
            self.sched = Scheduler(attempts, self.executor.capacity(self.spec))
            designs = {w["number"]: w["design"] for w in self.store.waves(self.spec.study)}
            for number, cells in self.store.unfinished_waves(self.study_id):
                self._open(number, cells, f"resume of wave {number}", designs.get(number))
            try:
                while True:
                    self._release()
                    self._backfill()
                    self.sched.tick()
                    self.sched.fill()
                    if not attempts.live and not self.sched.queue and self.stop is not None:
                        break  # (with nothing live and no stop, the next loop releases a wave)
                    free = self.sched.free()
                    for event in list(attempts.step(self.lease.check, self._wait_s())):
                        self._record(event)
                    self._sync()
                    self.sched.tick(free)  # the wait, at what was free during it
                    self._deadlines()
                    if time.monotonic() - self._flushed > IDLE_FLUSH_S:
                        self._flush_idle()
            finally:
                self._sync()  # what the turn saw before an error (a lost lease, Ctrl-C) is kept
            self._flush_idle()
        return self.stop

    def _wait_s(self) -> float:
        """How long a turn of the loop waits for a run to end: less while a prunable run is live, so that a pruned
        run learns it within a step or two of the decision (its curve is read once per turn)."""
        return PRUNE_WAIT_S if self.prunable and not self.prunable.isdisjoint(self.attempts.current) else 0.5

    # --- releasing waves -------------------------------------------------------------------------------------------

    def _ready(self) -> bool:
        if self.stop is not None:
            return False
        if self._asked_at is not None and self._asked_at == self.ran:
            return False  # the strategy said no wave; nothing has ended since that could change its mind
        if self.lookahead:
            return True
        if self.strategy.adaptive or not self.spec.strategy.backfill:
            return not any(w.blocking for w in self.open.values())
        return not self.sched.queue and self.sched.free() > EPS  # grid under a budget: a wave when the queue is dry

    def _release(self) -> None:
        while self._ready():
            runs = self.store.runs(self.spec.study)
            plan = self.strategy.next_wave(self.store.known_keys(self.study_id), self.runs_per_wave, runs)
            if plan is None:
                stop = stop_reason(self.strategy, runs)
            elif stop := self.strategy.budget_stop(runs, plan.cells):
                stop += f" (it would have been: {plan.reason})"
            if stop is not None:
                if self.strategy.adaptive and (self.attempts.live or self.sched.queue):
                    self._asked_at = self.ran  # runs still going may change the decision: ask again later
                    return
                self.stop = stop
                return
            self._asked_at = None
            self._open(self.store.add_wave(self.study_id, plan), plan.cells, plan.reason, plan.design)
            if not self.lookahead:
                return

    def _open(self, number: int, cells: list[Cell], reason: str, design: str | None) -> None:
        if self.listener:
            self.listener.wave_started(number, cells, reason)
        keys = {c.key for c in cells}
        self.open[number] = OpenWave(number, set(keys), set(keys), len(keys))
        self.last_wave = number
        # Designed cells run to the end unless `prune: all`: the effects fit needs every cell's result.
        prunable = self.spec.strategy.prune == "all" or not is_designed(design) or design == GREEDY
        for cell in cells:
            self._queue(cell, number, prunable)

    def _queue(self, cell: Cell, number: int, prunable: bool) -> None:
        if self.pruner is not None:
            self.group_of[cell.key] = _group(cell.levels)
            if prunable:
                self.prunable.add(cell.key)
        params, inputs = substitute({**self.spec.fixed, **cell.levels, "seed": cell.seed}, self.resolved)
        artifact_dir = run_location(self.spec.artifacts, self.spec.study, cell.key)
        job = Job(cell, params, artifact_dir, run_request(self.spec, params), inputs)
        self.jobs[cell.key], self.wave_of[cell.key] = job, number
        self.sched.add(job, self._predict(job))

    def _predict(self, job: Job) -> float:
        return self.costs.predict({**self.spec.fixed, **job.cell.levels})

    # --- what happens --------------------------------------------------------------------------------------------

    def _record(self, event) -> None:
        """Act on an event; its store writes wait in ``_ops`` for the turn's one transaction (``_sync``)."""
        ops = self._ops
        if isinstance(event, Started):
            key = event.cell_key
            ops.append(("start", {"cell_key": key, "host": event.host, "device": event.device,
                                  "started_at": event.started_at, "inputs": self.jobs[key].inputs,
                                  "gpus": event.gpus}))
            wave = self.open[self.wave_of[key]]
            if wave.first_start is None:
                wave.first_start = time.monotonic()
            if event.attempt > 1:
                self.cap.forget(key)  # the store clears the failed attempt's curve
                if self.pruner is not None:
                    self.pruner.restart(key)
        elif isinstance(event, Progress):
            kept, thins = self.cap.keep(event.points)
            ops.extend(("thin", t) for t in thins)
            if kept:
                ops.append(("points", kept))
            self._prune(event.points)
        elif isinstance(event, Retry):
            ops.append(("retry", (event.cell_key, event.result)))
            self.sched.add(self.jobs[event.cell_key], 0.0, number=event.attempt + 1, alone=event.alone)
        elif isinstance(event, Finished):
            key = event.cell_key
            if last := self.cap.last(key):
                ops.append(("points", last))  # the last point a run reported is always stored
            self.cap.forget(key)
            ops.append(("finish", (key, event.result)))
            decision = self.decided.pop(key, None)
            if decision is not None and event.result.status == RunStatus.PRUNED:
                # The steps it ran: a few past the decision, until its next batch learnt it (the saving's basis).
                ran = self.pruner.curves[key].last
                ops.append(("prune", (key, {**decision, "ran_to": ran})))
            if self.pruner is not None:
                self.pruner.finished(key, event.result.metrics.get(self.spec.response.metric)
                                     if event.result.status == RunStatus.COMPLETE else None)
            self._ended_run(key, event.result)
        if self.listener:
            self._shown.append(event)

    def _sync(self) -> None:
        """Write the turn's pending operations in one transaction, then show their events: what is shown is what is
        stored. Called at the end of every turn and before any other write or read of the runs."""
        if self._ops:
            ops, self._ops = self._ops, []
            self.store.apply(ops)
        if self._shown:
            shown, self._shown = self._shown, []
            for event in shown:
                self.listener.event(event)

    def _prune(self, points: list[tuple[str, int, dict[str, float]]]) -> None:
        """Tell the pruner the response's new curve points; stop the prunable live runs it judges clearly worse."""
        if self.pruner is None:
            return
        metric, moved = self.spec.response.metric, set()
        for key, step, metrics in points:
            if (value := metrics.get(metric)) is None or key not in self.group_of:
                continue
            self.pruner.add(key, self.group_of[key], step, value)
            if key in self.prunable and key not in self.decided:
                moved.add(key)
        for key in moved:
            if key in self.attempts.current and (decision := self.pruner.judge(key)) is not None:
                self.decided[key] = decision.as_dict()
                self.attempts.prune(key)
                self._ops.append(("prune", (key, self.decided[key])))

    def _ended_run(self, key: str, result) -> None:
        self.ran += 1
        self.prunable.discard(key)
        wave = self.open[self.wave_of[key]]
        wave.cells.discard(key)
        if key in wave.design:
            wave.design.discard(key)
            if result.wall_s is not None:
                wave.walls.append(result.wall_s)
        if result.status == RunStatus.COMPLETE:
            levels = self.jobs[key].cell.levels
            self._done.append(RunRecord.build({"status": "COMPLETE", "wall_s": result.wall_s}, levels))
            self._refit()
        if not wave.cells:
            self._sync()  # the wave's runs are written before the wave is closed
            self._flush_idle()
            self.store.finish_wave(self.study_id, wave.number)
            del self.open[wave.number]
            if self.listener:
                self.listener.wave_finished(wave.number)

    def _refit(self) -> None:
        """Refit the cost model as runs finish (every run at first, then every 10% more) and re-rank the queue."""
        n = len(self._done)
        if n < 50 or n >= 1.1 * self._fitted_on:
            self.costs, self._fitted_on = CostModel(self.spec, self._done), n
            self.sched.reorder(self._predict)

    def _deadlines(self) -> None:
        if self.deadline is None:
            return
        kind, value = self.deadline
        now = time.monotonic()
        for wave in self.open.values():
            if not wave.blocking or wave.first_start is None:
                continue
            if kind == "x":
                if 2 * len(wave.walls) < wave.size or not wave.walls:
                    continue  # the median of fewer than half the runs says little
                limit = value * statistics.median(wave.walls)
            else:
                limit = value
            if now - wave.first_start >= limit:
                wave.deadline_passed = True
                self.store.pass_deadline(self.study_id, wave.number)
                if self.listener:
                    self.listener.deadline_passed(wave.number, len(wave.design), limit)

    def _flush_idle(self) -> None:
        idle = self.sched.take_idle()
        self._flushed = time.monotonic()
        number = min(self.open, default=self.last_wave)
        if number is not None and idle > 0:
            self.store.add_idle(self.study_id, number, idle, self.sched.unit, self.sched.total)

    # --- backfill ---------------------------------------------------------------------------------------------------

    def _backfill(self) -> None:
        if not self.replicates or self.stop is not None or self.sched.queue:
            return
        waiting = [w for w in self.open.values() if w.blocking]
        if not waiting:
            return
        wave = waiting[-1]
        if wave.backfilled >= wave.size:
            return
        elapsed = [t for k in wave.design if (t := self.attempts.running_for(k)) is not None]
        if not elapsed:
            return
        free = self.sched.free()
        if free <= EPS:
            return
        # Read once per ended run, not every 0.5 s of a tail: the records only change when a run ends, or when a
        # replicate is added here (appended below).
        if self._tail_runs is None or self._tail_runs[0] != self.ran:
            self._tail_runs = (self.ran, self.store.runs(self.spec.study))
        runs = self._tail_runs[1]
        for cell, predicted in self._replicates(wave.number, runs, room=wave.size - wave.backfilled):
            free -= (run_request(self.spec, {**self.spec.fixed, **cell.levels}) if self.sched.unit == "GPU"
                     else self.spec.resources.cpus_per_run)
            if free < -EPS or predicted > max(elapsed) or self.strategy.budget_stop(runs, [cell]):
                return
            self.store.add_cells(self.study_id, wave.number, [cell], backfill=True)
            runs.append(RunRecord.build({"cell_key": cell.key, "wave": wave.number, "seed": cell.seed,
                                         "status": "PENDING"}, cell.levels))  # as Store.runs would read it
            wave.cells.add(cell.key)
            wave.backfilled += 1
            self._queue(cell, wave.number, prunable=True)
            if self.listener:
                self.listener.cells_added(wave.number, [cell])

    def _replicates(self, number: int, runs: list[RunRecord], room: int) -> list[tuple[Cell, float]]:
        """Up to ``room`` replicates of wave ``number``'s best finished points (new seeds), with predicted seconds:
        the mean wall time of that point's finished runs."""
        metric, goal = self.spec.response.metric, self.spec.response.goal
        points: dict[str, list[RunRecord]] = {}
        for r in runs:
            if r.wave == number:
                points.setdefault(json.dumps(r.levels, sort_keys=True), []).append(r)
        scored = []
        for key, group in points.items():
            done = [r for r in group if r.status == "COMPLETE" and _number(r.metrics.get(metric))]
            if done:
                mean = statistics.fmean(r.metrics[metric] for r in done)
                walls = [r["wall_s"] for r in done if r.get("wall_s")]
                scored.append((mean if goal == "minimize" else -mean, key, len(group),
                               statistics.fmean(walls) if walls else float("inf")))
        scored.sort()
        best = scored[:REPLICATE_AMONG]
        seeds = Seeds(self.spec.study, self.spec.factors, self.spec.run_seeds, taken=(r["cell_key"] for r in runs))
        out = []
        counts = {key: n for _, key, n, _ in best}
        for _ in range(room):
            if not best:
                break
            _, key, _, wall = min(best, key=lambda b: (counts[b[1]], b[0]))
            counts[key] += 1
            out.append((seeds.cell(json.loads(key)), wall))
        return out


def _group(levels: dict[str, Any]) -> str:
    """Runs at the same levels (replicates) share this key: the pruner's noise margin is their spread."""
    return json.dumps(levels, sort_keys=True, default=str)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def stop_reason(strategy, runs: list[RunRecord]) -> str:
    """Why no wave follows: the strategy's own reason, else its budget, else what its mode means by done."""
    if strategy.stop_reason:
        return strategy.stop_reason
    if strategy.adaptive and (budget := strategy.budget_stop(runs)):
        return budget
    return _DONE.get(strategy.name, f"the {strategy.name} strategy proposes no further wave")


def run_study(spec: Spec, store: Store, executor: RayExecutor, listener: Listener | None = None) -> Outcome:
    """Run a study to the end of its plan, resuming from whatever the store already holds.

    Resume rule: finished cells (COMPLETE, DIVERGED, PRUNED) are kept; every other cell of a recorded wave, such as
    RUNNING ones a dead driver left behind or FAILED ones, runs again in its wave. Then new waves follow, until the
    strategy proposes none or the budget (``max_waves``, ``max_runs``, ``max_gpu_hours``: ``Strategy.budget_stop``)
    stops the study before a wave; the reason is stored with the study (``Store.study_info``). When waves are
    released, what fills their tails and when the driver stops waiting for stragglers: the rules above.

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
        loop = RunLoop(spec, store, strategy, executor, listener, study_id, resolved, lease, runs_per_wave)
        stop = loop.run()
        store.stop_study(study_id, stop)
    return Outcome(spec.study, strategy.planned_runs(), loop.ran, runs_per_wave, strategy.name, stop)


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
