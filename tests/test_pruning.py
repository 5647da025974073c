"""Pruning from streamed learning curves: the rules (pure), then studies on real Ray: a clearly losing run stops early
and its GPU goes to the next run, a late bloomer outlives the hold-off, designed cells run to the end under the
default, and resume keeps PRUNED runs."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest
from rich.console import Console
from sqlalchemy import update

from dashboard import data
from dashboard.reader import open_readonly
from orchestrator.analysis.runs import select_runs
from orchestrator.cli.status_text import print_study
from orchestrator.errors import SpecError
from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.execution.pruning import Pruner
from orchestrator.reporting.study_report import study_status
from orchestrator.run_record import RunRecord, spent_hours
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.store.models import RunModel
from tests.test_dashboard import render


def _feed(pruner: Pruner, key: str, values, group: str | None = None, start: int = 1) -> None:
    for step, value in enumerate(values, start=start):
        pruner.add(key, group or key, step, value)


def _finished_peers(pruner: Pruner, n: int = 5, steps: int = 30) -> None:
    """``n`` finished runs, final values 1.0 .. 1.0 + 0.1 (n - 1), curves ``final + 1 / step``."""
    for i in range(n):
        final = 1.0 + 0.1 * i
        _feed(pruner, f"peer{i}", [final + 1 / s for s in range(1, steps + 1)])
        pruner.finished(f"peer{i}", final)


def test_halving_stops_a_clearly_worse_run_at_its_rung_with_the_numbers_that_decided():
    pruner = Pruner("halving", "minimize", ("share", 0.2))  # hold-off 6 of 30 steps; rungs 6, 18
    _finished_peers(pruner)
    _feed(pruner, "bad", [3.0 + 1 / s for s in range(1, 6)])
    assert pruner.start() == 6 and pruner.judge("bad") is None  # step 5: before the hold-off
    pruner.add("bad", "bad", 6, 3.0 + 1 / 6)
    decision = pruner.judge("bad")
    assert decision is not None and (decision.rule, decision.step, decision.rung) == ("halving", 6, 6)
    assert decision.peers == 5 and decision.full_steps == 30
    # The bar: the best third of the 6 values at the rung keeps 2: the second best, 1.1 + 1/6.
    assert decision.threshold == pytest.approx(1.1 + 1 / 6)
    assert decision.margin == 0 and "no replicates" in decision.note
    # Its final predicted from the finished runs' finals against their values at step 6 (exactly linear here).
    assert decision.predicted == pytest.approx(3.0) and decision.interval[0] <= 3.0 <= decision.interval[1]


def test_halving_keeps_a_run_in_the_best_third_and_judges_each_rung_once():
    pruner = Pruner("halving", "minimize", ("steps", 6))
    _finished_peers(pruner)
    _feed(pruner, "good", [0.9 + 1 / s for s in range(1, 7)])
    assert pruner.judge("good") is None
    _feed(pruner, "good", [5.0] * 11, start=7)  # worse from step 7 on, but the next rung is 18
    assert pruner.judge("good") is None
    pruner.add("good", "good", 18, 5.0)
    assert pruner.judge("good").rung == 18


def test_a_late_bloomer_is_not_judged_before_the_hold_off_and_survives_it():
    pruner = Pruner("median", "minimize", ("steps", 10))
    _finished_peers(pruner)
    bloomer = [6.0 + 1 / s for s in range(1, 10)]  # far worse than every peer until step 10
    for step, value in enumerate(bloomer, start=1):
        pruner.add("bloomer", "bloomer", step, value)
        assert pruner.judge("bloomer") is None, step
    _feed(pruner, "bloomer", [0.8 + 1 / s for s in range(10, 31)], start=10)
    assert pruner.judge("bloomer") is None


def test_the_median_rule_needs_a_margin_of_replicate_noise():
    pruner = Pruner("median", "maximize", ("steps", 1))
    for i, final in enumerate([1.0, 1.2, 1.4, 1.6]):  # two pairs of replicates: SD 0.1414 within each pair
        _feed(pruner, f"r{i}", [final] * 10, group=f"g{i // 2}")
        pruner.finished(f"r{i}", final)
    _feed(pruner, "near", [1.2] * 5)  # median 1.3: below it by 0.1, within the noise
    assert pruner.judge("near") is None
    _feed(pruner, "far", [1.0] * 5)  # median of its 5 peers (with "near") 1.2: below it by 0.2 > 0.1414
    decision = pruner.judge("far")
    assert decision is not None and decision.margin == pytest.approx(math.sqrt(0.02))
    assert decision.threshold == pytest.approx(1.2) and decision.note == ""


def test_bound_stops_a_run_that_cannot_plausibly_beat_the_best_finished_run():
    pruner = Pruner("bound", "minimize", ("share", 0.5))
    # Finished runs whose finals follow their values at step 10 and how much they moved since step 5, with noise.
    for i in range(12):
        final = 1.0 + 0.1 * i
        _feed(pruner, f"peer{i}", [final + (2.0 + 0.01 * (i % 3)) / s for s in range(1, 21)])
        pruner.finished(f"peer{i}", final)
    assert pruner.start() == 10
    _feed(pruner, "hopeful", [0.98 + 2.0 / s for s in range(1, 11)])  # on course to beat the best final
    assert pruner.judge("hopeful") is None
    _feed(pruner, "hopeless", [2.5 + 2.0 / s for s in range(1, 10)])
    assert pruner.judge("hopeless") is None  # step 9: before the hold-off
    pruner.add("hopeless", "hopeless", 10, 2.5 + 0.2)
    decision = pruner.judge("hopeless")
    assert decision is not None and decision.rule == "bound" and decision.threshold == 1.0
    assert decision.predicted == pytest.approx(2.5, abs=0.05) and decision.interval[0] > 1.0
    assert decision.note == "the margin is the prediction interval"


def test_no_decision_without_a_finished_run_to_size_a_share_or_too_few_peers():
    pruner = Pruner("median", "minimize", ("share", 0.25))
    for i in range(6):
        _feed(pruner, f"r{i}", [float(i)] * 20)
    assert pruner.start() is None and pruner.judge("r5") is None  # no full run yet: the hold-off is unknown
    few = Pruner("halving", "minimize", ("steps", 2))
    for i in range(4):
        _feed(few, f"r{i}", [float(i)] * 5)
    assert few.judge("r3") is None  # 4 values at the rung: fewer than 5


def test_analyze_leaves_pruned_runs_out_and_says_so():
    frame = pd.DataFrame({"x": [0, 1, 0, 1], "loss": [1.0, 2.0, None, None],
                          "status": ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]})
    selection = select_runs(frame, "loss")
    assert len(selection.runs) == 2 and selection.excluded == {"PRUNED": 2}
    assert any(n.startswith("2 PRUNED run(s) excluded") for n in selection.notes), selection.notes


def test_a_pruned_run_tells_the_model_its_predicted_final_and_counts_what_it_saved():
    head = {"status": "PRUNED", "prune": {"step": 10, "ran_to": 12, "full_steps": 40, "value": 3.0,
                                          "predicted": 2.5}}
    run = RunRecord.build(head, {"x": 1}, {"gpu_s": 6.0})
    assert run.value("loss") is None and run.estimate("loss") == 2.5
    assert run.saved_s == pytest.approx(6.0 * (40 / 12 - 1))
    no_fit = RunRecord.build({**head, "prune": {**head["prune"], "predicted": None}}, {"x": 1}, {"gpu_s": 6.0})
    assert no_fit.estimate("loss") == 3.0  # its value at the step: pessimistic for an improving curve
    done = RunRecord.build({"status": "COMPLETE", "prune": head["prune"]}, {"x": 1}, {"loss": 1.0, "gpu_s": 9.0})
    assert done.prune is None and done.saved_s == 0 and done.estimate("loss") == 1.0


def test_the_spec_refuses_a_hold_off_it_cannot_read():
    base = {"study": "s", "experiment": "experiments.synthetic:run", "factors": {"x": {"levels": [0, 1]}},
            "response": {"metric": "loss"}}
    assert parse_spec({**base, "strategy": {"prune_after": "10%"}}).strategy.hold_off == ("share", 0.1)
    assert parse_spec({**base, "strategy": {"prune_after": 12}}).strategy.hold_off == ("steps", 12)
    for bad in ("ten", "150%", -3):
        with pytest.raises(SpecError, match="strategy.prune_after"):
            parse_spec({**base, "strategy": {"prune_after": bad}})
    with pytest.raises(SpecError, match="strategy.prune.*true, false or 'all'"):
        parse_spec({**base, "strategy": {"prune": "some"}})


# --- on real Ray -------------------------------------------------------------------------------------------------

STEPS, SLEEP_S, HOLD_OFF = 40, 2.0, 8  # a full run: 40 reports, 0.05 s apart; rungs at steps 8 and 24

# loss = 1 + 0.1 (x - 3)^2 (+ 1/step on the curve): x = 3 best, x = 6 and 7 the worst. x = 3 is a late bloomer: its
# curve is 5 worse than its final until the hold-off, worse than every other run's.
CURVES = {
    "experiment": "experiments.synthetic:run",
    "fixed": {"surface": {"x*x": 0.1, "x": -0.6}, "intercept": 1.9, "noise_sd": 0.01, "steps": STEPS,
              "sleep_s": SLEEP_S, "curve_as": "loss", "bloom_if": {"x": 3}, "bloom_at": HOLD_OFF},
    "response": {"metric": "loss", "goal": "minimize"},
    "resources": {"gpus_per_run": 1, "cpus_per_run": 0.5},
}


def _by_x(runs) -> dict:
    return {r.levels["x"]: r for r in runs}


def _check_pruned(store: Store, run) -> None:
    """Stopped early, by a decision taken after the hold-off, with the numbers and the curve to show it."""
    prune = run.prune
    assert run.status == "PRUNED" and prune["rule"] == "halving" and prune["value"] > prune["threshold"], run
    assert prune["step"] >= HOLD_OFF and prune["full_steps"] == STEPS and prune["step"] <= prune["ran_to"] < STEPS
    assert run.saved_s > 0 and "pruned" in run["error_message"]
    assert max(step for step, name, _ in store.curve(run["cell_key"]) if name == "loss") == prune["ran_to"]


def _check_reused(runs) -> None:
    """A pruned run's GPU went to the next run: one started before the pruned run would have ended."""
    full = min(r["wall_s"] for r in runs if r.status == "COMPLETE")
    followed = [(r, min(n["started_at"] for n in runs if n["started_at"] >= r["finished_at"]))
                for r in runs if r.status == "PRUNED" and any(n["started_at"] >= r["finished_at"] for n in runs)]
    assert followed, "no run followed a pruned one"
    assert any((start - r["started_at"]).total_seconds() < full for r, start in followed)


