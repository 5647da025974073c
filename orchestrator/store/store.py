"""The store: the study's source of truth. The driver is its only writer; readers (status, export) only read."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from orchestrator.cells import Cell
from orchestrator.errors import StoreError, StudyMismatch
from orchestrator.run_record import FINISHED, RunRecord, RunResult, RunStatus, earlier_attempts_s
from orchestrator.store.engine import ensure_schema, make_engine, mask, resolve_url, session_scope
from orchestrator.store.models import (
    CurvePointModel,
    MetricModel,
    RunModel,
    StudyModel,
    WaveModel,
    decode_float,
    encode_float,
    utcnow,
)

if TYPE_CHECKING:
    from orchestrator.cells import WavePlan
    from orchestrator.spec import Spec


class Store:
    def __init__(self, url: str | None = None, *, writer: bool = True):
        """``writer=False`` for processes that only read (status, export, the dashboard): a reader never creates the
        store, its schema or its file (StoreError "no store at ...: run a study first") and never migrates it."""
        self.url = resolve_url(url)
        self.engine = make_engine(self.url, writer=writer)
        try:
            ensure_schema(self.engine, self.url, writer=writer)
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ids: dict[str, int] = {}  # cell key -> run id, filled as batches name runs (``_run_ids``)

    @property
    def display_url(self) -> str:
        return mask(self.url)

    def session(self):
        return session_scope(self._sessions, self.url)

    def close(self) -> None:
        self.engine.dispose()

    # --- studies and waves -------------------------------------------------------------------------------------

    def open_study(self, spec: Spec) -> int:
        """The study's id, creating it on first use. A name already used with another experiment, other fixed
        params or another response is refused: its recorded runs would silently mix with the new ones."""
        try:
            return self._open_study(spec)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            return self._open_study(spec)  # another driver created the study at the same moment: open theirs

    def _open_study(self, spec: Spec) -> int:
        with self.session() as s:
            study = s.scalar(select(StudyModel).where(StudyModel.name == spec.study))
            if study is None:
                study = StudyModel(name=spec.study, spec=spec.model_dump(mode="json"), fingerprint=spec.fingerprint())
                s.add(study)
                s.flush()
                return study.id
            if study.fingerprint != spec.fingerprint():
                raise StudyMismatch(_mismatch_message(spec, study.spec, self.display_url))
            study.spec = spec.model_dump(mode="json")  # may have gained levels or seeds
            return study.id

    def study_id(self, name: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(StudyModel.id).where(StudyModel.name == name))

    def known_keys(self, study_id: int) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(RunModel.cell_key).where(RunModel.study_id == study_id)))

    def add_wave(self, study_id: int, plan: WavePlan) -> int:
        """Record a wave and its cells as PENDING, in one transaction, before anything is scheduled."""
        with self.session() as s:
            number = (s.scalar(select(func.max(WaveModel.number)).where(WaveModel.study_id == study_id)) or 0) + 1
            wave = WaveModel(study_id=study_id, number=number, design=plan.design, reason=plan.reason)
            s.add(wave)
            s.flush()
            s.add_all(RunModel(study_id=study_id, wave_id=wave.id, cell_key=c.key, params=c.levels, seed=c.seed,
                               status=RunStatus.PENDING) for c in plan.cells)
            # A study that gets a new wave goes on: an earlier stop (e.g. a budget since raised) no longer holds.
            s.execute(update(StudyModel).where(StudyModel.id == study_id).values(stop_reason=None, stopped_at=None))
            return number

    def add_cells(self, study_id: int, number: int, cells: list[Cell], *, backfill: bool = True) -> None:
        """Add cells to recorded wave ``number`` as PENDING (``backfill``: to fill devices idle at its tail)."""
        with self.session() as s:
            wave_id = s.scalar(select(WaveModel.id).where(WaveModel.study_id == study_id, WaveModel.number == number))
            s.add_all(RunModel(study_id=study_id, wave_id=wave_id, cell_key=c.key, params=c.levels, seed=c.seed,
                               status=RunStatus.PENDING, backfill=backfill) for c in cells)

    def add_idle(self, study_id: int, number: int, seconds: float, unit: str, capacity: float) -> None:
        """Count ``seconds`` more idle device-seconds (``unit``: GPU or CPU) against wave ``number``."""
        with self.session() as s:
            s.execute(update(WaveModel).where(WaveModel.study_id == study_id, WaveModel.number == number)
                      .values(idle_s=func.coalesce(WaveModel.idle_s, 0.0) + seconds, idle_unit=unit,
                              capacity=capacity))

    def pass_deadline(self, study_id: int, number: int) -> None:
        """Record that the driver stopped waiting for wave ``number``'s stragglers (they run on)."""
        with self.session() as s:
            s.execute(update(WaveModel).where(WaveModel.study_id == study_id, WaveModel.number == number)
                      .values(deadline_at=utcnow()))

    def stop_study(self, study_id: int, reason: str) -> None:
        """Record why the study stopped: the strategy proposes no wave, or the budget forbids the next one."""
        with self.session() as s:
            s.execute(update(StudyModel).where(StudyModel.id == study_id)
                      .values(stop_reason=reason, stopped_at=utcnow()))

    # --- the study lease: one driver per study ------------------------------------------------------------------

    def take_lease(self, study_id: int, driver: str, ttl_s: float, *, take_from: str | None = None) -> bool:
        """Make ``driver`` the study's driver for ``ttl_s`` seconds, in one conditional UPDATE: only if no driver
        holds it, its lease expired, or it is ``take_from`` (a holder known to be dead). False: another holds it."""
        now = utcnow()
        free = [StudyModel.driver.is_(None), StudyModel.driver == driver, StudyModel.lease_until < now]
        if take_from is not None:
            free.append(StudyModel.driver == take_from)
        with self.session() as s:
            taken = s.execute(update(StudyModel).where(StudyModel.id == study_id, or_(*free))
                              .values(driver=driver, lease_since=now, lease_until=now + timedelta(seconds=ttl_s),
                                      updated_at=StudyModel.updated_at))
            return taken.rowcount == 1

    def renew_lease(self, study_id: int, driver: str, ttl_s: float) -> bool:
        """Extend ``driver``'s lease; False if it no longer holds it (it expired and another driver took it)."""
        with self.session() as s:
            renewed = s.execute(update(StudyModel).where(StudyModel.id == study_id, StudyModel.driver == driver)
                                .values(lease_until=utcnow() + timedelta(seconds=ttl_s),
                                        updated_at=StudyModel.updated_at))
            return renewed.rowcount == 1

    def release_lease(self, study_id: int, driver: str) -> None:
        with self.session() as s:
            s.execute(update(StudyModel).where(StudyModel.id == study_id, StudyModel.driver == driver)
                      .values(driver=None, lease_since=None, lease_until=None, updated_at=StudyModel.updated_at))

    def lease(self, study_id: int) -> dict[str, Any] | None:
        """The study's lease: ``driver``, ``since``, ``until``; None when no driver holds it."""
        with self.session() as s:
            row = s.execute(select(StudyModel.driver, StudyModel.lease_since, StudyModel.lease_until)
                            .where(StudyModel.id == study_id)).first()
        if row is None or row.driver is None:
            return None
        return {"driver": row.driver, "since": row.lease_since, "until": row.lease_until}

    def unfinished_waves(self, study_id: int) -> list[tuple[int, list[Cell]]]:
        """(wave number, cells to run) for every wave holding cells that are not finished, oldest first."""
        with self.session() as s:
            rows = s.execute(
                select(WaveModel.number, RunModel.cell_key, RunModel.params, RunModel.seed)
                .join(RunModel, RunModel.wave_id == WaveModel.id)
                .where(RunModel.study_id == study_id, RunModel.status.not_in(FINISHED))
                .order_by(WaveModel.number, RunModel.id)
            ).all()
        waves: dict[int, list[Cell]] = defaultdict(list)
        for number, key, params, seed in rows:
            waves[number].append(Cell(key=key, levels=params, seed=seed))
        return list(waves.items())

    def finish_wave(self, study_id: int, number: int) -> None:
        with self.session() as s:
            s.execute(update(WaveModel).where(WaveModel.study_id == study_id, WaveModel.number == number)
                      .values(finished_at=utcnow()))

    # --- runs ----------------------------------------------------------------------------------------------------

    def apply(self, ops: Iterable[tuple[str, Any]]) -> None:
        """Apply write operations in order, in one transaction: all of them, or on any error none. The driver
        gathers a turn's events into one call; each single method below is one operation. Operations:

        - ``("start", {cell_key, host, device, started_at, inputs, gpus})``: ``mark_running``;
        - ``("points", [(cell key, step, {name: value}), ...])``: ``add_curve_points``;
        - ``("thin", (cell key, name, [steps]))``: delete those curve points of the run's metric ``name``;
        - ``("prune", (cell key, decision))``: ``prune_run``;
        - ``("retry", (cell key, RunResult))``: ``retry_run``;
        - ``("finish", (cell key, RunResult))``: ``finish_run``.

        A run's columns are read once per batch and the rules run on them in memory (``_Batch``); what they change is
        written with a few Core statements (executemany), not one ORM load-and-flush per event: a commit costs
        milliseconds on PostgreSQL, a batch pays it once."""
        ops = list(ops)
        for kind, _ in ops:
            if kind not in _KINDS:
                raise ValueError(f"unknown store operation {kind!r}; one of {', '.join(_KINDS)}")
        if not ops:
            return
        with self.session() as s:
            conn = s.connection()
            ids = self._run_ids(conn, {key for op in ops for key in _keys(op)})
            batch = _Batch(ids, _load(conn, {ids[_keys(op)[0]] for op in ops if op[0] in _READS}))
            for kind, payload in ops:
                getattr(batch, kind)(payload)
            batch.write(conn)

    def _run_ids(self, conn, keys: set[str]) -> dict[str, int]:
        """cell key -> run id for ``keys``, from the cache; the unknown ones in one SELECT. A run's id never changes
        once its wave is recorded, so the cache never goes stale. An unknown key fails the whole batch."""
        runs, unknown = RunModel.__table__, list(keys - self._ids.keys())
        for chunk in _chunks(unknown):
            rows = conn.execute(select(runs.c.cell_key, runs.c.id).where(runs.c.cell_key.in_(chunk)))
            self._ids.update((key, run_id) for key, run_id in rows)
        if missing := sorted(keys - self._ids.keys()):
            raise StoreError(f"store {self.display_url}: no run with cell key {', '.join(map(repr, missing[:5]))}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else "") + "; nothing written")
        return self._ids

    def mark_running(self, cell_key: str, *, host: str, device: str, started_at: datetime,
                     inputs: dict[str, str] | None = None, gpus: float | None = None) -> None:
        """A new attempt starts: its earlier attempt's curve and error are cleared, the attempt counted and its start
        logged (``attempt_log``). An attempt still open in the log was left RUNNING by a driver that died."""
        self.apply([("start", {"cell_key": cell_key, "host": host, "device": device, "started_at": started_at,
                               "inputs": inputs, "gpus": gpus})])

    def retry_run(self, cell_key: str, result: RunResult) -> None:
        """An attempt failed and another is queued: the run is PENDING again and keeps this attempt's error (kind,
        message, traceback) until the next one starts; the attempt is counted and logged."""
        self.apply([("retry", (cell_key, result))])

    def add_curve_points(self, points: Iterable[tuple[str, int, dict[str, float]]]) -> None:
        """Batched learning-curve points: (cell key, step, {name: value})."""
        points = list(points)
        if points:
            self.apply([("points", points)])

    def prune_run(self, cell_key: str, decision: dict[str, Any]) -> None:
        """The pruner decided to stop the run (``decision``: ``pruning.Decision.as_dict``); it ends PRUNED once its
        worker stops. A run that completes first keeps its result, and the decision is dropped (``finish_run``)."""
        self.apply([("prune", (cell_key, decision))])

    def finish_run(self, cell_key: str, result: RunResult) -> None:
        self.apply([("finish", (cell_key, result))])

    # --- reading -------------------------------------------------------------------------------------------------

    def study_names(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(StudyModel.name).order_by(StudyModel.created_at)))

    def study_spec(self, name: str) -> dict[str, Any] | None:
        with self.session() as s:
            return s.scalar(select(StudyModel.spec).where(StudyModel.name == name))

    def study_info(self, name: str) -> dict[str, Any] | None:
        """The study's record without its runs: name, created_at, updated_at, and stop_reason and stopped_at (None
        while it goes on or was never stopped); None for an unknown study."""
        with self.session() as s:
            row = s.execute(select(StudyModel.name, StudyModel.created_at, StudyModel.updated_at,
                                   StudyModel.stop_reason, StudyModel.stopped_at)
                            .where(StudyModel.name == name)).first()
        return row._asdict() if row is not None else None

    def waves(self, study: str) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.execute(
                select(WaveModel.number, WaveModel.design, WaveModel.reason, WaveModel.created_at,
                       WaveModel.finished_at, WaveModel.idle_s, WaveModel.idle_unit, WaveModel.capacity,
                       WaveModel.deadline_at)
                .join(StudyModel, WaveModel.study_id == StudyModel.id)
                .where(StudyModel.name == study).order_by(WaveModel.number)
            ).all()
        return [row._asdict() for row in rows]

    def runs(self, study: str) -> list[RunRecord]:
        """One record per run (:class:`RunRecord`): identity, levels, status, every final metric, timings, error,
        what its earlier attempts cost."""
        with self.session() as s:
            rows = s.execute(
                select(RunModel, WaveModel.number, WaveModel.design)
                .join(WaveModel, RunModel.wave_id == WaveModel.id)
                .join(StudyModel, RunModel.study_id == StudyModel.id)
                .where(StudyModel.name == study)
                .order_by(WaveModel.number, RunModel.id)
                .options(selectinload(RunModel.metrics))
            ).all()
            return [_flatten(run, wave, design) for run, wave, design in rows]

    def artifact_of(self, study: str, selector: str) -> str | None:
        """The artifact directory of run ``selector`` (its id) or of the ``best`` COMPLETE run that has one."""
        spec = self.study_spec(study)
        runs = [r for r in self.runs(study) if r["artifact_dir"] and r["status"] == "COMPLETE"]
        if selector != "best":
            return next((r["artifact_dir"] for r in runs if str(r["run_id"]) == selector), None)
        metric = spec["response"]["metric"]
        runs = [r for r in runs if metric in r.metrics and r.metrics[metric] == r.metrics[metric]]  # drop NaN
        if not runs:
            return None
        pick = min if spec["response"]["goal"] == "minimize" else max
        return pick(runs, key=lambda r: r.metrics[metric])["artifact_dir"]

    def curve(self, cell_key: str) -> list[tuple[int, str, float]]:
        with self.session() as s:
            rows = s.execute(
                select(CurvePointModel.step, CurvePointModel.name, CurvePointModel.value, CurvePointModel.kind)
                .join(RunModel, CurvePointModel.run_id == RunModel.id)
                .where(RunModel.cell_key == cell_key)
                .order_by(CurvePointModel.name, CurvePointModel.step, CurvePointModel.id)
            ).all()
        return [(step, name, decode_float(value, kind)) for step, name, value, kind in rows]

    def curves(self, study: str, name: str) -> dict[str, list[tuple[int, float]]]:
        """cell key -> its learning curve of metric ``name`` ((step, value), by step), for every run of the study that
        reported it; non-finite points are left out."""
        with self.session() as s:
            rows = s.execute(
                select(RunModel.cell_key, CurvePointModel.step, CurvePointModel.value)
                .join(RunModel, CurvePointModel.run_id == RunModel.id)
                .join(StudyModel, RunModel.study_id == StudyModel.id)
                .where(StudyModel.name == study, CurvePointModel.name == name, CurvePointModel.kind == "finite")
                .order_by(RunModel.id, CurvePointModel.step, CurvePointModel.id)
            ).all()
        out: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for key, step, value in rows:
            out[key].append((step, value))
        return dict(out)

    def status_counts(self, study: str) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(
                select(RunModel.status, func.count())
                .join(StudyModel, RunModel.study_id == StudyModel.id)
                .where(StudyModel.name == study)
                .group_by(RunModel.status)
            ).all()
        return {status.value: count for status, count in rows}

    def attempt_logs(self, study: str) -> dict[str, list[dict[str, Any]]]:
        """cell key -> its attempt log (one entry per attempt, oldest first), for the runs that have one."""
        with self.session() as s:
            rows = s.execute(
                select(RunModel.cell_key, RunModel.attempt_log)
                .join(StudyModel, RunModel.study_id == StudyModel.id)
                .where(StudyModel.name == study, RunModel.attempt_log.is_not(None))
            ).all()
        return {key: log for key, log in rows if log}


