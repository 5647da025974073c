"""The event path at scale: ctx.report's cost inside a run, learning-curve points/s ingested into the store, run
starts/s, and the dashboard's live refresh while a study writes; every figure next to the issue's reference figures
("today's", measured on this machine before runs buffered their events: an actor call per ctx.report).

    .venv/bin/python bench/scale.py [--parts report,ingest,starts] [--stores sqlite,postgresql] [--runs 16,64,256]
        [--reports 5000] [--offered 8000] [--report-s 10] [--max-concurrent G] [--zero-runs 256] [--pg-url URL]
        [--quick] [--json PATH]

Run it from the repository root. ``--quick``: --runs 4, 3 s of reporting, 32 zero-length runs (a smoke run of about
two minutes on the 2-core machine: five fresh Rays). Every configuration runs on a fresh local Ray of its own
(``bench.scheduling.fresh_ray``: 16 logical CPUs, and 16 logical GPUs in (c)'s product rows only, where runs ask
``gpus_per_run: 1``; elsewhere 0), with ``run_study`` and ``RayExecutor`` as a study runs, a grid study over one
factor ``i`` (one cell per run), the spec's pruning at its default (every point of the response goes to the pruner;
grid cells are designed, so none is stopped). The experiments are functions of this module (``bench.scale:...``),
which imports nothing beyond the standard library at its top, so a worker pays no extra import for them.

(a) ``report``: 4 concurrent runs (``cpus_per_run: 1``) each call ``ctx.report(step, loss=...)`` ``--reports``
    times in a tight loop (``report_run``) and return the mean microseconds per call, timed inside the run with
    ``time.perf_counter`` around the loop; the loops start together once all 4 runs have started (the barrier of
    (b)), so none is timed against another worker's start-up. The figure is the mean of the 4 runs' means. Target
    <= 20 us. Today: about 1 ms per call, 4 runs x 5,000 reports took 5.1-6.2 s of run time.
(b) ``ingest``: N runs (``--runs``) report ``loss`` at a fixed pace (``paced_run``) for ``--report-s`` seconds, N x
    per-run rate = ``--offered`` points/s in all (default 8,000 > 5,000), one store row per report, and
    ``resources.max_curve_points`` (where the spec has it) above a run's points, so nothing is thinned. A run first
    waits at a file barrier until every run of its wave has started (worker start-up on 2 cores takes tens of
    seconds), so they all report at once. points/s = rows in ``curve_points`` / (first report -> every row stored,
    i.e. ``run_study`` returned); ``lag`` = that end minus the last report. Into SQLite (a fresh file) and
    PostgreSQL (a fresh database, dropped afterwards). N worker processes must fit in memory: before each
    configuration the bench reads MemAvailable and needs N x the worker RSS (the largest measured so far in this
    call, else 130 MB) + 2 GiB. When they do not fit (256 here: ~32 GiB against 24) it says so and runs the N runs
    as barrier waves of the largest divisor G of N that fits (or ``--max-concurrent``, e.g. 64) (``runs_per_wave:
    G``, ``backfill: false``, G concurrent at --offered / G points/s each: N distinct runs, never N at once);
    points/s is then rows / the sum of the waves' windows, each from its first report to the next wave's first run
    start (by then the driver has stored every row of the wave; the window includes the driver's turn between waves,
    so it is a lower bound). The "how" column says which it was. Target: >= 5,000 points/s into PostgreSQL with 256
    reporting runs. Today: about 2,800 points/s in all.
(d) ``dashboard``, during each (b) configuration: a separate process opens the store read-only as the dashboard
    does (``dashboard.reader.open_readonly``) and every second times ``dashboard.data.load_study``, the call the live
    view's refresh makes (``dashboard.cache.study``, cached for TTL = 3 s, so every refresh of every view misses it
    once per TTL), and apart from it ``dashboard.data.curve`` of the newest running run (the Runs view with a live
    run selected). Median and max over the polls that found the study. Target: under the 3 s budget
    (docs/benchmarks.md, "Dashboard at scale").
(c) ``starts``: ``--zero-runs`` (256) runs that return at once (``noop_run``), ``runs_per_wave: 16`` (the grid
    releases every wave at once), each configuration on a fresh Ray; runs/s = runs / (last ``finished_at`` - first
    ``started_at``, from the store). Two settings. Today's: runs on 0.1 CPU each and no GPU, so Ray runs up to 160 at
    once on its 16 logical CPUs and starts a worker process for as many as it can, all inside the span (cold), for
    ``max_runs_per_worker`` 8 (the default: a worker process is replaced every 8 runs) and 1000. The product's: 16
    logical GPUs, one run per GPU (``gpus_per_run: 1``), warm (after an untimed study of 16 runs that hold their
    device until all 16 have started, so every device's worker process is up: the rate of a study under way), for
    the same two ``max_runs_per_worker``. Each row also gives the CPU milliseconds per run of the driver and of the
    whole machine (``cpu_seconds``): here the driver, Ray and every worker share 2 cores, where on a cluster the
    workers' and raylets' share is spread over the nodes and the driver's alone sets the ceiling (1000 / its ms per
    run). Target >= 50 runs/s. Today: 21 s, about 12 runs/s.

Fairness: every configuration starts on a fresh Ray with no worker process; worker start-up is outside every window
of (b) (the barrier) but inside (c)'s span, as it was in today's figures. The machine has 2 cores: the 1-minute
load average after each configuration is printed, since other work on them slows every row. A configuration whose
runs did not all complete prints what failed, never a number.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench` is not an installed package

SLOTS = 16  # logical CPUs of each fresh Ray
WORKER_MB = 130.0  # RSS of a Ray worker process until one is measured
HEADROOM_GIB = 2.0  # the driver, Ray's own processes, the database
TICK_S = 0.02  # a paced run's reporting granularity
BARRIER_S = 300.0  # a run waits this long at most for its wave's other runs to start
PG_URL = os.environ.get("WAVESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGETS = {"report_us": 20.0, "ingest_pps": 5000.0, "starts_per_s": 50.0, "refresh_s": 3.0}
TODAY = {"report_us": "about 1,000 us per call; 4 x 5,000 reports: 5.1-6.2 s of run time, compare loop s",
         "ingest_pps": "about 2,800", "starts_per_s": "21 s, about 12 runs/s", "refresh_s": "-"}


# --- the experiments (run in Ray workers: standard library only) ----------------------------------------------------


def _memory_mb() -> dict[str, float]:
    """This process's resident set and its private part (USS: what another such process would add), in MB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
        private = 0
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1])
        out["uss_mb"] = private / 1024
    return out


