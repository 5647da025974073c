"""`wavesweep run` refuses a run that no node can hold before it creates the store file (issue #13).

Without Ray: a stand-in for RayExecutor that starts nothing and reports a cluster of one node (1 GPU, 8 CPUs) where
Ray would report ``ray.nodes()``; the check itself is RayExecutor's own (``check_fits`` over ``nodes()``). With real
Ray the same path runs: the CLI checks right after Ray starts, before it opens a new store.
"""

from __future__ import annotations

import sys

import pytest

from orchestrator import cli
from orchestrator.execution import executor
from orchestrator.execution.packing import Node
from tests.conftest import synthetic_spec, write_spec


class OneNodeCluster(executor.RayExecutor):
    started = False

    def __enter__(self):
        OneNodeCluster.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def nodes(self) -> list[Node]:
        return [Node("node-1", 1.0, 8.0)]


GPUS = "resources.gpus_per_run: more GPUs than any node has (largest: 1 GPUs on node-1; a run cannot span nodes)"
CPUS = "resources.cpus_per_run: more CPUs than any node with the GPUs it asks for has (largest: 8 CPUs on node-1)"


@pytest.mark.parametrize(("resources", "message"), [
    ({"gpus_per_run": 2}, f"{GPUS}; got 2.0"),
    ({"gpus_per_run": 1, "cpus_per_run": 16}, f"{CPUS}; got 16.0"),
])
def test_a_run_larger_than_any_node_is_refused_before_the_store_file_exists(tmp_path, monkeypatch, capsys,
                                                                           resources, message):
    monkeypatch.setattr(executor, "RayExecutor", OneNodeCluster)
    db = tmp_path / "store.db"
    spec = write_spec(tmp_path / "big.yaml", synthetic_spec(resources=resources))
    monkeypatch.setattr(sys, "argv", ["wavesweep", "run", str(spec), "--store", f"sqlite:///{db}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    assert message in " ".join(capsys.readouterr().err.split())
    assert OneNodeCluster.started and not db.exists()