def _check_accounting(store: Store, study: str, runs, monkeypatch) -> None:
    """What pruning saved, per wave, is the same in `status` (text and JSON) and the dashboard; budgets count what
    pruned runs used."""
    saved = sum(r.saved_s for r in runs)
    assert saved > 0
    report = study_status(store, study, datetime.now(UTC))
    assert sum(w["saved_s"] for w in report["waves"]) == pytest.approx(saved)
    assert sum(w["pruned"] for w in report["waves"]) == report["pruned"]["runs"] == sum(r.status == "PRUNED"
                                                                                        for r in runs)
    assert report["pruned"]["saved_s"] == pytest.approx(saved) and report["failed"] == []
    console = Console(width=250, record=True)
    print_study(console, store, study)
    text = console.export_text()
    assert "pruning saved" in text and f"Pruned: {report['pruned']['runs']} runs stopped early" in text
    assert "PRUNED run" not in text  # not listed as failures
    loaded = data.load_study(open_readonly(store.url), study)
    assert data.wave_progress(loaded)["saved_s"].sum() == pytest.approx(saved)
    pruned = loaded.runs[loaded.runs["status"] == "PRUNED"].iloc[0]
    assert data.prune_words(pruned["prune"], "loss").startswith(f"Pruned at step {pruned['prune']['step']} of 40")
    at = render(store.url, monkeypatch, "Overview", study)
    assert any(f"Pruning stopped {report['pruned']['runs']} runs early" in c.value for c in at.caption), \
        [c.value for c in at.caption]
    progress = next(df.value for df in at.dataframe if "saved_gpu_hours" in df.value.columns)
    assert progress["saved_gpu_hours"].sum() * 3600 == pytest.approx(saved)
    at = render(store.url, monkeypatch, "Runs", study)
    table = at.dataframe[0].value
    assert table["pruned_at"].notna().sum() == report["pruned"]["runs"]
    used = [r.cost_s for r in runs if r.status == "PRUNED"]
    assert all(c and c > 0 for c in used)
    assert spent_hours(runs)[0] * 3600 == pytest.approx(sum(r.cost_s for r in runs))


