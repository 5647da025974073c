"""Artifacts on a cluster of two nodes (#13.13): an object-store URI (here file://) carries a run's outputs to a
`store:` reference on any node, and a path some node cannot see is refused before launch. On the same two nodes
(starting them is what costs): each node gets an inbox of its own for its workers' reports (#16).

Two local Ray nodes on one machine share its disk, so the second node runs in a private mount namespace with an
empty tmpfs over one directory: that directory is node-local to the head, as a local disk on a real cluster is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, synthetic_spec, write_spec
from tests.ray_nodes import AUTH, RAY, free_port, stop_ray, wait_for
from tests.test_cli import export_rows, wavesweep

pytestmark = pytest.mark.slow


def _can_unshare() -> bool:
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                           check=False) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.fixture(scope="module")
def two_nodes():
    """A head (1 CPU) and a worker node (1 CPU); the worker has a private empty tmpfs over ``<root>/local`` when the
    machine allows mount namespaces. Yields (address, root, isolated)."""
    root = Path(tempfile.mkdtemp(prefix="ws-art-", dir="/tmp"))
    (root / "local").mkdir()
    port = free_port()
    env = {**os.environ, **AUTH}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    head_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--include-dashboard=false",
                             f"--temp-dir={head_tmp}", *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    address = f"127.0.0.1:{port}"
    isolated = _can_unshare()
    join = [str(RAY), "start", "--block", f"--address={address}", *common]
    if isolated:
        join = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"mount -t tmpfs tmpfs {root / 'local'} && exec \"$@\"", "sh", *join]
    worker = None
    try:
        wait_for(address, 1)
        worker = subprocess.Popen(join, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                  env=env)
        wait_for(address, 2)
        yield address, root, isolated
    finally:
        for process in (worker, head):
            if process is not None:
                stop_ray(process)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_uri_carries_the_best_adapter_to_a_reference_on_any_node(tmp_path, two_nodes):
    address, root, _ = two_nodes
    uri = f"file://{root / 'bucket'}"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    producer = synthetic_spec("producer", artifacts=uri, seeds=[0])
    producer["fixed"].update(save_artifact=True, report_node=True, sleep_s=1.0)
    out = wavesweep("run", str(write_spec(tmp_path / "p.yaml", producer)), "--store", url, "--ray-address", address,
                    env=AUTH)
    assert out.returncode == 0, out.stderr
    made = export_rows(url, "producer")
    assert {float(r["metric.node"]) for r in made} == {0.0, 1.0}  # runs on both nodes
    for r in made:
        assert r["artifact_dir"] == f"{uri}/producer/{r['cell_key']}"
        assert (root / "bucket" / "producer" / r["cell_key"] / "value.json").is_file()
    best = min(made, key=lambda r: float(r["metric.loss"]))

    consumer = {"study": "consumer", "experiment": "experiments.synthetic:run",
                "fixed": {"load_artifact": "store:producer:best", "report_node": True, "sleep_s": 1.0},
                "factors": {"x": {"levels": [1, 2]}, "y": {"levels": [1, 2]}},
                "response": {"metric": "loss"}, "strategy": {"mode": "grid", "runs_per_wave": 4},
                "resources": {"cpus_per_run": 1}}
    out = wavesweep("run", str(write_spec(tmp_path / "c.yaml", consumer)), "--store", url, "--ray-address", address,
                    env=AUTH)
    assert out.returncode == 0, out.stderr
    used = export_rows(url, "consumer")
    assert {r["status"] for r in used} == {"COMPLETE"}
    assert {float(r["metric.node"]) for r in used} == {0.0, 1.0}
    assert all(float(r["metric.loaded"]) == pytest.approx(float(best["metric.loss"])) for r in used)


def test_a_path_one_node_cannot_see_is_refused_before_launch(tmp_path, two_nodes):
    address, root, isolated = two_nodes
    if not isolated:
        pytest.skip("needs a private mount namespace (unshare --mount: root or CAP_SYS_ADMIN) to make a directory "
                    "node-local on a one-machine cluster")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec = synthetic_spec("local", artifacts=str(root / "local" / "art"))
    out = wavesweep("run", str(write_spec(tmp_path / "l.yaml", spec)), "--store", url, "--ray-address", address,
                    env=AUTH)
    assert out.returncode == 1
    said = " ".join(out.stderr.split())
    assert f"artifacts: '{root / 'local' / 'art'}' is not visible on 1 of 2 node(s)" in said, out.stderr
    assert "object-store URI (artifacts: s3://bucket/prefix" in said
    assert not (tmp_path / "store.db").exists()  # refused before the store was created
    shared = synthetic_spec("shared", artifacts=str(root / "shared-art"))
    out = wavesweep("run", str(write_spec(tmp_path / "s.yaml", shared)), "--store", url, "--ray-address", address,
                    env=AUTH)
    assert out.returncode == 0, out.stderr  # a directory both nodes see is fine


_INBOXES = """
import json, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from orchestrator.execution.ray_tasks import Inboxes, pick

@ray.remote(num_cpus=0)
def send(handles, key):
    inbox = pick(handles)
    ray.get(inbox.put.remote(key, 1, [("progress", (1, {"loss": 1.0}))]))
    return ray.get_runtime_context().get_node_id(), ray.get(inbox.node.remote())

ray.init(address=sys.argv[1], log_to_driver=False)
inboxes = Inboxes()
handles = inboxes.handles()
placed = {node: ray.get(inbox.node.remote()) for node, inbox in handles.items()}
sent = ray.get([send.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(handles, "k-" + node) for node in handles])
batches, _ = inboxes.drain()
again = inboxes.drain()
inboxes.close()
print(json.dumps({"placed": placed, "sent": sent, "keys": sorted(k for k, _, _ in batches),
                  "again": [len(again[0]), len(again[1])]}))
"""


def test_each_node_gets_an_inbox_of_its_own_and_a_worker_reports_to_its_nodes(two_nodes):
    # The same two nodes (the fixture is this module's): the driver gives every node an inbox actor, pinned to it
    # (ray_tasks.Inboxes), so no one actor carries every worker's batches; a task uses its own node's. In a process
    # of its own, as a driver is (Ray's connection state is per process).
    address, _, _ = two_nodes
    out = subprocess.run([sys.executable, "-c", _INBOXES, address], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **AUTH}, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    nodes = sorted(got["placed"])
    assert len(nodes) == 2 and all(node == inbox for node, inbox in got["placed"].items())
    assert sorted(worker for worker, _ in got["sent"]) == nodes
    assert all(worker == inbox for worker, inbox in got["sent"])  # each worker reported to its own node's inbox
    assert got["keys"] == sorted(f"k-{node}" for node in nodes) and got["again"] == [0, 0]
