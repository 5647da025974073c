"""The dashboard: every view rendered by Streamlit's AppTest against a store filled by real small studies (a
designed grid, one with FAILED and DIVERGED runs, adaptive waves), an empty store and unreadable ones; its
read-only engine on SQLite and PostgreSQL; and its imports (no torch, no Ray)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dashboard import data, effects, timeline
from dashboard.reader import StoreUnreadable, check_schema, open_readonly
from orchestrator.store import Store
from tests.conftest import REPO, synthetic_spec
from tests.test_cli import wavesweep

APP = REPO / "dashboard" / "app.py"
VIEWS = ("Studies", "Overview", "Runs", "Effects", "Interactions", "Decisions")


def study_specs() -> list[dict]:
    """Three small real studies over the synthetic surface: a designed grid with one real interaction, a grid with
    FAILED and DIVERGED runs, and an adaptive waves study (several waves, each with its reason)."""
    effects_spec = synthetic_spec("effects", seeds=[0, 1], strategy={"mode": "grid", "runs_per_wave": 8})
    effects_spec["fixed"] = {"surface": {"x": 1.0, "z": 2.0, "x*y": 3.0}, "noise_sd": 0.05, "steps": 4}
    effects_spec["factors"] = {"x": {"levels": [-1, 1]}, "y": {"levels": [-1, 1]}, "z": {"levels": [-1, 1]}}
    failing = synthetic_spec("failing")
    failing["fixed"] |= {"fail_if": {"x": 2, "y": 0.5}, "diverge_if": {"x": 1, "y": 0.1}}
    adaptive = synthetic_spec("adaptive", seeds=[0], strategy={"mode": "waves", "runs_per_wave": 8, "max_waves": 3})
    adaptive["fixed"] = {"surface": {"x*x": 1.0, "x": -3.0, "y": 1.0, "x*y": 0.5}, "intercept": 2.25,
                         "noise_sd": 0.02, "steps": 2}
    adaptive["factors"] = {"x": {"levels": [0.0, 2.0]}, "y": {"levels": [0.0, 1.0]}, "z": {"levels": [0.0, 1.0]}}
    return [effects_spec, failing, adaptive]


def build_store(directory: Path, specs: list[dict] | None = None) -> str:
    """A SQLite store filled by running ``specs`` (default :func:`study_specs`) through the real driver and Ray."""
    from orchestrator.execution.driver import run_study
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.spec import parse_spec

    url = f"sqlite:///{directory / 'store.db'}"
    store = Store(url)
    with RayExecutor(num_cpus=2) as executor:
        for spec in specs or study_specs():
            spec["artifacts"] = str(directory / "artifacts")
            run_study(parse_spec(spec), store, executor)
    store.close()
    return url


def render(url: str, monkeypatch, view: str = "Studies", study: str | None = None, **query: str):
    """The app after one run on ``url`` (given as $WAVESWEEP_STORE, as `wavesweep dashboard` passes it)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WAVESWEEP_STORE", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"view": view, **({"study": study} if study else {}), **query})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    """The Plotly figures on the page, as JSON."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array) -> list:
    """A Plotly JSON array: a list, or a typed array {"dtype": "f8", "bdata": base64} (Plotly >= 6)."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def titles(at) -> list[str]:
    return [fig["layout"]["title"]["text"] for fig in charts(at)]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "header")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


# --- every view against real studies -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("study", ["effects", "failing", "adaptive"])
def test_every_view_renders_with_its_elements(dashboard_store, monkeypatch, study):
    runs = Store(dashboard_store, writer=False).runs(study)
    for view in VIEWS:
        at = render(dashboard_store, monkeypatch, view, study)
        assert at.sidebar.radio(key="view").value == view and at.sidebar.selectbox(key="study").value == study
        if view == "Studies":
            table = at.dataframe[0].value
            assert list(table["study"]) == ["effects", "failing", "adaptive"]
            # The grids' runs, and the adaptive study's (its waves, designed or proposed, and the replicates the
            # driver added to fill idle devices: how many depends on the strategy's decisions and on timing).
            adaptive = len(Store(dashboard_store, writer=False).runs("adaptive"))
            assert metrics(at)["studies"] == "3" and metrics(at)["runs"] == str(16 + 12 + adaptive)
            assert set(table["state"]) == {"stopped"}
        elif view == "Overview":
            assert metrics(at)["runs"] == str(len(runs))
            assert titles(at)[0] == "Runs per wave by status"
            assert titles(at)[1].startswith("Run timeline: one lane per CPU slot")
            # Waves the driver counted idle time for show its figure; the others the run-time estimate.
            idle = next(df.value for df in at.dataframe if "source" in df.value.columns)
            counted = {w["number"]: w["idle_s"] for w in Store(dashboard_store, writer=False).waves(study)}
            for wave, source, seconds in zip(idle["wave"], idle["source"], idle["idle_s"]):
                assert source == ("run times" if counted[wave] is None else "driver")
                assert counted[wave] is None or seconds == pytest.approx(counted[wave])
            assert "Best configuration so far" in [s.value for s in at.subheader]
            # A grid's best cell has its seeds; a model's proposed point may have been run once.
            assert at.success and ("95% CI" in at.success[0].value
                                   or (study == "adaptive" and "one seed: no CI" in at.success[0].value))
        elif view == "Runs":
            assert len(at.dataframe[0].value) == len(runs)
            assert titles(at) == [f"Learning curves of run {runs[0]['run_id']}"]
        elif view == "Effects":
            assert titles(at) == ["Standardised effects (Pareto)", "Half-normal plot of effects"]
            assert {s.value for s in at.subheader} >= {"ANOVA (sequential sums of squares)", "Aliases"}
        elif view == "Interactions":
            assert titles(at)[0].startswith("Interaction ") and titles(at)[1].startswith("Interactions: |effect|")
        else:
            waves = Store(dashboard_store, writer=False).waves(study)
            shown = [re.sub(r"\\(.)", r"\1", m.value) for m in at.markdown if m.value.startswith("**Wave ")]
            assert len(shown) == len(waves) and all(w["reason"] in s for w, s in zip(waves, shown))
            assert "Stopped" in at.info[0].value
            assert titles(at)[1] == "Quality vs cost per configuration"


@pytest.mark.slow
def test_effects_and_interactions_show_the_true_terms(dashboard_store, monkeypatch):
    # loss = x + 2 z + 3 x*y + noise: x, z and x:y are significant, and x:y is the interaction to plot.
    at = render(dashboard_store, monkeypatch, "Effects", "effects")
    table = at.dataframe[0].value
    assert set(table.loc[table["significant"], "term"]) == {"x", "z", "x:y"}
    assert table["term"].iloc[0] == "x:y"  # largest standardised effect first
    pareto = charts(at)[0]
    assert [shape["line"]["dash"] for shape in pareto["layout"]["shapes"]] == ["dash", "dot"]  # alpha, Bonferroni
    assert "Fitted: all 16 runs" in texts(at)
    at = render(dashboard_store, monkeypatch, "Interactions", "effects")
    assert (at.selectbox(key="factor_a").value, at.selectbox(key="factor_b").value) == ("x", "y")
    plot = charts(at)[0]
    assert plot["layout"]["title"]["text"] == "Interaction x × y: mean loss (95% CI)"
    assert [trace["name"] for trace in plot["data"]] == ["y = -1", "y = 1"]
    # The lines cross: at x = -1, y = 1 is lower; at x = 1, higher.
    low, high = (values(trace["y"]) for trace in plot["data"])
    assert low[0] > high[0] and low[1] < high[1]
    matrix = at.dataframe[0].value
    assert matrix.loc[matrix["significant"], ["a", "b"]].values.tolist() == [["x", "y"]]


@pytest.mark.slow
def test_failed_runs_are_counted_listed_and_leave_gaps(dashboard_store, monkeypatch):
    at = render(dashboard_store, monkeypatch, "Overview", "failing")
    assert metrics(at)["failed or diverged"] == "4" and metrics(at)["complete"] == "8"
    at = render(dashboard_store, monkeypatch, "Runs", "failing")
    at.multiselect(key="runs_status").set_value(["FAILED"]).run()
    failed = at.dataframe[0].value
    assert len(failed) == 2 and set(failed["error_kind"]) == {"exception"}
    assert all("fail_if matched" in m for m in failed["error_message"])
    at = render(dashboard_store, monkeypatch, "Interactions", "failing")
    shown = texts(at)
    assert "No usable run at: x=1, y=0.1; x=2, y=0.5." in shown
    assert at.dataframe[0].value["note"].tolist() == ["aliased"]  # the missing cells confound x:y


@pytest.mark.slow
def test_adaptive_waves_fit_the_latest_region_or_all_runs(dashboard_store, monkeypatch):
    # The region is the latest *designed* wave's, and both scopes fit designed waves' runs only: a wave the
    # strategy proposed (a model's batch, a space-filling sample) is no design (tests/test_designed_proposed.py
    # checks the counts on a study built for it).
    from orchestrator.wave_kinds import is_designed

    store = Store(dashboard_store, writer=False)
    waves, runs = store.waves("adaptive"), store.runs("adaptive")
    designed = {w["number"] for w in waves if is_designed(w["design"])}
    at = render(dashboard_store, monkeypatch, "Effects", "adaptive")
    assert at.sidebar.radio(key="scope").value == "latest"
    assert f"Fitted: runs inside wave {max(designed)}'s region" in texts(at)
    at.sidebar.radio(key="scope").set_value("all").run()
    n_designed = sum(r["wave"] in designed for r in runs)
    assert not at.exception and metrics(at)["runs used"].endswith(f" of {n_designed}")
    if len(designed) < len(waves):
        assert f"Fitted: the {n_designed} runs of designed wave" in texts(at)
        assert f"{len(runs) - n_designed} runs of proposed wave" in texts(at)
    else:
        assert f"Fitted: all {len(runs)} runs" in texts(at)


# --- stores that cannot be shown -----------------------------------------------------------------------------------

def test_a_store_without_studies_says_so(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).close()
    at = render(url, monkeypatch)
    assert "No study in this store yet" in at.info[0].value


@pytest.mark.parametrize("case", ["missing", "no schema", "old schema", "other tables"])
def test_unreadable_stores_give_a_message_and_stay_untouched(tmp_path, monkeypatch, case):
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    if case == "no schema":
        path.touch()
    elif case == "other tables":
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
    elif case == "old schema":
        from alembic import command

        from orchestrator.store.engine import alembic_config

        store = Store(url)
        command.downgrade(alembic_config(store.engine), "0002")
        store.close()
    before = path.read_bytes() if path.exists() else None
    at = render(url, monkeypatch)
    message = at.error[0].value
    expected = {"missing": "no store at", "no schema": "has no wavesweep schema yet",
                "old schema": f"wavesweep db upgrade --store '{url}'", "other tables": "holds tables but no wavesweep"}
    assert expected[case] in message
    assert (path.read_bytes() if path.exists() else None) == before  # nothing created, migrated or written


def test_a_password_in_the_url_is_never_shown(monkeypatch):
    at = render("postgresql+psycopg://researcher:s3cret@127.0.0.1:1/wavesweep?connect_timeout=2", monkeypatch)
    shown = texts(at) + "\n".join(c.value for c in at.sidebar.caption)
    assert "cannot read postgresql+psycopg://researcher:***@127.0.0.1:1/wavesweep" in shown
    assert "s3cret" not in shown


# --- the read-only engine and the data functions on both backends --------------------------------------------------

def fill_without_ray(url: str) -> None:
    """One grid wave of the synthetic study through the Store API: 3 COMPLETE runs (curves, one metric NaN), one
    FAILED, one RUNNING on a GPU, one PENDING."""
    from orchestrator.run_record import RunResult, RunStatus
    from orchestrator.spec import parse_spec
    from orchestrator.strategies import Grid

    store = Store(url)
    spec = parse_spec(synthetic_spec("toy"))
    study_id = store.open_study(spec)
    plan = Grid(spec).next_wave(store.known_keys(study_id), 6)
    store.add_wave(study_id, plan)
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for i, cell in enumerate(plan.cells[:5]):
        start = t0 + timedelta(seconds=10 * i)
        store.mark_running(cell.key, host="node-1", device=f"cuda:{i % 2}", started_at=start)
        if i == 4:
            continue
        store.add_curve_points([(cell.key, step, {"train_loss": 1.0 / step}) for step in (1, 2)])
        status = RunStatus.FAILED if i == 3 else RunStatus.COMPLETE
        loss = {"loss": 0.5 + i, "odd": math.inf} if status == RunStatus.COMPLETE else {}
        store.finish_run(cell.key, RunResult(status=status, metrics={**loss, "gpu_s": 9.0, "wall_s": 9.0},
                                             started_at=start, finished_at=start + timedelta(seconds=9), wall_s=9.0,
                                             error_kind="exception" if i == 3 else None))
    store.close()


def test_data_functions_on_sqlite_and_postgresql(store_url):
    fill_without_ray(store_url)
    engine = open_readonly(store_url)
    check_schema(engine)
    studies = data.studies(engine)
    assert studies.iloc[0][["study", "state", "runs", "COMPLETE", "FAILED", "RUNNING", "PENDING"]].tolist() == \
        ["toy", "running", 6, 3, 1, 1, 1]
    assert studies.iloc[0]["best"] == 0.5 and studies.iloc[0]["gpu_hours"] == pytest.approx(4 * 9 / 3600)
    study = data.load_study(engine, "toy")
    assert study.live and len(study.runs) == 6 and study.runs["started_at"].dt.tz is not None
    assert (study.runs["metric.odd"] == math.inf).sum() == 3  # stored as (NULL, "inf"), decoded back
    bars, idle, unit = timeline.timeline(study, now=datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC))
    assert unit == "GPU" and set(bars["lane"]) == {"node-1 cuda:0", "node-1 cuda:1"}
    # One wave, 2 GPU lanes from 03:04:05 to 03:05:00 (the RUNNING run ends "now"): 110 lane-s, 4 x 9 + 15 busy.
    assert idle.iloc[0][["lanes", "span_s", "busy_s", "idle_s"]].tolist() == pytest.approx([2, 55, 51, 59])
    assert idle.iloc[0][["source", "unit", "capacity"]].tolist() == ["run times", "GPU", 2]  # the driver counted none
    assert data.curve(engine, int(study.runs["run_id"].iloc[0]))["value"].tolist() == [1.0, 0.5]
    assert data.decisions(study)["best"].tolist() == [0.5]
    assert data.load_study(engine, "nope") is None
    engine.dispose()


def test_the_dashboard_engine_cannot_write(store_url):
    Store(store_url).close()
    engine = open_readonly(store_url)
    with pytest.raises(SQLAlchemyError, match="read-?only"), engine.begin() as conn:
        conn.execute(text("CREATE TABLE intruder (x INTEGER)"))
    engine.dispose()


def test_open_readonly_refuses_what_it_cannot_show(tmp_path):
    with pytest.raises(StoreUnreadable, match="no store at"):
        open_readonly(f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(StoreUnreadable, match="in-memory"):
        open_readonly("sqlite:///:memory:")
    assert not (tmp_path / "none.db").exists()


def test_a_study_that_cannot_be_fitted_yet_says_why(tmp_path):
    from dataclasses import replace

    fill_without_ray(f"sqlite:///{tmp_path / 's.db'}")
    study = data.load_study(open_readonly(f"sqlite:///{tmp_path / 's.db'}"), "toy")
    assert effects.fit(study).result is not None  # 3 COMPLETE runs over x and y: a (weak) fit
    one = replace(study, runs=study.runs.assign(status=["COMPLETE"] + ["FAILED"] * 5))
    assert effects.fit(one).error.startswith("cannot fit these runs yet: 1 usable run(s) of 6")
    none = replace(study, runs=study.runs.assign(status="PENDING"))
    assert effects.fit(none).error == "no COMPLETE run with 'loss' yet"


# --- imports and the command ---------------------------------------------------------------------------------------

def test_the_dashboard_imports_neither_torch_nor_ray(tmp_path):
    """Every view rendered in a fresh interpreter, then the modules it loaded."""
    fill_without_ray(f"sqlite:///{tmp_path / 's.db'}")
    code = f"""
import os, sys
os.environ["WAVESWEEP_STORE"] = {f"sqlite:///{tmp_path / 's.db'}"!r}
from streamlit.testing.v1 import AppTest
for view in {list(VIEWS)!r}:
    at = AppTest.from_file({str(APP)!r}, default_timeout=60)
    at.query_params["view"] = view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
print(sorted(m for m in ("torch", "ray", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_dashboard_command_help():
    out = wavesweep("dashboard", "--help")
    assert out.returncode == 0 and "--address" in out.stdout and "--port" in out.stdout and "127.0.0.1" in out.stdout
