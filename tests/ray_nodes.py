"""Local Ray nodes started as a cluster's are (`ray start`), for tests that join one with `--ray-address`, as a
study under `ray job submit` does. One head per test module: a `wavesweep run` that joins it skips starting and
stopping a Ray of its own (seconds per run on 2 cores)."""

from __future__ import annotations

import contextlib
import os
import secrets
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

RAY = Path(sys.executable).parent / "ray"

# `ray start` (2.5x) turns token authentication on; clients must opt in (RAY_AUTH_MODE=token) and send the token.
# The tests write a token of their own (RAY_AUTH_TOKEN_PATH), so nothing depends on ~/.ray of the machine.
_TOKEN_DIR = tempfile.mkdtemp(prefix="ray-token-", dir="/tmp")
_TOKEN = Path(_TOKEN_DIR) / "token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_TOKEN)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(address: str, nodes: int = 1, timeout: float = 120) -> None:
    """Poll until the GCS at ``address`` answers with ``nodes`` nodes alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run([str(RAY), "status", f"--address={address}"], capture_output=True, text=True,
                               env={**os.environ, **AUTH}, check=False)
        if probe.returncode == 0 and probe.stdout.count("node_") >= nodes:
            return
        time.sleep(1)
    pytest.fail(f"{nodes} Ray node(s) at {address} did not come up in {timeout:.0f} s: "
                f"{probe.stdout[-1500:]}{probe.stderr[-1500:]}")


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


@contextlib.contextmanager
def ray_head(*options: str) -> Iterator[str]:
    """A head node on a port of its own (Redis holds 6379 on our machines), with ``options`` such as
    ``--num-gpus=4``; yields its address."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp_dir}", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **AUTH},
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_for(address)
        assert head.poll() is None, f"ray start exited with {head.returncode}"
        yield address
    finally:
        stop_ray(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
