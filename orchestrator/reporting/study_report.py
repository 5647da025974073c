"""What `wavesweep status --format json` prints: a study's state as data, for scripts and CI.

The same facts as the tables of `wavesweep status`, unformatted: counts as numbers, times as ISO 8601 UTC, a missing
value as null. The store appears as its display URL only (a password in it is masked).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orchestrator.reporting.report import recorded_spec, saved_by_wave, wave_kind, wave_split
from orchestrator.reporting.summary import TIE_RULE, best_cells
from orchestrator.run_record import PARAM


def studies_status(db) -> dict[str, Any]:
    """Every study of the store: runs by status, the best mean response, why it stopped."""
    studies = []
    for name in db.study_names():
        spec = db.study_spec(name) or {}
        metric, goal = spec["response"]["metric"], spec["response"]["goal"]
        best = best_cells(db.runs(name), metric, goal, top=1)
        counts = db.status_counts(name)
        studies.append({"study": name, "runs": sum(counts.values()), "by_status": counts,
                        "best": None if best.empty else {"metric": metric, "mean": float(best["mean"].iloc[0])},
                        "stop_reason": (db.study_info(name) or {}).get("stop_reason")})
    return {"store": db.display_url, "studies": studies}


def study_status(db, study: str, now: datetime) -> dict[str, Any]:
    """One study: its driver, waves, designed and proposed runs, why it stopped, its failed and retried runs, and
    its best cells."""
    spec = recorded_spec(db, study)
    runs, waves, info = db.runs(study), db.waves(study), db.study_info(study) or {}
    lease = db.lease(db.study_id(study))
    split = wave_split({w["number"]: w["design"] for w in waves}, (r["wave"] for r in runs))
    failed = [r for r in runs if r["status"] not in ("COMPLETE", "PENDING", "RUNNING", "PRUNED")]
    saved = saved_by_wave(runs)
    retried = [r for r in runs if r["attempts"] > 1 and r not in failed]
    logs = db.attempt_logs(study) if retried else {}
    metric, goal = spec["response"]["metric"], spec["response"]["goal"]
    return {
        "study": study, "store": db.display_url, "metric": metric, "goal": goal,
        "driver": None if lease is None else {"driver": lease["driver"], "since": _iso(lease["since"]),
                                              "until": _iso(lease["until"]),
                                              "expired": lease["until"] is not None and lease["until"] < now},
        "runs": {"total": len(runs), "by_status": db.status_counts(study), "designed": split.n_designed,
                 "proposed": split.n_proposed},
        "waves": [_wave(w, [r for r in runs if r["wave"] == w["number"]], saved) for w in waves],
        "pruned": {"runs": sum(r["status"] == "PRUNED" for r in runs), "saved_s": sum(saved.values())},
        "stop_reason": info.get("stop_reason"), "stopped_at": _iso(info.get("stopped_at")),
        "failed": [{"run_id": r["run_id"], "status": r["status"], "error_kind": r["error_kind"],
                    "attempts": r["attempts"], "error_message": r["error_message"]} for r in failed],
        "retried": [{"run_id": r["run_id"], "status": r["status"], "attempts": r["attempts"],
                     "earlier": [a.get("error_kind") for a in logs.get(r["cell_key"], [])[:-1] if "status" in a]}
                    for r in retried],
        "best": _best(runs, metric, goal), "best_tie_rule": TIE_RULE,
    }


def _wave(wave: dict[str, Any], runs: list[dict[str, Any]], saved: dict[int, float]) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run["status"]] = by_status.get(run["status"], 0) + 1
    return {"number": wave["number"], "kind": wave_kind(wave.get("design")), "design": wave.get("design"),
            "reason": wave["reason"], "runs": len(runs), "by_status": by_status,
            "backfill": sum(bool(r.get("backfill")) for r in runs), "idle_s": wave.get("idle_s"),
            "idle_unit": wave.get("idle_unit"), "capacity": wave.get("capacity"),
            "pruned": by_status.get("PRUNED", 0), "saved_s": saved.get(wave["number"], 0.0),
            "deadline_at": _iso(wave.get("deadline_at")), "finished_at": _iso(wave.get("finished_at"))}


def _best(runs: list[dict[str, Any]], metric: str, goal: str) -> list[dict[str, Any]]:
    best = best_cells(runs, metric, goal)
    factors = [c for c in best.columns if c.startswith(PARAM)]
    return [{"params": {c.removeprefix(PARAM): row[c] for c in factors}, "mean": float(row["mean"]),
             "std": None if row["std"] != row["std"] else float(row["std"]), "seeds": int(row["n"]),
             "vs_best": row["vs_best"], "p_vs_best": None if row["p_vs_best"] != row["p_vs_best"] else float(row["p_vs_best"])}
            for _, row in best.iterrows()]


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()  # SQLite gives naive UTC back
