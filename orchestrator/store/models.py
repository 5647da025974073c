"""SQLAlchemy models. Schema changes go through Alembic migrations in ``migrations/versions``, never create_all."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from orchestrator.run_record import RunStatus


class UTCDateTime(TypeDecorator):
    """Times are stored in UTC. SQLite drops the zone on the way back; this puts it back so comparisons across
    backends agree (a naive and an aware datetime cannot even be compared in Python)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(timezone.utc)")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Databases disagree about NaN and infinity (PostgreSQL stores them, SQLite turns NaN into NULL, MySQL refuses
# both), so a float that may be non-finite is stored as (value, kind) with value NULL unless kind is "finite".
# A flag (an experiment's True/False, such as `warm`) is stored as 1.0/0.0 with kind "true"/"false", so that it
# reads back as a flag, not a number.
def encode_float(value: float | bool) -> tuple[float | None, str]:
    if isinstance(value, bool):
        return float(value), "true" if value else "false"
    if math.isnan(value):
        return None, "nan"
    if math.isinf(value):
        return None, "inf" if value > 0 else "-inf"
    if value == 0 and math.copysign(1.0, value) < 0:
        return None, "-0"  # SQLite stores a REAL without a fraction as an integer, and -0 as 0
    return value, "finite"


def decode_float(value: float | None, kind: str) -> float | bool:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "-0": -0.0, "true": True,
            "false": False}.get(kind, value)  # type: ignore


class Base(DeclarativeBase):
    pass


class StudyModel(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Why the driver stopped proposing waves (the strategy's reason, or the budget); NULL while the study goes on.
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The study lease (migration 0004): the driver running the study ("host:pid:token"), since when, and until when
    # its lease holds unless renewed. A second driver is refused while it holds; NULL when no driver runs the study.
    driver: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    waves: Mapped[list[WaveModel]] = relationship(back_populates="study", order_by="WaveModel.number")


class WaveModel(Base):
    __tablename__ = "waves"
    __table_args__ = (UniqueConstraint("study_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1-based, in the order the strategy proposed them
    design: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Migration 0005. Idle device-seconds (GPU-seconds, or CPU-seconds on a cluster without GPUs: idle_unit) of the
    # study's capacity while this was its oldest open wave, including the gap while the driver designed the next
    # one; counted by the driver, since waves overlap once idle devices are backfilled.
    idle_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_unit: Mapped[str | None] = mapped_column(String(8), nullable=True)
    capacity: Mapped[float | None] = mapped_column(Float, nullable=True)  # GPUs (or CPUs) the study had
    # When the driver stopped waiting for the wave's stragglers (strategy.wave_deadline); they ran on.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    study: Mapped[StudyModel] = relationship(back_populates="waves")
    runs: Mapped[list[RunModel]] = relationship(back_populates="wave", order_by="RunModel.id")


class RunModel(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("cell_key"), Index("ix_runs_study_status", "study_id", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    wave_id: Mapped[int] = mapped_column(ForeignKey("waves.id"), index=True)
    cell_key: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # factor levels of the cell (fixed params: the spec)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=16, create_constraint=True, name="run_status"),
        default=RunStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifact_dir: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # what the run saved, if any
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # store references, resolved
    # One entry per attempt (migration 0004): attempt, started_at, host, device, gpus, then finished_at, status,
    # error_kind, error_message once it ended. The row's own fields describe the last attempt.
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Migration 0005: added to a wave to fill devices left idle at its tail (a replicate of one of its best cells).
    backfill: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Migration 0006: why the pruner stopped the run (execution/pruning.py Decision: rule, step, value, threshold,
    # margin, peers, full_steps, predicted final); NULL unless it ended PRUNED.
    prune_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prune: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    wave: Mapped[WaveModel] = relationship(back_populates="runs")
    metrics: Mapped[list[MetricModel]] = relationship(cascade="all, delete-orphan")


class MetricModel(Base):
    """A final metric of a run (what run() returned, plus the executor's cost figures)."""

    __tablename__ = "run_metrics"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    kind: Mapped[str] = mapped_column(String(8), default="finite")


class CurvePointModel(Base):
    """One learning-curve point: ctx.report(step, name=value)."""

    __tablename__ = "curve_points"
    __table_args__ = (Index("ix_curve_points_run_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    kind: Mapped[str] = mapped_column(String(8), default="finite")
