"""The store: the study's source of truth. The driver is its only writer; readers (status, export) only read."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import delete, func, or_, select, update
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

    def mark_running(self, cell_key: str, *, host: str, device: str, started_at: datetime,
                     inputs: dict[str, str] | None = None, gpus: float | None = None) -> None:
        """A new attempt starts: its earlier attempt's curve and error are cleared, the attempt counted and its start
        logged (``attempt_log``). An attempt still open in the log was left RUNNING by a driver that died."""
        with self.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key))
            s.execute(delete(CurvePointModel).where(CurvePointModel.run_id == run.id))
            if run.status == RunStatus.RUNNING:
                _end_attempt(run, None, RunStatus.RUNNING, "driver_died",
                             "the driver stopped while this attempt ran; the next driver requeued it")
            run.status, run.host, run.device, run.started_at = RunStatus.RUNNING, host, device, started_at
            run.finished_at = None
            run.inputs = inputs or None
            run.attempts += 1
            run.error_kind = run.error_message = run.traceback = None
            entry = {"attempt": run.attempts, "started_at": started_at.isoformat(), "host": host, "device": device}
            if gpus is not None:
                entry["gpus"] = gpus
            run.attempt_log = [*(run.attempt_log or []), entry]

    def retry_run(self, cell_key: str, result: RunResult) -> None:
        """An attempt failed and another is queued: the run is PENDING again and keeps this attempt's error (kind,
        message, traceback) until the next one starts; the attempt is counted and logged."""
        with self.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key).options(selectinload(RunModel.metrics)))
            _end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
            run.status, run.started_at, run.finished_at, run.wall_s = RunStatus.PENDING, None, None, None
            run.error_kind, run.error_message, run.traceback = result.error_kind, result.error_message, result.traceback
            run.prune = run.prune_step = None
            run.metrics.clear()

    def add_curve_points(self, points: Iterable[tuple[str, int, dict[str, float]]]) -> None:
        """Batched learning-curve points: (cell key, step, {name: value})."""
        points = list(points)
        if not points:
            return
        with self.session() as s:
            ids = dict(s.execute(select(RunModel.cell_key, RunModel.id)
                                 .where(RunModel.cell_key.in_({key for key, _, _ in points}))).all())
            rows = []
            for key, step, metrics in points:
                for name, value in metrics.items():
                    stored, kind = encode_float(value)
                    rows.append({"run_id": ids[key], "step": step, "name": name, "value": stored, "kind": kind})
            s.execute(CurvePointModel.__table__.insert(), rows)

    def prune_run(self, cell_key: str, decision: dict[str, Any]) -> None:
        """The pruner decided to stop the run (``decision``: ``pruning.Decision.as_dict``); it ends PRUNED once its
        worker stops. A run that completes first keeps its result, and the decision is dropped (``finish_run``)."""
        with self.session() as s:
            s.execute(update(RunModel).where(RunModel.cell_key == cell_key)
                      .values(prune=decision, prune_step=decision["step"]))

    def finish_run(self, cell_key: str, result: RunResult) -> None:
        with self.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key).options(selectinload(RunModel.metrics)))
            _end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
            run.status = result.status
            run.started_at = result.started_at or run.started_at
            run.finished_at = result.finished_at or utcnow()
            run.wall_s, run.error_kind = result.wall_s, result.error_kind
            run.error_message, run.traceback = result.error_message, result.traceback
            run.artifact_dir = result.artifact_dir
            if result.status != RunStatus.PRUNED:
                run.prune = run.prune_step = None  # it ended before it learnt it was pruned: its result stands
            run.host = result.host or run.host
            run.device = result.device or run.device
            run.metrics.clear()
            s.flush()
            for name, value in result.metrics.items():
                stored, kind = encode_float(value)
                run.metrics.append(MetricModel(name=name, value=stored, kind=kind))

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


def _end_attempt(run: RunModel, finished_at: datetime | None, status: RunStatus, error_kind: str | None,
                 error_message: str | None) -> None:
    """Close the run's current attempt in its log. One that never said it started (its worker died first) is
    still an attempt: counted here, logged without a start."""
    log = list(run.attempt_log or [])
    if run.status != RunStatus.RUNNING:
        run.attempts += 1
        log.append({"attempt": run.attempts, "started_at": None})
    elif not log or "status" in log[-1]:  # started before the store kept a log (schema 0003)
        log.append({"attempt": run.attempts, "started_at": run.started_at.isoformat() if run.started_at else None})
    log[-1] = {**log[-1], "finished_at": (finished_at or utcnow()).isoformat(), "status": RunStatus(status).value,
               "error_kind": error_kind, "error_message": (error_message or "")[:500] or None}
    run.attempt_log = log


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