# --- a batch of writes ------------------------------------------------------------------------------------------

_KINDS = ("start", "points", "thin", "prune", "retry", "finish")
_READS = {"start", "retry", "finish"}  # the operations whose rules read the run's columns
_IN_CHUNK = 500  # values per IN (...): under every backend's limit on bound parameters
# The run columns a rule sets. A batch reads them all for the runs it starts, retries or finishes, so that it writes
# exactly the columns the rules changed, as the ORM did (which matters for JSON: None written is JSON 'null', a
# column never written stays SQL NULL).
_RUN_COLUMNS = ("status", "attempts", "attempt_log", "started_at", "finished_at", "wall_s", "host", "device",
                "inputs", "error_kind", "error_message", "traceback", "artifact_dir", "prune", "prune_step")


def _keys(op: tuple[str, Any]) -> list[str]:
    kind, payload = op
    if kind == "points":
        return [key for key, _, _ in payload]
    return [payload["cell_key"] if kind == "start" else payload[0]]


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    """``items`` in slices of ``_IN_CHUNK``, one IN (...) each (an older SQLite takes 999 parameters at most)."""
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i:i + _IN_CHUNK]


def _load(conn, run_ids: set[int]) -> dict[int, _Row]:
    """The columns of ``run_ids`` that the rules read or set, in one SELECT (per chunk of ids)."""
    runs, rows = RunModel.__table__, {}
    for chunk in _chunks(sorted(run_ids)):
        result = conn.execute(select(runs.c.id, *(runs.c[c] for c in _RUN_COLUMNS)).where(runs.c.id.in_(chunk)))
        for row in result.mappings():
            values = dict(row)
            rows[values.pop("id")] = _Row(row["id"], values)
    return rows


