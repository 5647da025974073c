"""How long the dashboard takes to compute every view's data on a big store (target: < 3 s in total).

Fills a SQLite store with one study of N runs (default 20,000) over 8 factors in 10 waves, as the driver would
leave it mid-study: 32 GPU lanes (4 hosts x 8 GPUs), mostly COMPLETE runs with a few FAILED and DIVERGED, the last
wave partly RUNNING and PENDING, 3 final metrics and a 5-point learning curve per run; plus two small studies for
the Studies view. Rows go in through SQLAlchemy Core (the ORM would take minutes). Then it opens the store
read-only as the dashboard does and times each view's data functions (the same ones the app caches), cold and
then the median of ``--repeats`` more.

    python bench/dashboard_scale.py [--runs 20000] [--repeats 3] [--db PATH]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dashboard import data, effects, timeline
from dashboard.reader import check_schema, open_readonly
from orchestrator.store import Store
from orchestrator.store.models import CurvePointModel, MetricModel, RunModel, StudyModel, WaveModel

FACTORS = {
    "learning_rate": {"levels": [1e-4, 1e-3], "scale": "log"}, "warmup_ratio": {"levels": [0.0, 0.1]},
    "weight_decay": {"levels": [0.0, 0.1]}, "lora_rank": {"levels": [8, 32]}, "lora_alpha": {"levels": [16, 64]},
    "batch_size": {"levels": [16, 64]}, "dropout": {"levels": [0.0, 0.1]}, "optimizer": {"levels": ["adamw", "sgd"]},
}
TARGET_S = 3.0
WAVES, HOSTS, GPUS = 10, 4, 8


def spec(study: str) -> dict:
    return {"study": study, "experiment": "experiments.synthetic:run", "fixed": {}, "factors": FACTORS,
            "response": {"metric": "eval_loss", "goal": "minimize"}, "strategy": {"mode": "grid"},
            "resources": {"gpus_per_run": 1}, "seeds": [0]}


def loss(levels: dict, rng: random.Random) -> float:
    """A surface with main effects and two interactions (lr x warmup, rank x alpha), plus noise."""
    code = {n: (0 if levels[n] == FACTORS[n]["levels"][0] else 1) * 2 - 1 for n in FACTORS}
    return (2.0 + 0.3 * code["learning_rate"] - 0.1 * code["warmup_ratio"] + 0.2 * code["learning_rate"]
            * code["warmup_ratio"] - 0.05 * code["lora_rank"] + 0.1 * code["lora_rank"] * code["lora_alpha"]
            + 0.05 * code["optimizer"] + rng.gauss(0, 0.05))


def fill(url: str, runs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    cells = [dict(zip(FACTORS, combo)) for combo in itertools.product(*(f["levels"] for f in FACTORS.values()))]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    engine = Store(url).engine  # creates the schema through the store's own migrations
    with engine.begin() as conn:
        for n, (study, count) in enumerate((("big", runs), ("small-a", 64), ("small-b", 32))):
            study_id = conn.execute(StudyModel.__table__.insert().values(
                name=study, spec=spec(study), fingerprint="bench", created_at=start, updated_at=start)
            ).inserted_primary_key[0]
            per_wave = -(-count // WAVES)
            run_rows, lane_free = [], {}
            for wave in range(1, WAVES + 1):
                wave_id = conn.execute(WaveModel.__table__.insert().values(
                    study_id=study_id, number=wave, design="full_factorial", reason=f"bench wave {wave}",
                    created_at=start)).inserted_primary_key[0]
                for i in range(min(per_wave, count - (wave - 1) * per_wave)):
                    index = (wave - 1) * per_wave + i
                    lane = index % (HOSTS * GPUS)
                    began = max(lane_free.get(lane, start), start + timedelta(seconds=wave * 3600))
                    wall = rng.uniform(60, 600)
                    status = _status(wave, i, per_wave, rng)
                    ended = began + timedelta(seconds=wall) if status not in ("RUNNING", "PENDING") else None
                    lane_free[lane] = ended or began
                    run_rows.append({
                        "study_id": study_id, "wave_id": wave_id, "cell_key": f"{study}-{index}",
                        "params": cells[index % len(cells)], "seed": index // len(cells), "status": status,
                        "attempts": 0 if status == "PENDING" else 1, "created_at": start,
                        "started_at": None if status == "PENDING" else began, "finished_at": ended,
                        "wall_s": wall if ended else None, "host": f"node{lane // GPUS}",
                        "device": f"cuda:{lane % GPUS}", "error_kind": "exception" if status == "FAILED" else None,
                        "error_message": "RuntimeError: bench" if status == "FAILED" else None})
            conn.execute(RunModel.__table__.insert(), run_rows)
            ids = conn.execute(RunModel.__table__.select().with_only_columns(RunModel.id, RunModel.cell_key)
                               .where(RunModel.study_id == study_id)).all()
            by_key = {key: run_id for run_id, key in ids}
            metrics, curves = [], []
            for row in run_rows:
                run_id = by_key[row["cell_key"]]
                if row["status"] == "COMPLETE":
                    value = loss(row["params"], rng)
                    metrics += [{"run_id": run_id, "name": "eval_loss", "value": value, "kind": "finite"},
                                {"run_id": run_id, "name": "wall_s", "value": row["wall_s"], "kind": "finite"},
                                {"run_id": run_id, "name": "gpu_s", "value": row["wall_s"], "kind": "finite"}]
                if row["started_at"] is not None:
                    curves += [{"run_id": run_id, "step": step * 100, "name": "train_loss",
                                "value": 3.0 / step, "kind": "finite"} for step in range(1, 6)]
            conn.execute(MetricModel.__table__.insert(), metrics)
            conn.execute(CurvePointModel.__table__.insert(), curves)


def _status(wave: int, i: int, per_wave: int, rng: random.Random) -> str:
    if wave == WAVES and i >= per_wave - HOSTS * GPUS:  # the last wave's tail: running on every GPU, then queued
        return "RUNNING" if i < per_wave - HOSTS * GPUS // 2 else "PENDING"
    draw = rng.random()
    return "FAILED" if draw < 0.02 else "DIVERGED" if draw < 0.04 else "COMPLETE"


def views(url: str) -> dict[str, float]:
    """Seconds per view's data, computed as the app computes it (one load of the study shared by its views)."""
    times = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    engine = timed("open + schema check", lambda: _open(url))
    timed("Studies (SQL aggregates)", lambda: data.studies(engine))
    study = timed("load study (runs + metrics)", lambda: data.load_study(engine, "big"))
    timed("Overview (waves, best cell, GPU timeline)",
          lambda: (data.wave_progress(study), data.cell_table(study), timeline.timeline(study)))
    first = int(study.runs["run_id"].iloc[0])
    timed("Runs (filter + one learning curve)",
          lambda: (data.filter_runs(study.runs, ["COMPLETE"], [WAVES]), data.curve(engine, first)))
    fit = timed("Effects (fit, Pareto, half-normal, ANOVA, aliases)", lambda: _effects(study))
    timed("Interactions (matrix, interaction plot means)", lambda: _interactions(fit))
    timed("Decisions (per wave, Pareto front)", lambda: (data.decisions(study), data.pareto_front(study)))
    engine.dispose()
    return times


