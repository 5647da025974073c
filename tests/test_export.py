"""`wavesweep export` (issue #13): a row reproduces its run (fixed params too), numbers are whole in CSV and JSON,
each column appears once, flags are true/false, and `analyze --csv` reads the export as is.

No Ray: each run is the worker's own function (``run_cell``) in this process, recorded through the Store API as the
driver records it.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.cells import make_cell
from orchestrator.execution.worker import run_cell
from orchestrator.run_record import RunResult
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import synthetic_spec

# More digits than pandas' JSON writer kept (10).
LOSS = 0.12345678901234567
EXPERIMENT = textwrap.dedent(f"""
    def run(params, ctx):
        loss = {LOSS!r} + params["x"] - 2 * params["y"] + params["noise_sd"] * (ctx.seed - 0.5)
        return {{"loss": loss, "warm": ctx.seed == 1}}
""")


class WavePlan:
    def __init__(self, cells: list, design: str, reason: str):
        self.cells, self.design, self.reason = cells, design, reason


@pytest.fixture
def url(tmp_path, monkeypatch):
    (tmp_path / "flagged.py").write_text(EXPERIMENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = parse_spec(synthetic_spec("flags", experiment="flagged:run"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    sid = store.open_study(spec)
    cells = [make_cell("flags", {"x": x, "y": y}, seed) for seed in spec.run_seeds
             for x in spec.factors["x"].levels for y in spec.factors["y"].levels]
    store.add_wave(sid, WavePlan(cells, "full_factorial", "every cell"))
    for cell in cells:
        payload = {"experiment": spec.experiment, "params": {**spec.fixed, **cell.levels}, "cell_key": cell.key,
                   "seed": cell.seed, "response": "loss", "study": "flags", "num_cpus": 1,
                   "artifact_dir": str(tmp_path / cell.key), "warm_reuse": False, "gpus": 0.0}
        result = run_cell(payload, lambda kind, data: None)
        store.mark_running(cell.key, host=result["host"], device=result["device"], started_at=result["started_at"])
        store.finish_run(cell.key, RunResult(**result))
    store.finish_wave(sid, 1)
    store.close()
    return url


def export(url: str, fmt: str) -> str:
    out = CliRunner().invoke(cli.app, ["export", "flags", "--store", url, "--format", fmt])
    assert out.exit_code == 0, out.output
    return out.stdout


def test_a_json_row_reproduces_its_run_with_every_digit(url):
    rows = json.loads(export(url, "json"))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"COMPLETE"}
    fixed = synthetic_spec()["fixed"]
    for row in rows:
        assert row["fixed.surface"] == fixed["surface"] and row["fixed.noise_sd"] == fixed["noise_sd"]
        expected = LOSS + row["param.x"] - 2 * row["param.y"] + row["fixed.noise_sd"] * (row["seed"] - 0.5)
        assert row["metric.loss"] == expected  # exactly: no rounding on the way
        assert row["metric.warm"] is (row["seed"] == 1)
        assert "metric.wall_s" not in row and row["wall_s"] > 0
    assert list(rows[0])[:11] == ["run_id", "cell_key", "wave", "design", "seed", "status", "attempts", "backfill",
                                  "param.x", "param.y", "fixed.surface"]


def test_a_csv_row_has_each_column_once_and_flags_as_flags(url):
    text = export(url, "csv")
    header = next(csv.reader(io.StringIO(text)))
    assert len(header) == len(set(header)) and header.count("wall_s") == 1 and "metric.wall_s" not in header
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["metric.warm"] for r in rows} == {"True", "False"}
    assert json.loads(rows[0]["fixed.surface"]) == synthetic_spec()["fixed"]["surface"]
    json_rows = json.loads(export(url, "json"))
    assert [float(r["metric.loss"]) for r in rows] == [r["metric.loss"] for r in json_rows]


def test_analyze_reads_an_export_as_is_by_the_spec_names(url, tmp_path):
    path = tmp_path / "flags.csv"
    path.write_text(export(url, "csv"))
    out = CliRunner().invoke(cli.app, ["analyze", "--csv", str(path), "--response", "loss", "--factors", "x,y",
                                       "--format", "json"])
    assert out.exit_code == 0, out.output
    terms = {t["term"]: t for t in json.loads(out.stdout)["terms"]}
    # loss = x - 2y (+ seed noise): in coded units x spans [1, 2], y [0.1, 0.5].
    assert terms["x"]["estimate"] == pytest.approx(0.5, abs=0.06)
    assert terms["y"]["estimate"] == pytest.approx(-0.4, abs=0.06)
