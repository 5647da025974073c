"""Run artifacts, store references between studies, and worker reuse, through real Ray."""

from __future__ import annotations

import pytest

from orchestrator.errors import WavesweepError
from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import synthetic_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executor():
    with RayExecutor(num_cpus=2) as ex:
        yield ex


def test_a_study_evaluates_the_best_artifact_of_another(tmp_path, sqlite_url, executor):
    store = Store(sqlite_url)
    producer = synthetic_spec("producer", seeds=[0], artifacts=str(tmp_path / "art"))
    producer["fixed"]["save_artifact"] = True
    run_study(parse_spec(producer), store, executor)
    produced = store.runs("producer")
    best = min(produced, key=lambda r: r["metric.loss"])
    assert all(r["artifact_dir"] == str(tmp_path / "art" / "producer" / r["cell_key"]) for r in produced)

    consumer = {
        "study": "consumer", "experiment": "experiments.synthetic:run",
        "factors": {"load_artifact": {"levels": ["store:producer:best", f"store:producer:{produced[0]['run_id']}"]},
                    "x": {"levels": [1, 2]}},
        "response": {"metric": "loss"},
    }
    spec = parse_spec(consumer)
    run_study(spec, store, executor)
    runs = store.runs("consumer")
    assert {r["status"] for r in runs} == {"COMPLETE"}
    by_ref = {r["param.load_artifact"]: r for r in runs if r["param.x"] == 1}
    assert by_ref["store:producer:best"]["metric.loaded"] == best["metric.loss"]
    assert by_ref["store:producer:best"]["inputs"] == {"load_artifact": best["artifact_dir"]}
    assert by_ref[f"store:producer:{produced[0]['run_id']}"]["metric.loaded"] == produced[0]["metric.loss"]
    # Runs that saved nothing have no artifact directory.
    assert all(r["artifact_dir"] is None for r in runs)


@pytest.mark.parametrize(("ref", "message"), [
    ("store:nosuch:best", "study 'nosuch' is not in"),
    ("store:producer:999", "study 'producer' has no run 999 with artifacts"),
    ("store:producer", "must be 'store:<study>:best' or 'store:<study>:<run id>'"),
])
def test_a_dangling_reference_fails_before_anything_is_recorded(sqlite_url, executor, ref, message):
    store = Store(sqlite_url)
    run_study(parse_spec(synthetic_spec("producer", seeds=[0])), store, executor)
    spec = parse_spec({"study": "consumer", "experiment": "experiments.synthetic:run",
                       "fixed": {"load_artifact": ref},
                       "factors": {"x": {"levels": [1, 2]}}, "response": {"metric": "loss"}})
    with pytest.raises(WavesweepError, match=f"fixed.load_artifact: .*{message}"):
        run_study(spec, store, executor)
    assert store.study_names() == ["producer"]


@pytest.mark.parametrize("warm_reuse", [True, False])
def test_worker_processes_are_reused_only_when_allowed(sqlite_url, executor, warm_reuse):
    spec = synthetic_spec("pids", seeds=[0, 1], resources={"cpus_per_run": 1, "warm_reuse": warm_reuse,
                                                            "max_runs_per_worker": 3})
    spec["fixed"]["report_pid"] = True
    spec["strategy"] = {"mode": "grid", "runs_per_wave": 12}
    store = Store(sqlite_url)
    run_study(parse_spec(spec), store, executor)
    pids = [r["metric.pid"] for r in store.runs("pids")]
    assert len(pids) == 12
    if warm_reuse:
        # 2 CPU slots, at most 3 runs per process: at least 4 processes, and fewer than one per run.
        assert 4 <= len(set(pids)) < 12
        assert max(pids.count(p) for p in set(pids)) <= 3
    else:
        assert len(set(pids)) == 12