def _open(url: str):
    engine = open_readonly(url)
    check_schema(engine)
    return engine


def _effects(study):
    fit = effects.fit(study)
    result = fit.result
    effects.standardized(result), effects.critical_t(result), effects.half_normal(result)
    effects.anova_frame(result), effects.alias_frame(result)
    return fit


def _interactions(fit):
    matrix = effects.interaction_matrix(fit)
    return effects.interaction_means(fit, *effects.strongest_pair(matrix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file to fill (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "dashboard_scale.db"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        t0 = time.perf_counter()
        fill(url, args.runs)
        print(f"filled {path.name}: {args.runs} runs x {len(FACTORS)} factors in {WAVES} waves, {HOSTS * GPUS} GPU "
              f"lanes, 3 metrics + 5 curve points per run ({time.perf_counter() - t0:.1f} s)")
        cold = views(url)
        warm = [views(url) for _ in range(args.repeats)]
    print(f"{'view data':<52}{'cold s':>8}{'median s':>10}")
    for name in cold:
        print(f"{name:<52}{cold[name]:>8.3f}{statistics.median(w[name] for w in warm):>10.3f}")
    total_cold = sum(cold.values())
    total = statistics.median(sum(w.values()) for w in warm)
    verdict = "met" if max(total, total_cold) < TARGET_S else "NOT met"
    print(f"{'total':<52}{total_cold:>8.3f}{total:>10.3f}   (target < {TARGET_S:g} s: {verdict})")


if __name__ == "__main__":
    main()
