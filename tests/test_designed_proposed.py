"""Effects stay honest: a study whose designed waves are followed by a proposed one (a model's batch at scattered
points) is analysed by `wavesweep analyze`, shown by `wavesweep status` and by the dashboard, each saying which runs
an estimate used. The store is filled through the Store API, so every count is known exactly:

- wave 1, ``fractional_factorial``: the half fraction I = xyz of x, y, z in {-1, 1}, seeds 0 and 1 (8 runs);
- wave 2, ``fold_over``: the other half (8 runs), so waves 1-2 are the full 2^3 twice;
- wave 3, ``model``: 10 points drawn inside the box (values at no design level), one of them FAILED.

Designed runs follow loss = x + 2 z + 3 x y + noise; the model's runs sit 1.5 higher (another region of a real
surface), so a fit that took them in would move its estimates and count 26 runs, not 16.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from dashboard import data, effects
from dashboard.reader import open_readonly
from orchestrator.analysis import FactorInfo, fit_effects
from orchestrator.cells import make_cell
from orchestrator.reporting.report import span, wave_split
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import synthetic_spec
from tests.test_cli import wavesweep
from tests.test_dashboard import metrics, render, texts

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class WavePlan:
    """What ``Store.add_wave`` reads of a strategy's plan (orchestrator.strategies.base.WavePlan); kept here so the
    test does not depend on the strategies package, which the waves rework reshapes."""

    cells: list
    design: str
    reason: str
FACTORS = ("x", "y", "z")
NOTE = ("effects from the 16 runs of designed waves 1-2 (fractional_factorial, fold_over); 10 runs of proposed wave 3 "
        "(model) left out: they are not a design; `--method fanova` decomposes all 26")


def surface(x: float, y: float, z: float) -> float:
    return x + 2 * z + 3 * x * y


def finish(store: Store, cell, i: int, loss: float | None) -> None:
    start = T0 + timedelta(seconds=10 * i)
    store.mark_running(cell.key, host="node-1", device="cpu", started_at=start)
    status = RunStatus.COMPLETE if loss is not None else RunStatus.FAILED
    store.finish_run(cell.key, RunResult(status=status, metrics={"loss": loss, "wall_s": 5.0} if loss is not None
                                         else {}, started_at=start, finished_at=start + timedelta(seconds=5),
                                         wall_s=5.0, error_kind=None if loss is not None else "exception"))


def fill(url: str, study: str = "mixed") -> list[dict]:
    """The study of the module docstring; returns its rows (factors, loss, wave, status) as written."""
    rng = np.random.default_rng(7)
    spec = synthetic_spec(study, seeds=[0, 1], strategy={"mode": "waves", "runs_per_wave": 8})
    spec["factors"] = {f: {"levels": [-1, 1]} for f in FACTORS}
    store = Store(url)
    sid = store.open_study(parse_spec(spec))
    corners = [dict(zip(FACTORS, p)) for p in [(-1, -1, -1), (-1, -1, 1), (-1, 1, -1), (-1, 1, 1), (1, -1, -1),
                                                (1, -1, 1), (1, 1, -1), (1, 1, 1)]]
    halves = {1: [c for c in corners if c["x"] * c["y"] * c["z"] == 1],
              2: [c for c in corners if c["x"] * c["y"] * c["z"] == -1]}
    rows, i = [], 0
    for wave, (design, reason) in enumerate([("fractional_factorial", "2^(3-1) fraction I = xyz"),
                                             ("fold_over", "fold-over: separate x:y from z")], start=1):
        cells = [make_cell(study, levels, seed) for seed in (0, 1) for levels in halves[wave]]
        store.add_wave(sid, WavePlan(cells, design, reason))
        for cell in cells:
            loss = surface(**cell.levels) + rng.normal(0, 0.05)
            finish(store, cell, i, loss)
            rows.append({**cell.levels, "loss": loss, "wave": wave, "status": "COMPLETE"})
            i += 1
    points = [{f: round(float(v), 4) for f, v in zip(FACTORS, rng.uniform(-0.9, 0.9, 3))} for _ in range(10)]
    cells = [make_cell(study, levels, 0) for levels in points]
    store.add_wave(sid, WavePlan(cells, "model", "GP batch of 10 around the incumbent"))
    for n, cell in enumerate(cells):
        loss = None if n == 9 else surface(**cell.levels) + 1.5 + rng.normal(0, 0.05)
        finish(store, cell, i, loss)
        rows.append({**cell.levels, "loss": loss, "wave": 3, "status": "COMPLETE" if loss is not None else "FAILED"})
        i += 1
    store.close()
    return rows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'store.db'}"
    return url, pd.DataFrame(fill(url))


def fitted(frame: pd.DataFrame):
    infos = {f: FactorInfo((-1.0, 1.0), "linear", "numeric") for f in FACTORS}
    return fit_effects(frame, infos, "loss")


# --- the words -----------------------------------------------------------------------------------------------------

def test_the_split_in_words():
    assert [span([3]), span([1, 2]), span([4, 1, 3, 5])] == ["wave 3", "waves 1-2", "waves 1, 3-5"]
    split = wave_split({1: "fractional_factorial", 2: "fold_over", 3: "model", 4: "space_filling", 5: "replicates"},
                       [1] * 8 + [2] * 8 + [3] * 6 + [4] * 4 + [5] * 2)
    assert split.designed == [1, 2, 5] and split.proposed == [3, 4]
    assert (split.n_designed, split.n_proposed, split.n_all) == (18, 10, 28)
    assert split.used() == "the 18 runs of designed waves 1-2, 5 (fractional_factorial, fold_over, replicates)"
    assert split.left_out() == "10 runs of proposed waves 3-4 (model, space_filling) left out: they are not a design"
    assert not wave_split({1: "full_factorial", 2: None}, [1, 2]).has_proposals  # no design name: not a proposal


# --- wavesweep analyze ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_analyze_fits_effects_on_the_designed_runs_only(mixed):
    url, rows = mixed
    designed = fitted(rows[rows["wave"] <= 2])
    everything = fitted(rows)
    assert everything.n_runs == 26 and abs(everything.term("x").estimate - designed.term("x").estimate) > 0.01
    for method in ("auto", "ols"):  # auto keeps the effects fit: a waves study is run for it
        out = wavesweep("analyze", "mixed", "--store", url, "--method", method, "--format", "json")
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["method_used"] == "ols" and (result["n_runs"], result["n_used"]) == (16, 16)
        assert result["runs_used"] == {
            "runs": 16, "waves": [1, 2], "designs": ["fractional_factorial", "fold_over"],
            "left_out": {"runs": 10, "waves": [3], "designs": ["model"], "why": "not a design"}, "note": NOTE}
        estimates = {t["term"]: t["estimate"] for t in result["terms"]}
        assert estimates == pytest.approx({t.term: t.estimate for t in designed.terms}, abs=1e-9)
    table = wavesweep("analyze", "mixed", "--store", url)
    assert table.returncode == 0, table.stderr
    assert f"Runs: {NOTE}." in table.stdout and "16 of 16 runs used" in table.stdout
    csv = pd.read_csv(io.StringIO(wavesweep("analyze", "mixed", "--store", url, "--format", "csv").stdout))
    assert set(csv["runs_used"]) == {16} and set(csv["waves_used"]) == {"1 2"}


@pytest.mark.slow
def test_analyze_decomposes_every_run(mixed):
    url, _ = mixed
    out = wavesweep("analyze", "mixed", "--store", url, "--method", "fanova", "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["n_runs"], result["n_used"], result["excluded"]) == (26, 25, {"FAILED": 1})
    assert result["runs_used"] == {
        "runs": 26, "waves": [1, 2, 3], "designs": ["fractional_factorial", "fold_over", "model"], "left_out": None,
        "note": "decomposition of all 26 runs: 16 of designed waves 1-2 (fractional_factorial, fold_over), 10 of "
                "proposed wave 3 (model)"}


@pytest.mark.slow
def test_a_study_of_proposed_waves_only_has_no_effects_to_fit(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec = synthetic_spec("sampled", seeds=[0], strategy={"mode": "waves", "runs_per_wave": 12})
    spec["factors"] = {f: {"levels": [-1, 1]} for f in FACTORS}
    store = Store(url)
    sid = store.open_study(parse_spec(spec))
    rng = np.random.default_rng(3)
    cells = [make_cell("sampled", {f: float(v) for f, v in zip(FACTORS, rng.uniform(-1, 1, 3))}, 0) for _ in range(12)]
    store.add_wave(sid, WavePlan(cells, "space_filling", "Sobol sample of the box"))
    for i, cell in enumerate(cells):
        finish(store, cell, i, surface(**cell.levels))
    store.close()
    out = wavesweep("analyze", "sampled", "--store", url, "--method", "ols")
    assert out.returncode == 1
    assert ("--method ols: every wave of study sampled is proposed (wave 1: space_filling), not a design the effects "
            "fit may use; --method fanova decomposes all 12 runs") in out.stderr
    status = wavesweep("status", "sampled", "--store", url)
    assert "Runs: 0 in designed waves, 12 in proposed wave 1 (space_filling)." in status.stdout


# --- wavesweep status ----------------------------------------------------------------------------------------------

def row(output: str, wave: int) -> str:
    return next(line for line in output.splitlines() if re.match(rf"\W*{wave}\s*│", line))


@pytest.mark.slow
def test_status_marks_each_wave_and_counts_the_runs(mixed):
    url, _ = mixed
    out = wavesweep("status", "mixed", "--store", url)
    assert out.returncode == 0, out.stderr
    assert re.match(r"\W*1\s*│\s*designed\s*│\s*2\^\(3-1\) fraction", row(out.stdout, 1))
    assert re.match(r"\W*2\s*│\s*designed\s*│", row(out.stdout, 2))
    third = r"\W*3\s*│\s*proposed \(model\)\s*│\s*GP batch.*│\s*10\s*│\s*9 COMPLETE, 1 FAILED"
    assert re.match(third, row(out.stdout, 3))
    assert "Runs: 16 in designed waves 1-2, 10 in proposed wave 3 (model)." in out.stdout


# --- the dashboard -------------------------------------------------------------------------------------------------

def test_dashboard_effects_fit_the_designed_runs_and_the_decomposition_all(mixed):
    url, _ = mixed
    engine = open_readonly(url)
    study = data.load_study(engine, "mixed")
    engine.dispose()
    # The latest *designed* wave (2) defines the region: wave 3's scattered box would hold no designed corner.
    latest = effects.fit(study, "latest")
    assert (latest.result.n_runs, latest.result.n_used) == (16, 16)
    assert latest.described == (
        "runs inside wave 2's region (x in [-1, 1], y in [-1, 1], z in [-1, 1]): 16 of the 16 runs of designed waves "
        "1-2 (fractional_factorial, fold_over); 10 runs of proposed wave 3 (model) left out: they are not a design")
    every = effects.fit(study, "all")
    assert every.result.n_runs == 16 and every.described.startswith("the 16 runs of designed waves 1-2")
    surface = effects.surface_all(study)
    assert (surface.result.n_runs, surface.result.n_used) == (26, 25) and surface.error is None
    decomposition = effects.decompose_all(study)
    assert (decomposition.result.n_runs, decomposition.result.n_used) == (26, 25)
    assert decomposition.described.startswith("all 26 runs: 16 of designed waves 1-2")
    assert data.decisions(study)["kind"].tolist() == ["designed", "designed", "proposed (model)"]


@pytest.mark.slow
def test_dashboard_views_show_the_split(mixed, monkeypatch):
    url, _ = mixed
    at = render(url, monkeypatch, "Effects", "mixed")
    assert at.sidebar.radio(key="scope").value == "latest"
    assert metrics(at)["runs used"] == "16 of 16"
    assert "10 runs of proposed wave 3 (model) left out: they are not a design" in texts(at)
    assert "runs decomposed" not in metrics(at)  # seconds of forests only on demand
    assert metrics(at)["runs in the surface fit"] == "25 of 26"  # every run, the FAILED one excluded
    surface = next(df.value for df in at.dataframe if "x^2" in set(df.value["term"]))
    assert {"x", "x:y", "x:z", "y:z"} <= set(surface["term"])
    assert "Fitted: all 26 runs: 16 of designed waves 1-2" in texts(at)
    at.sidebar.radio(key="scope").set_value("all").run()
    assert metrics(at)["runs used"] == "16 of 16"
    assert "Fitted: the 16 runs of designed waves 1-2 (fractional_factorial, fold_over); 10 runs" in texts(at)
    at.toggle(key="fanova").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metrics(at)["runs decomposed"] == "25 of 26"
    table = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    assert set(table["term"]) == {"x", "y", "z", "x:y", "x:z", "y:z"}
    assert "Decomposed: all 26 runs: 16 of designed waves 1-2" in texts(at)

    at = render(url, monkeypatch, "Interactions", "mixed")  # the same fit: the model's points are not in the means
    assert "16 of the 16 runs of designed waves 1-2" in texts(at)
    assert at.dataframe[0].value.loc[lambda m: m["significant"], ["a", "b"]].values.tolist() == [["x", "y"]]

    at = render(url, monkeypatch, "Decisions", "mixed")
    lines = [m.value for m in at.markdown if m.value.startswith("**Wave ")]
    assert [":blue-badge[designed]" in line for line in lines] == [True, True, False]
    assert ":violet-badge[proposed by a model] (model, 10 runs)" in lines[2]
    assert at.dataframe[0].value["kind"].tolist() == ["designed", "designed", "proposed (model)"]
