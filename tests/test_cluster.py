"""Joining an existing Ray cluster (as under `ray job submit`), with logical GPUs declared on a CPU machine."""

from __future__ import annotations

import pytest

from tests.conftest import synthetic_spec, write_spec
from tests.ray_nodes import AUTH
from tests.ray_nodes import ray_head as start_head
from tests.test_cli import export_rows, wavesweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with 4 logical GPUs."""
    with start_head("--num-cpus=4", "--num-gpus=4") as address:
        yield address


def test_run_joins_a_cluster_and_places_one_run_per_gpu(tmp_path, ray_head):
    spec = synthetic_spec(strategy={"mode": "grid"}, resources={"gpus_per_run": 1, "cpus_per_run": 0.5})
    spec["fixed"]["sleep_s"] = 0.5
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = wavesweep("run", str(write_spec(tmp_path / "toy.yaml", spec)), "--store", url, "--ray-address", ray_head,
                    env=AUTH)
    assert out.returncode == 0, out.stderr
    assert "Ran 12 runs (4 per wave, mode grid)" in out.stdout  # runs_per_wave defaults to the cluster's 4 GPUs
    rows = export_rows(url, "toy")
    assert {r["device"] for r in rows} <= {f"cuda:{i}" for i in range(4)}
    assert len({r["device"] for r in rows}) > 1  # spread over the GPUs, one run per GPU
    assert all(float(r["metric.gpu_s"]) == pytest.approx(float(r["wall_s"])) for r in rows)


def test_gpus_flag_is_refused_when_joining_a_cluster(tmp_path, ray_head):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = wavesweep("run", str(write_spec(tmp_path / "toy.yaml", synthetic_spec())), "--store", url,
                    "--ray-address", ray_head, "--gpus", "2", env=AUTH)
    assert out.returncode == 1
    assert "--gpus declares GPUs of a local Ray; a cluster reports its own" in out.stderr
