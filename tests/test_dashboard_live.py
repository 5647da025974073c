"""A study writing to SQLite while the dashboard polls it, as it does when someone watches a study run: every
view's data functions in a loop, and the app itself now and then. Neither side may see "database is locked"
(optuna-dashboard#545: a dashboard crashed a running study that way)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dashboard import data, effects, timeline
from dashboard.reader import StoreUnreadable, check_schema, open_readonly
from orchestrator.store import Store
from tests.conftest import REPO, synthetic_spec, write_spec
from tests.test_dashboard import APP

pytestmark = pytest.mark.slow


def poll_every_view(url: str) -> str | None:
    """Compute what every view shows; the state of study "live" (None until it is in the store)."""
    engine = open_readonly(url)
    try:
        check_schema(engine)
        data.studies(engine)
        study = data.load_study(engine, "live")
        if study is None:
            return None
        data.wave_progress(study), data.cell_table(study), timeline.timeline(study)
        started = study.runs[study.runs["started_at"].notna()]
        data.filter_runs(study.runs, ["RUNNING"])
        if len(started):
            data.curve(engine, int(started["run_id"].iloc[-1]))
        fit = effects.fit(study)
        if fit.result is not None:
            effects.standardized(fit.result), effects.half_normal(fit.result), effects.anova_frame(fit.result)
            matrix = effects.interaction_matrix(fit)
            if len(matrix):
                effects.interaction_means(fit, *effects.strongest_pair(matrix))
        data.decisions(study), data.pareto_front(study)
        return "running" if study.live else "done"
    finally:
        engine.dispose()


def test_polling_a_running_study_locks_neither_side(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    spec = synthetic_spec("live", seeds=[0, 1, 2], strategy={"mode": "grid", "runs_per_wave": 6})
    spec["fixed"] |= {"sleep_s": 0.6, "steps": 6}  # 18 runs of 0.6 s, curves streamed: the driver writes a lot
    spec["artifacts"] = str(tmp_path / "artifacts")
    url = f"sqlite:///{tmp_path / 'live.db'}"
    log = tmp_path / "run.log"
    with log.open("w") as out:
        spec_path = write_spec(tmp_path / "s.yaml", spec)
        command = [sys.executable, "-m", "orchestrator", "run", str(spec_path), "--store", url]
        study = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    monkeypatch.setenv("WAVESWEEP_STORE", url)
    polls, states, errors, rendered_live = 0, set(), [], False
    deadline = time.monotonic() + 300
    try:
        while study.poll() is None:
            assert time.monotonic() < deadline, "the study did not finish in 300 s"
            try:
                state = poll_every_view(url)
            except StoreUnreadable:
                state = "not yet"  # the store file or its schema is not there yet
            except Exception as exc:  # noqa: BLE001 - every error of the reader is a failure, reported at the end
                errors.append(repr(exc))
                continue
            polls += 1
            states.add(state)
            if state == "running" and not rendered_live:
                # The app itself while the study runs: the view is a fragment that reruns every TTL seconds.
                at = AppTest.from_file(str(APP), default_timeout=60)
                at.query_params["view"] = "Overview"
                at.run()
                errors += [e.value for e in at.exception]
                rendered_live = any("refreshes every" in i.value for i in at.info)
    finally:
        if study.poll() is None:  # a failed assertion above: do not leave the study running
            study.kill()
            study.wait()
    output = log.read_text()
    assert study.returncode == 0, output
    assert "locked" not in output.lower()
    assert not errors, errors
    assert "running" in states and polls >= 5, (polls, states)
    assert rendered_live
    assert poll_every_view(url) == "done"
    assert Store(url, writer=False).status_counts("live") == {"COMPLETE": 18}
