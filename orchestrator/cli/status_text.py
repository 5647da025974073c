"""The text `wavesweep status` prints: a line per study of the store, or one study's lease, waves, designed and
proposed runs, why it stopped, its failed and retried runs and its best cells. ``--format json`` is
:mod:`orchestrator.reporting.study_report`; the lines both share are in :mod:`orchestrator.reporting.report`."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape

from orchestrator.reporting.best import best_value, print_best
from orchestrator.reporting.report import (
    lease_line,
    recorded_spec,
    saved_by_wave,
    split_line,
    wave_lines,
    wave_split,
    wave_table,
)
from orchestrator.reporting.tables import fits, table


def print_studies(console: Console, db) -> None:
    """A line per study: its runs, by status, best value and why it stopped."""
    rows = []
    for name in db.study_names():
        spec = db.study_spec(name) or {}
        counts = db.status_counts(name)
        best = best_value(db.runs(name), spec["response"]["metric"], spec["response"]["goal"])
        stop = (db.study_info(name) or {}).get("stop_reason") or "-"
        rows.append((name, str(sum(counts.values())), counts_text(counts), best, stop))
    console.print(table(("study", "runs", "by status", "best", "stopped because"), rows,
                        title=f"Studies in {db.display_url}", wrap=("by status", "stopped because")))


def print_study(console: Console, db, study: str) -> None:
    """One study: its lease, waves, designed and proposed runs, stop, failed and retried runs, best cells."""
    spec = recorded_spec(db, study)
    runs = db.runs(study)
    console.print(f"Study [bold]{escape(study)}[/] in {escape(db.display_url)}", highlight=False, soft_wrap=True)
    console.print(lease_line(db.lease(db.study_id(study)), datetime.now(UTC)), highlight=False,
                  soft_wrap=True, markup=False)
    waves = db.waves(study)
    waves_table = wave_table(waves, runs)
    if fits(console, waves_table):
        console.print(waves_table)
    else:
        for line in wave_lines(waves, runs):
            console.print(line, highlight=False, markup=False, overflow="fold")
    # Designed runs feed the effects fit; proposed ones (a model's batch, a space-filling sample) do not.
    split = wave_split({w["number"]: w["design"] for w in waves}, (r["wave"] for r in runs))
    console.print(split_line(split), highlight=False, soft_wrap=True, markup=False)
    info = db.study_info(study) or {}
    if info.get("stop_reason"):
        stopped = info["stopped_at"].strftime("%Y-%m-%d %H:%M:%S UTC") if info.get("stopped_at") else "-"
        console.print(f"Stopped ({stopped}): {info['stop_reason']}", highlight=False, soft_wrap=True, markup=False)
    if pruned := [r for r in runs if r["status"] == "PRUNED"]:
        saved = sum(saved_by_wave(runs).values()) / 3600
        console.print(f"Pruned: {len(pruned)} runs stopped early from their learning curves, an estimated "
                      f"{saved:.3g} GPU-hours saved (what they used counts in the GPU-hours and the budget)",
                      highlight=False, soft_wrap=True, markup=False)
    failed = [r for r in runs if r["status"] not in ("COMPLETE", "PENDING", "RUNNING", "PRUNED")]
    for r in failed:
        console.print(f"[red]{r['status']}[/] run {r['run_id']} ({escape(str(r['error_kind']))}, {r['attempts']} "
                      f"attempts): {escape(str(r['error_message']))}", highlight=False, soft_wrap=True)
    retried = [r for r in runs if r["attempts"] > 1 and r not in failed]
    logs = db.attempt_logs(study) if retried else {}
    for r in retried:  # what the earlier attempts died of (worker_died, lost, oom, driver_died)
        kinds = ", ".join(a.get("error_kind") or "?" for a in logs.get(r["cell_key"], [])[:-1] if "status" in a)
        console.print(f"{r['status']} run {r['run_id']} after {r['attempts']} attempts (earlier: {kinds or '-'})",
                      highlight=False, soft_wrap=True, markup=False)
    print_best(console, runs, spec["response"]["metric"], spec["response"]["goal"])


def counts_text(counts: dict[str, int]) -> str:
    """Runs by status, "2 COMPLETE, 1 FAILED"."""
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