@pytest.mark.slow
def test_greedy_steps_are_pruned_and_a_late_bloomer_is_not(sqlite_url, tmp_path):
    # One GPU: the start point twice, then x = 1..7 one after another. Whatever order the cost model picks for them,
    # x = 6 and 7 are judged against the start runs and x = 1, 2 (1.5 and 1.2 at the rungs): clearly worse.
    spec = parse_spec({**CURVES, "study": "climb", "artifacts": str(tmp_path / "a"), "seeds": [0],
                       "factors": {"x": {"levels": list(range(8))}},
                       "strategy": {"mode": "greedy", "max_waves": 2, "prune_after": HOLD_OFF,
                                    "prune_rule": "halving"}})
    store = Store(sqlite_url)
    with RayExecutor(num_cpus=2, num_gpus=1) as executor:
        run_study(spec, store, executor)
    runs = store.runs("climb")
    assert [r.status for r in runs if r.wave == 1] == ["COMPLETE", "COMPLETE"]  # no peers yet to judge them
    by_x = _by_x(r for r in runs if r.wave == 2)
    for x in (6, 7):
        _check_pruned(store, by_x[x])
    bloomer = by_x[3]
    assert bloomer.status == "COMPLETE" and bloomer.prune is None
    assert min((r for r in runs if r.status == "COMPLETE"), key=lambda r: r.metrics["loss"]) is bloomer
    _check_reused(runs)