class _Row:
    """A run's columns as a batch's rules change them, in order. ``dirty``: the columns to write, those a rule set to
    another value than they held at the time (the ORM's rule), so the net write equals one transaction per event."""

    __slots__ = ("id", "values", "dirty")

    def __init__(self, run_id: int, values: dict[str, Any]):
        self.id, self.values, self.dirty = run_id, values, set()

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if name not in self.values or self.values[name] != value:
                self.dirty.add(name)
            self.values[name] = value


class _Batch:
    """The net effect of a list of operations. The rules run in order on the runs' columns in memory; ``write`` then
    sends the result: the curves of restarted runs and thinned points deleted, new points inserted (less those a
    later operation of the batch deleted), metrics replaced, each changed run updated. Every statement touches one
    run's rows, so the order between runs does not matter, only within a run, which the rules keep."""

    def __init__(self, ids: dict[str, int], rows: dict[int, _Row]):
        self.ids, self.rows = ids, rows
        self.curve: list[dict[str, Any] | None] = []  # rows to insert, in order; None: deleted later in the batch
        self.curve_of: dict[int, list[int]] = defaultdict(list)  # run id -> its indexes in ``curve``
        self.cleared: set[int] = set()  # runs whose stored curve goes (a new attempt starts a new curve)
        self.thinned: list[tuple[int, str, list[int]]] = []  # stored points to delete: (run id, name, steps)
        self.metrics: dict[int, list[dict[str, Any]]] = {}  # run id -> the rows that replace its stored metrics

    def start(self, p: dict[str, Any]) -> None:
        run = self.rows[self.ids[p["cell_key"]]]
        self._clear_curve(run.id)
        if run.status == RunStatus.RUNNING:
            _end_attempt(run, None, RunStatus.RUNNING, "driver_died",
                         "the driver stopped while this attempt ran; the next driver requeued it")
        run.set(status=RunStatus.RUNNING, host=p["host"], device=p["device"], started_at=p["started_at"],
                finished_at=None, inputs=p.get("inputs") or None, attempts=run.attempts + 1,
                error_kind=None, error_message=None, traceback=None)
        entry = {"attempt": run.attempts, "started_at": p["started_at"].isoformat(), "host": p["host"],
                 "device": p["device"]}
        if p.get("gpus") is not None:
            entry["gpus"] = p["gpus"]
        run.set(attempt_log=[*(run.attempt_log or []), entry])

    def points(self, points: list[tuple[str, int, dict[str, float]]]) -> None:
        ids, curve, curve_of = self.ids, self.curve, self.curve_of
        for key, step, metrics in points:
            run_id = ids[key]
            for name, value in metrics.items():
                stored, kind = encode_float(value)
                curve_of[run_id].append(len(curve))
                curve.append({"run_id": run_id, "step": step, "name": name, "value": stored, "kind": kind})

    def thin(self, payload: tuple[str, str, list[int]]) -> None:
        key, name, steps = payload
        run_id, steps = self.ids[key], set(steps)
        for i in self.curve_of.get(run_id, ()):
            row = self.curve[i]
            if row is not None and row["name"] == name and row["step"] in steps:
                self.curve[i] = None
        if run_id not in self.cleared and steps:  # after a clear, no stored point is left to delete
            self.thinned.append((run_id, name, sorted(steps)))

    def prune(self, payload: tuple[str, dict[str, Any]]) -> None:
        key, decision = payload
        run = self.rows.setdefault(self.ids[key], _Row(self.ids[key], {}))
        run.set(prune=decision, prune_step=decision["step"])
        run.dirty.update(("prune", "prune_step"))  # written even if equal, as prune_run always did

    def retry(self, payload: tuple[str, RunResult]) -> None:
        key, result = payload
        run = self.rows[self.ids[key]]
        _end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
        run.set(status=RunStatus.PENDING, started_at=None, finished_at=None, wall_s=None,
                error_kind=result.error_kind, error_message=result.error_message, traceback=result.traceback,
                prune=None, prune_step=None)
        self.metrics[run.id] = []

    def finish(self, payload: tuple[str, RunResult]) -> None:
        key, result = payload
        run = self.rows[self.ids[key]]
        _end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
        status = RunStatus(result.status)
        run.set(status=status, started_at=result.started_at or run.started_at,
                finished_at=result.finished_at or utcnow(), wall_s=result.wall_s, error_kind=result.error_kind,
                error_message=result.error_message, traceback=result.traceback, artifact_dir=result.artifact_dir,
                host=result.host or run.host, device=result.device or run.device)
        if status != RunStatus.PRUNED:
            run.set(prune=None, prune_step=None)  # it ended before it learnt it was pruned: its result stands
        rows = []
        for name, value in result.metrics.items():
            stored, kind = encode_float(value)
            rows.append({"run_id": run.id, "name": name, "value": stored, "kind": kind})
        self.metrics[run.id] = rows

    def _clear_curve(self, run_id: int) -> None:
        for i in self.curve_of.pop(run_id, ()):
            self.curve[i] = None
        self.cleared.add(run_id)

    def write(self, conn) -> None:
        runs, curve, metrics = RunModel.__table__, CurvePointModel.__table__, MetricModel.__table__
        # Deletes first: they only meet rows stored before the batch (its own deleted rows are never inserted).
        for chunk in _chunks(sorted(self.cleared)):
            conn.execute(delete(curve).where(curve.c.run_id.in_(chunk)))
        for run_id, name, steps in self.thinned:
            for chunk in _chunks(steps):
                conn.execute(delete(curve).where(curve.c.run_id == run_id, curve.c.name == name,
                                                 curve.c.step.in_(chunk)))
        if points := [row for row in self.curve if row is not None]:
            conn.execute(insert(curve), points)
        for chunk in _chunks(sorted(self.metrics)):
            conn.execute(delete(metrics).where(metrics.c.run_id.in_(chunk)))
        if rows := [row for rows in self.metrics.values() for row in rows]:
            conn.execute(insert(metrics), rows)
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)  # one executemany per column set
        for run in self.rows.values():
            if run.dirty:
                columns = tuple(sorted(run.dirty))
                shapes[columns].append({"run_id_": run.id, **{"v_" + c: run.values[c] for c in columns}})
        for columns, params in shapes.items():
            conn.execute(update(runs).where(runs.c.id == bindparam("run_id_"))
                         .values({c: bindparam("v_" + c, type_=runs.c[c].type) for c in columns}), params)


