"""A study submitted with `ray job submit`, exactly as cluster/README.md says, to a Ray head with 16 logical GPUs.

The head runs the job server (the dashboard), like a cluster's head node: started from the venv (so a job's shell
finds `wavesweep` on PATH, as on a node where setup installed it) with WAVESWEEP_STORE in its environment (as
cluster/ray-cluster.yaml and rayjob.yaml set it on the head). Token authentication is on, with a token of the test's
own (RAY_AUTH_TOKEN_PATH), so nothing depends on ~/.ray. Every port is a free one (Redis holds 6379 on our machines),
the temp dir is short (Ray's socket paths must fit in 107 bytes), and the head is stopped by its process group,
never with `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.store import Store
from tests.conftest import REPO, write_spec
from tests.test_cli import export_rows

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
README = REPO / "cluster" / "README.md"
README_ADDRESS = "http://127.0.0.1:8265"
SMOKE = "cluster/smoke.yaml"
BAD_MESSAGE = "factors.y.levels[1]: must be > 0 for scale log; got -0.001"


def readme_commands() -> list[list[str]]:
    """The commands of the ```bash blocks of cluster/README.md, split as the shell would (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    # A trailing backslash continues a command on the next line, as in the shell.
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def readme_submit(spec: str) -> list[str]:
    """README's `ray job submit` of ``spec``."""
    found = [c for c in readme_commands() if c[:3] == ["ray", "job", "submit"] and c[-1] == spec]
    assert len(found) == 1, f"cluster/README.md has {len(found)} `ray job submit ... {spec}` commands"
    return found[0]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Head:
    """A running `ray start --head --block` and how to talk to its job server."""

    def __init__(self, address: str, client_env: dict[str, str]):
        self.address = address  # http://127.0.0.1:<dashboard port>
        self.client_env = client_env

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], cwd=REPO, env=self.client_env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def submit(self, spec: str) -> tuple[subprocess.CompletedProcess, str]:
        """README's submit command for the smoke spec, with this head's address and ``spec``; returns (result,
        job id). It waits for the job and streams its log, as a user sees it."""
        command = readme_submit(SMOKE)
        command[command.index("--address") + 1] = self.address
        command[-1] = spec
        # `ray` is the venv's, as with the venv activated; the client's cwd is the repo root (--working-dir .).
        out = subprocess.run([RAY, *command[1:]], cwd=REPO, env=self.client_env, capture_output=True, text=True,
                             timeout=420, check=False)
        match = re.search(r"Job '(raysubmit_\w+)' submitted successfully", out.stdout + out.stderr)
        assert match, f"no job id in the output of {shlex.join(command)}:\n{out.stdout}\n{out.stderr}"
        return out, match.group(1)

    def status(self, job: str) -> str:
        out = self.ray("job", "status", "--address", self.address, job)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr

    def logs(self, job: str) -> str:
        out = self.ray("job", "logs", "--address", self.address, job)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def job_list(self) -> str:
        out = self.ray("job", "list", "--address", self.address)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr


@contextlib.contextmanager
def ray_head(store_url: str) -> Iterator[Head]:
    """A head with 16 logical GPUs, 2 CPUs and the job server; WAVESWEEP_STORE=store_url in its environment."""
    port, dashboard, agent, client = free_ports(4)
    temp_dir = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
    token = Path(temp_dir) / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WAVESWEEP_STORE", "RAY_AUTH_TOKEN")}
    head_env = {**base, **auth, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "WAVESWEEP_STORE": store_url}
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dashboard}",
             f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}", "--num-cpus=2",
             "--num-gpus=16", "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=head_env, cwd=temp_dir,
        )
    server = Head(f"http://127.0.0.1:{dashboard}", {**base, **auth, "COLUMNS": "250"})
    try:
        deadline = time.monotonic() + 180
        while True:  # poll until the job server answers
            probe = server.ray("job", "list", "--address", server.address)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray head did not serve jobs at {server.address} (exit code {head.poll()}):\n"
                            f"{log_path.read_text()[-3000:]}\n{probe.stderr[-2000:]}")
            time.sleep(2)
        yield server
    finally:
        # SIGTERM to `ray start --block` alone: it stops its own processes in seconds. (SIGTERM to the whole group
        # reaches the GCS too, which then lingers for 30-60 s.)
        head.terminate()
        deadline = time.monotonic() + 60
        # Wait without reaping: while `ray start` is an unreaped zombie, its process group id is still ours.
        while time.monotonic() < deadline and not os.waitid(os.P_PID, head.pid,
                                                             os.WEXITED | os.WNOHANG | os.WNOWAIT):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of this head's process group outlived it
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def check_smoke_study(store_url: str) -> None:
    rows = export_rows(store_url, "cluster-smoke")
    assert len(rows) == 16 and {r["status"] for r in rows} == {"COMPLETE"}
    assert {r["wave"] for r in rows} == {"1"}  # runs_per_wave from the cluster: 16 GPUs / 1 GPU per run
    devices = {r["device"] for r in rows}
    assert devices <= {f"cuda:{i}" for i in range(16)} and len(devices) > 1, devices
    assert {r["host"] for r in rows} == {socket.gethostname()}
    assert all(float(r["metric.gpu_s"]) == pytest.approx(float(r["wall_s"])) for r in rows)


def test_readme_submit_command_is_the_one_these_tests_run():
    command = readme_submit(SMOKE)
    assert command[:5] == ["ray", "job", "submit", "--address", README_ADDRESS]
    options = command[5:command.index("--")]
    assert options == ["--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml"]
    assert command[command.index("--") + 1:] == ["wavesweep", "run", SMOKE]
    # The study submit of the README differs only in its spec.
    study = readme_submit("experiments/specs/lora_sweep.yaml")
    assert study[:-1] == command[:-1]


@pytest.fixture(scope="module")
def sqlite_head(tmp_path_factory):
    """One head for the SQLite tests (a head costs seconds to start); yields (head, the store's file)."""
    db = tmp_path_factory.mktemp("submit") / "store.db"
    with ray_head(f"sqlite:///{db}") as head:  # absolute: the job's working dir is a temporary copy
        yield head, db


def test_bad_spec_fails_the_job_with_the_field_and_writes_nothing(tmp_path, sqlite_head):
    spec = yaml.safe_load((REPO / SMOKE).read_text())
    spec["study"] = "cluster-smoke-bad"
    spec["factors"]["y"] = {"levels": [0.1, -0.001], "scale": "log"}
    # An absolute path outside the uploaded working dir: the job runs on this machine, so it reads it there.
    bad = write_spec(tmp_path / "bad.yaml", spec)
    head, db = sqlite_head
    existed = db.exists()  # the other test of this head may have run first
    out, job = head.submit(str(bad))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Job '{job}' failed" in out.stderr + out.stdout
    status = head.status(job)
    assert f"Job '{job}' failed" in status and "failed with exit code 1" in status
    logs = head.logs(job)
    assert BAD_MESSAGE in logs
    assert "Traceback" not in logs
    assert db.exists() == existed
    if existed:
        reader = Store(f"sqlite:///{db}")
        assert "cluster-smoke-bad" not in reader.study_names()
        reader.close()


def test_submitted_study_runs_one_run_per_gpu_of_the_cluster(tmp_path, sqlite_head):
    head, db = sqlite_head
    # As cluster/README.md says: a client needs RAY_AUTH_MODE=token and the cluster's own token.
    no_mode = {k: v for k, v in head.client_env.items() if k != "RAY_AUTH_MODE"}
    other_token = tmp_path / "other_token"
    other_token.write_text(secrets.token_hex(32))
    for env, answer in ((no_mode, "Authentication required"), ({**head.client_env, "RAY_AUTH_TOKEN_PATH":
                                                                str(other_token)}, "Forbidden")):
        refused = subprocess.run([RAY, "job", "list", "--address", head.address], env=env, capture_output=True,
                                 text=True, timeout=60, check=False)
        assert refused.returncode == 1 and answer in refused.stderr, refused.stderr[-2000:]
    out, job = head.submit(SMOKE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Job '{job}' succeeded" in out.stderr + out.stdout
    assert f"Job '{job}' succeeded" in head.status(job)  # `ray job status` prints SUCCEEDED so
    logs = head.logs(job)
    assert "Ran 16 runs (16 per wave, mode grid)." in logs
    assert "Results: sqlite:///" in logs
    assert str(db.parent) not in head.job_list()  # the store was never part of the job
    check_smoke_study(f"sqlite:///{db}")


@pytest.mark.postgres
def test_submitted_study_writes_a_postgresql_store_named_only_on_the_head(pg_url):
    with ray_head(pg_url) as head:
        out, job = head.submit(SMOKE)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "Ran 16 runs (16 per wave, mode grid)." in head.logs(job)
        database = pg_url.rpartition("/")[2]
        assert database not in head.job_list()  # neither entrypoint nor runtime env carries the URL
    check_smoke_study(pg_url)
