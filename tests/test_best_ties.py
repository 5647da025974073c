"""`wavesweep status` names the cells that the noise cannot tell from the best (issue #13, point 3). No Ray: the
store is filled through the Store API, as in tests/test_cli_output.py.

The study ``ties``: opt (a, b, c, d, e, f) x 3 seeds, loss with SD ~0.001 per seed. a, b, c and d lie within 0.0015
of each other; e and f are clearly worse. A second study ``lone`` has one seed per cell.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.cells import make_cell
from orchestrator.run_record import RunStatus
from tests.conftest import record_wave, synthetic_spec
from tests.test_cli_output import invoke, words

MEANS = {"a": 1.000, "b": 1.0005, "c": 1.001, "d": 1.0015, "e": 1.01, "f": 1.10}
NOISE = (-0.001, 0.0, 0.001)  # per seed: SD 0.001


def fill(url: str, name: str, seeds: tuple[int, ...]) -> None:
    spec = synthetic_spec(name, seeds=list(seeds), strategy={"mode": "grid", "runs_per_wave": 6 * len(seeds)})
    spec["factors"] = {"opt": {"levels": list(MEANS)}}
    cells = [make_cell(name, {"opt": opt}, seed) for seed in seeds for opt in MEANS]
    record_wave(url, spec, cells, "every cell", "every cell is recorded",
                lambda i, cell: (RunStatus.COMPLETE, {"loss": MEANS[cell.levels["opt"]] + NOISE[cell.seed]}, None))


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('ties') / 'store.db'}"
    fill(url, "ties", (0, 1, 2))
    fill(url, "lone", (0,))
    return url


def test_status_names_the_cells_within_the_noise_of_the_best(url):
    out = invoke("status", "ties", "--store", url)
    assert out.exit_code == 0, out.output
    text = words(out.stdout)
    assert "Best configuration: opt=a" in text
    lines = out.stdout.splitlines()
    start = lines.index("Not distinguishable from it (3 cell(s)):")
    tied = lines[start + 1:start + 4]
    assert [line.split(" ")[2] for line in tied] == ["opt=b", "opt=c", "opt=d"]  # one cell a line, indented
    assert all(line.startswith("  opt=") and " p = " in line for line in tied)
    assert not lines[start + 4].startswith("  ")  # and no more: e and f are distinguishable
    assert "Rule: Welch t-test of each cell's mean against the best's over seeds, two-sided, p >= 0.05" in text
    rule = lines.index(next(line for line in lines if line.startswith("Rule: ")))
    assert all(len(line) <= 80 for line in lines[rule:rule + 3])  # folded at 80 columns, not one long line


def test_status_json_marks_each_cell_against_the_best(url):
    report = json.loads(invoke("status", "ties", "--store", url, "--format", "json").stdout)
    verdicts = {row["params"]["opt"]: row["vs_best"] for row in report["best"]}
    assert verdicts == {"a": "best", "b": "tied", "c": "tied", "d": "tied", "e": "worse"}
    assert report["best"][0]["p_vs_best"] is None and report["best"][4]["p_vs_best"] < 0.05
    assert "Welch" in report["best_tie_rule"]


def test_one_seed_per_cell_cannot_be_told(url):
    out = invoke("status", "lone", "--store", url)
    assert out.exit_code == 0, out.output
    text = words(out.stdout)
    assert "Best configuration: opt=a" in text
    assert "The best cell has one seed: which cells are within the noise of it cannot be told." in text
    assert "Not distinguishable" not in text
