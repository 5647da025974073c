"""Every example spec parses, imports its experiment and names only params its experiment declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import load_spec
from tests.conftest import REPO

SPECS = sorted((REPO / "experiments" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_example_spec_is_valid(path: Path):
    spec = load_spec(path)
    module = __import__(spec.experiment.split(":")[0], fromlist=["PARAMS"])
    declared = set(module.PARAMS)
    used = set(spec.fixed) | set(spec.factors)
    assert used <= declared, f"{path.name}: unknown params {sorted(used - declared)}"


def test_there_are_examples_for_fine_tuning_decoding_and_throughput():
    assert {"demo.yaml", "lora_sweep.yaml", "decoding_sweep.yaml", "throughput_sweep.yaml"} <= {p.name for p in SPECS}