def _end_attempt(run: _Row, finished_at: datetime | None, status: RunStatus, error_kind: str | None,
                 error_message: str | None) -> None:
    """Close the run's current attempt in its log. One that never said it started (its worker died first) is
    still an attempt: counted here, logged without a start."""
    log = list(run.attempt_log or [])
    if run.status != RunStatus.RUNNING:
        run.set(attempts=run.attempts + 1)
        log.append({"attempt": run.attempts, "started_at": None})
    elif not log or "status" in log[-1]:  # started before the store kept a log (schema 0003)
        log.append({"attempt": run.attempts, "started_at": run.started_at.isoformat() if run.started_at else None})
    log[-1] = {**log[-1], "finished_at": (finished_at or utcnow()).isoformat(), "status": RunStatus(status).value,
               "error_kind": error_kind, "error_message": (error_message or "")[:500] or None}
    run.set(attempt_log=log)


def _flatten(run: RunModel, wave_number: int, design: str) -> RunRecord:
    return RunRecord.build({
        "run_id": run.id, "cell_key": run.cell_key, "wave": wave_number, "design": design, "seed": run.seed,
        "status": run.status.value, "attempts": run.attempts, "backfill": bool(run.backfill),
    }, run.params, {m.name: decode_float(m.value, m.kind) for m in run.metrics}, {
        "started_at": run.started_at, "finished_at": run.finished_at, "wall_s": run.wall_s,
        "host": run.host, "device": run.device,
        "error_kind": run.error_kind, "error_message": run.error_message,
        "artifact_dir": run.artifact_dir, "inputs": run.inputs,
        "earlier_attempts_s": earlier_attempts_s(run.attempt_log, run.status),
        "prune": run.prune,
    })


def _mismatch_message(spec: Spec, recorded: dict[str, Any], url: str) -> str:
    new = spec.model_dump(mode="json")
    changed = [f"{field} (recorded {recorded.get(field)!r}, spec {new[field]!r})"
               for field in ("experiment", "fixed") if recorded.get(field) != new[field]]
    if recorded.get("response", {}).get("metric") != new["response"]["metric"]:
        changed.append(f"response.metric (recorded {recorded['response']['metric']!r}, "
                       f"spec {new['response']['metric']!r})")
    return (f"study {spec.study!r} in {url} was recorded with a different " + "; ".join(changed) +
            ". Its runs would not be comparable with new ones: give the spec a new 'study' name, or restore the "
            "recorded values.")