@pytest.mark.slow
def test_designed_cells_run_to_the_end_unless_prune_all_and_resume_keeps_pruned_runs(sqlite_url, tmp_path,
                                                                                    monkeypatch):
    # A grid on 2 GPUs, in waves of two: (1, 4), (2, 5), then (3, 0) and (7, 6) (the grid pairs the i-th level with
    # the (i + 4)-th). The first four run unjudged (4 values at a rung: fewer than 5); every other run is judged
    # against them: x = 3 (the late bloomer) is the best, x = 7, 0, 6 are clearly worse.
    base = {**CURVES, "artifacts": str(tmp_path / "a"), "seeds": [0],
            "factors": {"x": {"levels": [1, 2, 3, 7, 4, 5, 0, 6]}}}
    store = Store(sqlite_url)
    with RayExecutor(num_cpus=2, num_gpus=2) as executor:
        run_study(parse_spec({**base, "study": "grid-default",
                              "strategy": {"mode": "grid", "runs_per_wave": 2, "prune_after": HOLD_OFF,
                                           "prune_rule": "halving"}}),
                  store, executor)
        assert {r.status for r in store.runs("grid-default")} == {"COMPLETE"}  # designed: never pruned
        spec = parse_spec({**base, "study": "grid-all", "strategy": {
            "mode": "grid", "runs_per_wave": 2, "prune": "all", "prune_after": HOLD_OFF, "prune_rule": "halving"}})
        run_study(spec, store, executor)
        runs = store.runs("grid-all")
        assert {r.levels["x"] for r in sorted(runs, key=lambda r: r["started_at"])[:4]} == {1, 2, 4, 5}
        assert {x: r.status for x, r in _by_x(runs).items() if r.status == "PRUNED"}.keys() == {0, 6, 7}
        for run in runs:
            if run.status == "PRUNED":
                _check_pruned(store, run)
        _check_reused(runs)
        _check_accounting(store, "grid-all", runs, monkeypatch)
        # A driver dies: one COMPLETE run is left RUNNING. The next run of the study reruns it, and only it.
        keep = _by_x(runs)[1]
        with store.session() as s:
            s.execute(update(RunModel).where(RunModel.cell_key == keep["cell_key"]).values(status="RUNNING"))
        outcome = run_study(spec, store, executor)
    assert outcome.ran == 1
    again = {r["cell_key"]: r for r in store.runs("grid-all")}
    for before in runs:
        if before.status == "PRUNED":
            after = again[before["cell_key"]]
            assert after.status == "PRUNED" and after.prune == before.prune
            assert after["finished_at"] == before["finished_at"]
