"""Joining an existing Ray cluster (as under `ray job submit`), with logical GPUs declared on a CPU machine."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import synthetic_spec, write_spec
from tests.test_cli import export_rows, wavesweep

pytestmark = pytest.mark.slow
# `ray start` (2.5x) turns token authentication on; clients must opt in (RAY_AUTH_MODE=token) and send the token.
# The test writes a token of its own (RAY_AUTH_TOKEN_PATH), so nothing depends on ~/.ray of the machine.
_TOKEN_DIR = tempfile.mkdtemp(prefix="ray-token-", dir="/tmp")
_TOKEN = Path(_TOKEN_DIR) / "token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_TOKEN)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with 4 logical GPUs on a port of its own (Redis holds 6379 on our machines)."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=4", "--num-gpus=4",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **AUTH},
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # poll until the GCS answers
            probe = subprocess.run([str(ray), "status", f"--address={address}"], capture_output=True, text=True,
                                   env={**os.environ, **AUTH})
            if probe.returncode == 0 and "GPU" in probe.stdout:
                break
            assert head.poll() is None, f"ray start exited with {head.returncode}"
            time.sleep(1)
        else:
            pytest.fail(f"ray head at {address} did not come up in 90 s: {probe.stderr[-2000:]}")
        yield address
    finally:
        stop_ray(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_ray(process: subprocess.Popen) -> None:
    """Stop a `ray start --block` node: SIGTERM to it alone stops its own processes in seconds (SIGTERM to the whole
    group leaves the GCS lingering for a minute); then SIGKILL whatever of its group outlived it."""
    process.terminate()
    try:
        process.wait(timeout=60)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
