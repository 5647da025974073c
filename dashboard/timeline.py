"""The GPU timeline and idle time of a study (Overview view): one bar per run and device it held, and each wave's
idle device-seconds, the driver's own figure where it recorded one."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from dashboard.data import Study


def timeline(study: Study, now: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(bars, idle per wave, unit). Bars: one per run and device it held (run_id, wave, status, backfill, lane, start,
    end, seconds); a run still RUNNING ends at ``now``. Lanes are host + GPU; CPU runs of one host share its lane and
    get numbered slots when they overlap. Unit of the lanes: "GPU" or "slot". Idle per wave: see :func:`idle`."""
    now = now or datetime.now(UTC)
    runs = study.runs[study.runs["started_at"].notna()]
    if runs.empty:
        bars = pd.DataFrame(columns=["run_id", "wave", "status", "backfill", "lane", "start", "end", "seconds"])
        return bars, idle(study, bars, "slot"), "slot"
    bars = pd.DataFrame({"run_id": runs["run_id"], "wave": runs["wave"], "status": runs["status"],
                         "backfill": runs["backfill"], "host": runs["host"].fillna("?"),
                         "device": runs["device"].map(_devices),
                         "start": runs["started_at"], "end": runs["finished_at"].fillna(pd.Timestamp(now))})
    bars = bars.explode("device", ignore_index=True)
    unit = "GPU" if bars["device"].str.startswith("cuda").any() else "slot"
    bars["lane"] = _slots(bars["host"] + " " + bars["device"], bars["start"], bars["end"])
    bars["seconds"] = (bars["end"] - bars["start"]).dt.total_seconds()
    return bars.drop(columns=["host", "device"]), idle(study, bars, unit), unit


IDLE_COLUMNS = ["wave", "source", "unit", "capacity", "lanes", "span_s", "busy_s", "idle_s", "idle_share",
                "deadline_passed", "deadline_at", "backfill"]


def idle(study: Study, bars: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Idle time per wave of the study, a row each. ``source`` "driver" where the driver counted the wave's idle
    device-seconds: ``idle_s`` in ``unit`` GPU or CPU, of ``capacity`` GPUs or CPUs. "run times" where it did not
    (waves recorded before it did, or still running) but runs started: idle_s = lanes x span_s - busy_s in ``unit``
    GPU or slot, capacity = lanes (every lane the study used); it counts the lanes other waves' runs hold during
    the span as idle, so it overstates once waves overlap. None (idle_s NaN) for a wave with neither. span_s: the
    wave's runs' first start to last end; busy_s: their lane-seconds; idle_share = idle_s / (capacity x span_s),
    NaN where that is 0 or unknown; deadline_passed and deadline_at: whether and when the driver stopped waiting
    for its stragglers; backfill: its runs added to fill devices idle at its tail."""
    waves = study.waves
    out = pd.DataFrame({"wave": waves["number"]}, index=waves.index)
    lanes = bars["lane"].nunique()
    per_wave = bars.groupby("wave").agg(first=("start", "min"), last=("end", "max"), busy_s=("seconds", "sum"))
    span = (per_wave["last"] - per_wave["first"]).dt.total_seconds() if len(per_wave) else per_wave["busy_s"]
    out["span_s"] = out["wave"].map(span).astype(float)
    out["busy_s"] = out["wave"].map(per_wave["busy_s"]).astype(float)
    counted, started = waves["idle_s"].notna(), out["span_s"].notna()
    out["source"] = np.where(counted, "driver", np.where(started, "run times", None))
    out["unit"] = np.where(counted, waves["idle_unit"], np.where(started, unit, None))
    out["capacity"] = waves["capacity"].where(counted, np.where(started, float(lanes), np.nan))
    out["lanes"] = lanes
    estimate = (lanes * out["span_s"] - out["busy_s"]).clip(lower=0)
    out["idle_s"] = waves["idle_s"].where(counted, estimate)
    room = out["capacity"] * out["span_s"]
    out["idle_share"] = out["idle_s"] / room.where(room > 0)
    out["deadline_at"] = waves["deadline_at"]
    out["deadline_passed"] = waves["deadline_at"].notna()
    out["backfill"] = waves["backfill"]
    return out[IDLE_COLUMNS].reset_index(drop=True)


def _devices(device: str | None) -> list[str]:
    """"cuda:0,1" -> ["cuda:0", "cuda:1"] (a run holding two GPUs occupies two lanes); "cpu" -> ["cpu"]."""
    if not device:
        return ["?"]
    kind, _, ids = device.partition(":")
    return [f"{kind}:{i}" for i in ids.split(",")] if ids else [kind]


def _slots(lanes: pd.Series, start: pd.Series, end: pd.Series) -> pd.Series:
    """Each bar's lane, split into numbered slots where runs overlap on it (CPU runs of one host, fractional GPUs):
    greedy interval partitioning, the fewest slots that hold every run without overlap."""
    out = lanes.to_numpy(dtype=object).copy()
    begin, finish = start.astype("int64").to_numpy(), end.astype("int64").to_numpy()  # ns: fast to compare
    for lane, rows in lanes.groupby(lanes, sort=False).indices.items():
        ends: list[tuple[int, int]] = []  # heap of (end of the slot's last run, slot number); one entry per slot
        slots = np.empty(len(rows), dtype=int)
        for i, row in enumerate(rows[np.argsort(begin[rows], kind="stable")]):
            if ends and ends[0][0] <= begin[row]:
                _, slot = heapq.heappop(ends)
            else:
                slot = len(ends)  # every slot is busy: open one more
            slots[i] = slot
            heapq.heappush(ends, (finish[row], slot))
        if len(ends) > 1:
            ordered = rows[np.argsort(begin[rows], kind="stable")]
            out[ordered] = [f"{lane} #{slot + 1}" for slot in slots]
    return pd.Series(out, index=lanes.index)