def report_run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """(a): ``params["reports"]`` calls of ``ctx.report`` in a loop; the mean microseconds per call. With
    ``params["barrier"]``, the loop starts once ``params["group"]`` runs have started (no loop overlaps another
    worker's start-up)."""
    n = int(params["reports"])
    t_start = time.time()
    if "barrier" in params:
        barrier(Path(params["barrier"]), ctx.cell_key, int(params["group"]), float(params["barrier_s"]))
    t0 = time.perf_counter()
    for step in range(n):
        ctx.report(step, loss=1.0 / (step + 1))
    loop = time.perf_counter() - t0
    return {"loss": loop, "us_per_report": loop / n * 1e6, "loop_s": loop, "reports": n, "t_start": t_start,
            "pid": float(os.getpid()), **_memory_mb()}


def barrier(folder: Path, key: str, group: int, timeout: float) -> bool:
    """Wait until ``group`` runs of this one's wave have arrived: each leaves a file; the runs of a wave (barrier
    waves: the next starts after this one ended) are arrivals ``group * (k - 1) + 1 .. group * k``. False on
    timeout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(key.encode()).hexdigest()).touch()
    goal = group * math.ceil(len(os.listdir(folder)) / group)
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < goal:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def paced_run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """(b): after the barrier, ``rate`` reports per second for ``report_s`` seconds (``rate * report_s`` in all)."""
    rate, total = float(params["rate"]), round(float(params["rate"]) * float(params["report_s"]))
    t_start = time.time()
    met = barrier(Path(params["barrier"]), ctx.cell_key, int(params["group"]), float(params["barrier_s"]))
    t_first = time.time()
    t0, sent = time.perf_counter(), 0
    while sent < total:
        due = min(total, int(rate * (time.perf_counter() - t0)) + 1)
        while sent < due:
            ctx.report(sent, loss=1.0 / (sent + 1))
            sent += 1
        if sent < total:
            time.sleep(max(0.0, min(TICK_S, (sent / rate) - (time.perf_counter() - t0))))
    return {"loss": float(sent), "reports": float(sent), "t_start": t_start, "t_first": t_first,
            "t_last": time.time(), "barrier_ok": float(met), "pid": float(os.getpid()), **_memory_mb()}


def noop_run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """(c): returns at once (the warm-up's runs first wait at a barrier for ``group``: every worker is then up)."""
    if "barrier" in params:
        barrier(Path(params["barrier"]), ctx.cell_key, int(params["group"]), float(params["barrier_s"]))
    return {"loss": 0.0, "pid": float(os.getpid()), "t": time.time()}


# --- pure helpers -----------------------------------------------------------------------------------------------------


def parse_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def plan_concurrency(n: int, worker_mb: float, available_gib: float, headroom_gib: float = HEADROOM_GIB,
                     cap: int | None = None) -> int:
    """How many of ``n`` runs go at once: n if n worker processes fit in memory (and ``cap`` allows), else the
    largest divisor of n that does (at least 1), so every barrier wave is full."""
    fits = int((available_gib - headroom_gib) * 1024 // worker_mb)
    limit = max(1, min(n, fits, cap or n))
    return max(d for d in range(1, limit + 1) if n % d == 0)


def ingest_figures(runs: list[dict[str, float]], rows: int, t_done: float) -> dict[str, Any]:
    """Points/s from the runs' own clocks (``wave``, ``t_start``, ``t_first``, ``t_last``, ``reports``) and the rows
    stored: rows / the sum of the waves' windows, each from its first report to the next wave's first run start (the
    last one's to ``t_done``, when every row was stored)."""
    waves = sorted({r["wave"] for r in runs})
    windows, spans = [], []
    for k, wave in enumerate(waves):
        mine = [r for r in runs if r["wave"] == wave]
        begin = min(r["t_first"] for r in mine)
        end = min(r["t_start"] for r in runs if r["wave"] == waves[k + 1]) if k + 1 < len(waves) else t_done
        windows.append(end - begin)
        spans.append(max(r["t_last"] for r in mine) - begin)
    reported = sum(r["reports"] for r in runs)
    last = [r for r in runs if r["wave"] == waves[-1]]
    return {"reported": int(reported), "stored": rows, "window_s": sum(windows), "points_per_s": rows / sum(windows),
            "offered_per_s": reported / sum(spans) if sum(spans) > 0 else math.inf,
            "lag_s": t_done - max(r["t_last"] for r in last), "waves": len(waves)}


def spread(values: list[float]) -> dict[str, float]:
    """Median and max (and count) of a list of seconds."""
    return {"n": len(values), "median": statistics.median(values), "max": max(values)} if values else {"n": 0}


def verdict(label: str, value: float | None, target: float, at_least: bool, unit: str, note: str = "") -> str:
    sign = ">=" if at_least else "<="
    if value is None:
        return f"{label}: not measured{note} (target {sign} {target:g} {unit})"
    ok = value >= target if at_least else value <= target
    return f"{label}: {value:,.1f} {unit} {sign} {target:,g}{note}: {'yes' if ok else 'no'}"


# --- running a study ------------------------------------------------------------------------------------------------


def make_spec(study: str, experiment: str, n: int, fixed: dict, artifacts: Path, *, cpus: float, per_wave: int,
              max_runs_per_worker: int = 1000, backfill: bool = True, max_points: int | None = None, gpus: int = 0):
    from orchestrator.spec import Resources, parse_spec

    resources: dict[str, Any] = {"gpus_per_run": gpus, "cpus_per_run": cpus, "max_runs_per_worker": max_runs_per_worker}
    if max_points is not None and "max_curve_points" in Resources.model_fields:
        resources["max_curve_points"] = max_points
    return parse_spec({
        "study": study, "experiment": experiment, "fixed": fixed, "factors": {"i": {"levels": list(range(n))}},
        "response": {"metric": "loss"}, "artifacts": str(artifacts), "resources": resources,
        "strategy": {"mode": "grid", "runs_per_wave": per_wave, "backfill": backfill},
    })


@contextlib.contextmanager
def store_url(kind: str, workdir: Path, name: str, pg_url: str):
    """A fresh store: a SQLite file, or a PostgreSQL database created here and dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / name}.db"
        return
    import psycopg

    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = f"wavesweep_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        yield f"{pg_url.rpartition('/')[0]}/{db}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def curve_rows(store, study: str) -> int:
    from sqlalchemy import func, select

    from orchestrator.store.models import CurvePointModel, RunModel, StudyModel

    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CurvePointModel)
                            .join(RunModel, CurvePointModel.run_id == RunModel.id)
                            .join(StudyModel, RunModel.study_id == StudyModel.id)
                            .where(StudyModel.name == study)).scalar_one()


def run_on_fresh_ray(spec, url: str, poll_to: Path | None = None, warm_up=None, gpus: int = 0) -> dict[str, Any]:
    """Run the study on a fresh Ray (``gpus`` logical GPUs) into ``url``; its runs, the curve rows, call and return
    times, the CPU seconds each class of process spent on it (:func:`cpu_seconds`) and the dashboard polls made
    meanwhile (``poll_to``). ``warm_up``: a study run first on the same Ray, untimed (workers started)."""
    from bench.scheduling import fresh_ray
    from orchestrator.execution.driver import run_study
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.store import Store

    store = Store(url)  # the schema exists before the dashboard's reader opens it
    poller = None
    if poll_to is not None:
        poller = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--poll", url, spec.study,
                                   str(poll_to)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with fresh_ray(gpus), RayExecutor() as executor:
            if warm_up is not None:
                run_study(warm_up, store, executor)
            cpu_before = cpu_seconds()
            t_call = time.time()
            run_study(spec, store, executor)
            t_done = time.time()
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds().items()}
    finally:
        if poller is not None:
            poller.terminate()
            poller.wait(timeout=30)
    runs = store.runs(spec.study)
    rows = curve_rows(store, spec.study)
    store.close()
    polls = [json.loads(line) for line in poll_to.read_text().splitlines()] if poll_to and poll_to.exists() else []
    return {"runs": runs, "rows": rows, "t_call": t_call, "t_done": t_done, "polls": polls, "cpu": cpu,
            "warm_up_runs": store.runs(warm_up.study) if warm_up is not None else [], "load_1m": os.getloadavg()[0]}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (the driver) and of the whole machine (every process: the
    driver, Ray's worker processes, those that exited included, and Ray's own GCS, raylet and agents). The bench runs
    alone on the machine, so the difference over a study is what it cost."""
    import psutil

    mine, machine = psutil.Process().cpu_times(), psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0) + \
        getattr(machine, "softirq", 0.0) + getattr(machine, "steal", 0.0)
    return {"driver": mine.user + mine.system, "machine": busy}


def _run_in(kind: str, workdir: Path, name: str, pg_url: str, spec, poll_to: Path | None = None,
            warm_up=None, gpus: int = 0) -> dict[str, Any]:
    with store_url(kind, workdir, name, pg_url) as url:
        return run_on_fresh_ray(spec, url, poll_to, warm_up, gpus)


def attempt(run) -> dict[str, Any]:
    """``run()``, or ``{"error": ...}`` when it raised: one configuration that cannot run (no PostgreSQL, an
    orchestrator bug) is printed as such, and the others still run."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - shown in the table instead of a figure
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def failures(runs) -> str | None:
    bad = [(r["status"], r.get("error_message")) for r in runs if r["status"] != "COMPLETE"]
    return f"{len(bad)} of {len(runs)} runs did not complete, e.g. {bad[:2]}" if bad else None


# --- the dashboard's poller (a process of its own) ------------------------------------------------------------------


def poll_dashboard(url: str, study: str, out_path: Path, every_s: float = 1.0) -> None:
    """Every ``every_s``: time ``data.load_study`` (the live view's refresh) and ``data.curve`` of the newest running
    run, on a read-only engine as the dashboard opens it; one JSON line per poll. Runs until terminated."""
    from dashboard import data
    from dashboard.reader import open_readonly

    engine = open_readonly(url)
    with out_path.open("a") as out:
        while True:
            t0 = time.perf_counter()
            try:
                s = data.load_study(engine, study)
            except Exception as exc:  # noqa: BLE001 - recorded: the dashboard would show it as an error
                out.write(json.dumps({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"[:300]}) + "\n")
                out.flush()
                time.sleep(every_s)
                continue
            load_s = time.perf_counter() - t0
            curve_s = None
            if s is not None:
                running = s.runs[s.runs["status"] == "RUNNING"]
                if len(running):
                    t1 = time.perf_counter()
                    data.curve(engine, int(running["run_id"].max()))
                    curve_s = time.perf_counter() - t1
            out.write(json.dumps({"t": time.time(), "found": s is not None, "load_s": load_s, "curve_s": curve_s,
                                  "runs": 0 if s is None else len(s.runs)}) + "\n")
            out.flush()
            time.sleep(max(0.0, every_s - (time.perf_counter() - t0)))


# --- the parts ------------------------------------------------------------------------------------------------------


def part_report(args, workdir: Path) -> dict[str, Any]:
    n_runs = 4
    fixed = {"reports": args.reports, "group": n_runs, "barrier": str(workdir / "barrier-report"),
             "barrier_s": BARRIER_S}
    spec = make_spec("scale-report", "bench.scale:report_run", n_runs, fixed, workdir / "art", cpus=1.0,
                     per_wave=n_runs, max_points=2 * args.reports + 10)
    got = attempt(lambda: _run_in("sqlite", workdir, "report", args.pg_url, spec))
    res: dict[str, Any] = {"runs": n_runs, "reports": args.reports, "load_1m": os.getloadavg()[0]}
    if why := got.get("error") or failures(got["runs"]):
        return {**res, "error": why}
    m = [r.metrics for r in got["runs"]]
    res.update(us_per_report=[x["us_per_report"] for x in m], loop_s=[x["loop_s"] for x in m],
               run_s=[x["wall_s"] for x in m], rss_mb=max(x.get("rss_mb", 0) for x in m),
               uss_mb=max(x.get("uss_mb", 0) for x in m), stored=got["rows"],
               mean_us=statistics.fmean(x["us_per_report"] for x in m))
    return res


def part_ingest(args, workdir: Path, kind: str, n: int, worker_mb: float) -> dict[str, Any]:
    available = mem_available_gib()
    group = plan_concurrency(n, worker_mb, available, cap=args.max_concurrent)
    need = n * worker_mb / 1024 + HEADROOM_GIB
    how = f"{n} concurrent" if group == n else f"{n // group} barrier waves of {group} concurrent"
    res: dict[str, Any] = {"store": kind, "runs": n, "concurrent": group, "how": how, "mem_available_gib": available,
                           "mem_needed_gib": need, "worker_mb": worker_mb,
                           "fits": plan_concurrency(n, worker_mb, available) == n}
    rate = args.offered / group
    per_run = round(rate * args.report_s)
    fixed = {"rate": rate, "report_s": args.report_s, "group": group, "barrier": str(workdir / f"barrier-{kind}-{n}"),
             "barrier_s": BARRIER_S}
    study = f"scale-ingest-{kind}-{n}"
    spec = make_spec(study, "bench.scale:paced_run", n, fixed, workdir / "art", cpus=SLOTS / group, per_wave=group,
                     backfill=False, max_points=2 * per_run + 10)
    got = attempt(lambda: _run_in(kind, workdir, study, args.pg_url, spec, workdir / f"polls-{kind}-{n}.jsonl"))
    if "error" in got:
        return {**res, "error": got["error"], "dashboard": {"load_s": {"n": 0}, "curve_s": {"n": 0}, "errors": []}}
    res["load_1m"] = got["load_1m"]
    polls = [p for p in got["polls"] if p.get("found")]
    res["dashboard"] = {"load_s": spread([p["load_s"] for p in polls]),
                        "curve_s": spread([p["curve_s"] for p in polls if p["curve_s"] is not None]),
                        "errors": [p["error"] for p in got["polls"] if "error" in p][:3]}
    if why := failures(got["runs"]):
        return {**res, "error": why}
    runs = [{**r.metrics, "wave": r.wave} for r in got["runs"]]
    res.update(ingest_figures(runs, got["rows"], got["t_done"]))
    res.update(barrier_missed=sum(r["barrier_ok"] < 1 for r in runs), rss_mb=max(r.get("rss_mb", 0) for r in runs),
               uss_mb=max(r.get("uss_mb", 0) for r in runs), call_s=got["t_done"] - got["t_call"])
    return res


STARTS = [  # (c)'s configurations: (logical GPUs, max_runs_per_worker, warm)
    (0, 8, False), (0, 1000, False),  # today's: runs on 0.1 CPU each, up to 160 at once, every worker started cold
    (16, 8, True), (16, 1000, True),  # a study under way on 16 devices: one run per (logical) GPU, workers up
]


def part_starts(args, workdir: Path, gpus: int, max_runs_per_worker: int, warm: bool) -> dict[str, Any]:
    """Zero-length runs. ``gpus`` 0: on 0.1 CPU each (today's figure's setting: Ray runs up to 160 at once and
    starts a worker process for as many as it can); else one per logical GPU. ``warm``: after an untimed study of
    ``gpus`` runs that wait at a barrier until all have started, so every device's worker process is up (a study under
    way)."""
    n, tag = args.zero_runs, f"{gpus}-{max_runs_per_worker}-{'warm' if warm else 'cold'}"
    per_run = {"gpus": 1 if gpus else 0, "max_runs_per_worker": max_runs_per_worker}
    spec = make_spec(f"scale-starts-{tag}", "bench.scale:noop_run", n, {}, workdir / "art", cpus=0.1, per_wave=16,
                     **per_run)
    group = max(gpus, 16)
    warm_up = make_spec(f"scale-warm-{tag}", "bench.scale:noop_run", group,
                        {"group": group, "barrier": str(workdir / f"barrier-{tag}"), "barrier_s": BARRIER_S},
                        workdir / "art", cpus=0.1, per_wave=16, **per_run) if warm else None
    got = attempt(lambda: _run_in("sqlite", workdir, f"starts-{tag}", args.pg_url, spec, warm_up=warm_up, gpus=gpus))
    res: dict[str, Any] = {"gpus": gpus, "max_runs_per_worker": max_runs_per_worker, "warm": warm, "runs": n,
                           "load_1m": os.getloadavg()[0]}
    if why := got.get("error") or failures(got["runs"]):
        return {**res, "error": why}
    return {**res, **starts_figures(got["runs"], got["warm_up_runs"], got["cpu"], got["t_done"] - got["t_call"])}


def starts_figures(runs: list[dict], warm_up_runs: list[dict], cpu: dict[str, float], call_s: float) -> dict:
    """runs/s over the span (first start -> last end, from the store), the worker processes that served the runs and
    how many of them were not up before (started within the span), the median gap between two runs of one worker
    (its device idle between them), and the CPU milliseconds per run of each class of process."""
    first = min(r["started_at"] for r in runs)
    last = max(r["finished_at"] for r in runs)
    span = (last - first).total_seconds()
    pids = {r["metric.pid"] for r in runs}
    by_pid: dict[float, list[float]] = {}
    for r in runs:
        by_pid.setdefault(r["metric.pid"], []).append(r["metric.t"])
    gaps = [b - a for ts in by_pid.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    n = len(runs)
    return {"span_s": span, "runs_per_s": n / span, "workers": len(pids),
            "new_workers": len(pids - {r["metric.pid"] for r in warm_up_runs}),
            "gap_ms": 1000 * statistics.median(gaps) if gaps else None, "call_s": call_s,
            "cpu_ms": {k: 1000 * v / n for k, v in cpu.items()}}


# --- printing -------------------------------------------------------------------------------------------------------


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_report(res: dict) -> None:
    print(f"\n(a) ctx.report inside a run: {res['runs']} concurrent runs x {res['reports']:,} reports, timed in the "
          f"run (today: {TODAY['report_us']})")
    if "error" in res:
        print(f"  FAILED: {res['error']}")
        return
    print(f"  {'run':>4} {'us/report':>10} {'loop s':>8} {'run s':>7}   (run s: the whole run, its barrier wait "
          "included)")
    for i, (us, loop, run) in enumerate(zip(res["us_per_report"], res["loop_s"], res["run_s"])):
        print(f"  {i:>4} {us:>10.1f} {loop:>8.3f} {run:>7.2f}")
    print(f"  mean {res['mean_us']:.1f} us per call; rows stored {res['stored']:,} of {res['runs'] * res['reports']:,};"
          f" worker RSS {res['rss_mb']:.0f} MB (private {res['uss_mb']:.0f} MB); load {res['load_1m']:.1f}")


def print_ingest(rows: list[dict], offered: float, report_s: float) -> None:
    print(f"\n(b) points/s ingested end to end: each configuration's runs report for {report_s:g} s, {offered:,.0f} "
          f"points/s offered in all (today: {TODAY['ingest_pps']} points/s in all)")
    print(f"  {'store':<10} {'runs':>4}  {'how':<34} {'offered/s':>9} {'reported':>9} {'stored':>9} {'window s':>8} "
          f"{'points/s':>9} {'lag s':>6} {'call s':>7} {'load':>5}")
    for r in rows:
        head = f"  {r['store']:<10} {r['runs']:>4}  {r['how']:<34}"
        if "error" in r:
            print(f"{head} FAILED: {r['error']}")
            continue
        print(f"{head} {r['offered_per_s']:>9,.0f} {r['reported']:>9,} {r['stored']:>9,} {r['window_s']:>8.1f} "
              f"{r['points_per_s']:>9,.0f} {r['lag_s']:>6.1f} {r['call_s']:>7.1f} {r['load_1m']:>5.1f}")
    for r in rows:
        notes = []
        if not r["fits"]:
            notes.append(f"{r['runs']} worker processes do not fit: need ~{r['mem_needed_gib']:.1f} GiB "
                         f"({r['worker_mb']:.0f} MB each + {HEADROOM_GIB:g}), {r['mem_available_gib']:.1f} GiB "
                         f"available; ran as {r['how']}")
        elif r["concurrent"] != r["runs"]:
            notes.append(f"capped by --max-concurrent: ran as {r['how']}")
        if r.get("barrier_missed"):
            notes.append(f"{r['barrier_missed']} runs gave up waiting at the barrier (reported unsynchronised)")
        if "stored" in r and r["stored"] != r["reported"]:
            notes.append(f"stored {r['stored']:,} rows for {r['reported']:,} reports")
        for note in notes:
            print(f"  {r['store']} {r['runs']}: {note}")
    print("  offered/s: reports / the waves' reporting spans; points/s: rows / windows from the first report until "
          "every row was stored (several waves: to the next wave's first start, a lower bound); lag: last report "
          "-> all stored.")


def print_dashboard(rows: list[dict]) -> None:
    print("\n(d) dashboard live refresh during (b): data.load_study polled every 1 s from another process "
          f"(budget {TARGETS['refresh_s']:g} s); data.curve of the newest running run apart")
    print(f"  {'store':<10} {'runs':>4} {'polls':>5} {'median s':>8} {'max s':>7} {'curve med':>9} {'curve max':>9}")
    for r in rows:
        d, c = r["dashboard"]["load_s"], r["dashboard"]["curve_s"]
        print(f"  {r['store']:<10} {r['runs']:>4} {d['n']:>5} {_f(d.get('median'), '.3f'):>8} "
              f"{_f(d.get('max'), '.3f'):>7} {_f(c.get('median'), '.3f'):>9} {_f(c.get('max'), '.3f'):>9}")
        for err in r["dashboard"]["errors"]:
            print(f"    poll error: {err}")


def print_starts(rows: list[dict]) -> None:
    print(f"\n(c) run starts/s: zero-length runs, runs_per_wave 16, fresh Ray, first start -> last end from the store "
          f"(today: {TODAY['starts_per_s']}, on 0.1 CPU each, cold)")
    print(f"  {'devices':>16} {'max_runs_per_worker':>19} {'Ray':>4} {'runs':>5} {'span s':>6} {'runs/s':>6} "
          f"{'workers':>7} {'new':>4} {'gap ms':>6} | CPU ms/run: {'driver':>6} {'machine':>7} "
          f"{'driver ceiling':>14} {'load':>5}")
    for r in rows:
        where = f"{r['gpus']} logical GPUs" if r["gpus"] else "0.1 CPU per run"
        head = f"  {where:>16} {r['max_runs_per_worker']:>19} {'warm' if r['warm'] else 'cold':>4} {r['runs']:>5}"
        if "error" in r:
            print(f"{head} FAILED: {r['error']}")
            continue
        cpu = r["cpu_ms"]
        print(f"{head} {r['span_s']:>6.1f} {r['runs_per_s']:>6.1f} {r['workers']:>7} {r['new_workers']:>4} "
              f"{_f(r['gap_ms'], '>6.0f')} | {'':>11} {cpu['driver']:>6.1f} {cpu['machine']:>7.1f} "
              f"{1000 / cpu['driver']:>8.0f} runs/s {r['load_1m']:>5.1f}")
    print("  new: worker processes that served runs and were not up before the span (started, or replacing one, in "
          "it); gap: median time between two runs of one worker (its device idle); CPU per run over the study: this "
          "process (the driver) and the machine (all processes: the driver, Ray's, the workers'); driver ceiling: "
          "1000 / the driver's ms per run. Warm: after an untimed study of 16 runs that each hold a device until all "
          "16 have started.")


def verdicts(out: dict) -> list[str]:
    lines = []
    if (rep := out.get("report")) is not None:
        lines.append(verdict("(a) ctx.report in a run", rep.get("mean_us"), TARGETS["report_us"], False, "us/call"))
    if (rows := out.get("ingest")) is not None:
        pg = [r for r in rows if r["store"] == "postgresql" and r["runs"] == 256]
        if pg:
            r = pg[0]
            how = "" if r["concurrent"] == r["runs"] else f" (as {r['how']})"
            lines.append(verdict("(b) PostgreSQL, 256 reporting runs", r.get("points_per_s"), TARGETS["ingest_pps"],
                                 True, "points/s", how))
        else:
            lines.append(verdict("(b) PostgreSQL, 256 reporting runs", None, TARGETS["ingest_pps"], True, "points/s",
                                 " (not in --stores/--runs)"))
        worst = max((r for r in rows if r["dashboard"]["load_s"]["n"]), key=lambda r: r["dashboard"]["load_s"]["max"],
                    default=None)
        where = f" (max, {worst['store']} {worst['runs']} runs)" if worst else ""
        lines.append(verdict("(d) dashboard refresh during (b)", worst and worst["dashboard"]["load_s"]["max"],
                             TARGETS["refresh_s"], False, "s", where))
    for r in out.get("starts", []):
        where = f"{r['gpus']} logical GPUs" if r.get("gpus") else "0.1 CPU per run"
        lines.append(verdict(f"(c) run starts, {where}, max_runs_per_worker {r['max_runs_per_worker']}, "
                             f"{'warm' if r['warm'] else 'cold'} Ray", r.get("runs_per_s"),
                             TARGETS["starts_per_s"], True, "runs/s"))
    return lines


# --- the command ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="report,ingest,starts", help="comma list of: report, ingest, starts "
                                                                        "(the dashboard is polled during ingest)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="(b)'s stores: sqlite, postgresql")
    parser.add_argument("--runs", type=parse_ints, default=None, help="(b)'s reporting runs (default 16,64,256)")
    parser.add_argument("--reports", type=int, default=5000, help="(a): ctx.report calls per run")
    parser.add_argument("--offered", type=float, default=8000.0, help="(b): points/s offered by all runs together")
    parser.add_argument("--report-s", type=float, default=None, help="(b): seconds each run reports (default 10)")
    parser.add_argument("--zero-runs", type=int, default=None, help="(c): zero-length runs (default 256)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="(b): at most this many runs at once (the rest as barrier waves), memory permitting")
    parser.add_argument("--pg-url", default=PG_URL, help="a PostgreSQL server where this user may CREATE DATABASE")
    parser.add_argument("--quick", action="store_true", help="--runs 4, 3 s of reporting, 32 zero-length runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--poll", nargs=3, metavar=("URL", "STUDY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.poll:
        poll_dashboard(args.poll[0], args.poll[1], Path(args.poll[2]))
        return
    args.runs = args.runs or ([4] if args.quick else [16, 64, 256])
    args.report_s = args.report_s or (3.0 if args.quick else 10.0)
    args.zero_runs = args.zero_runs or (32 if args.quick else 256)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown := [p for p in parts if p not in ("report", "ingest", "starts")] + \
            [s for s in stores if s not in ("sqlite", "postgresql")]:
        raise SystemExit(f"unknown parts or stores: {unknown}")
    print(f"{os.cpu_count()} cores, {mem_available_gib():.1f} GiB available; each configuration on a fresh local Ray "
          f"({SLOTS} logical CPUs; no GPU but in (c)'s 16-GPU rows)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="wavesweep-scale-"))
    out: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "poll")}}
    started = time.time()
    measured: list[float] = []  # worker RSS (MB) seen so far in this call

    def worker_mb() -> float:
        return max(measured) if measured else WORKER_MB

    try:
        if "report" in parts:
            out["report"] = part_report(args, workdir)
            measured += [out["report"]["rss_mb"]] if out["report"].get("rss_mb") else []
            print_report(out["report"])
        if "ingest" in parts:
            out["ingest"] = []
            for kind in stores:
                for n in args.runs:
                    t0 = time.time()
                    r = part_ingest(args, workdir, kind, n, worker_mb())
                    out["ingest"].append(r)
                    measured += [r["rss_mb"]] if r.get("rss_mb") else []
                    said = f"FAILED: {r['error']}" if "error" in r else f"{r['points_per_s']:,.0f} points/s"
                    print(f"[ingest {kind} {n}] {said}; {r['how']}; {time.time() - t0:.0f} s", flush=True)
            print_ingest(out["ingest"], args.offered, args.report_s)
            print_dashboard(out["ingest"])
        if "starts" in parts:
            out["starts"] = [part_starts(args, workdir, *config) for config in STARTS]
            print_starts(out["starts"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{time.time() - started:.0f} s in all; load = 1-minute load average right after the configuration (other "
          "work on the same 2 cores slows every row)\n")
    out["verdicts"] = verdicts(out)
    for line in out["verdicts"]:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
