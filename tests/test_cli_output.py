"""What the CLI prints where a user reads it: names with brackets (Rich markup), at 80 columns and in a pipe, as
JSON, and for options given a value they do not take. No Ray: the store is filled through the Store API.

The study ``brackets``: learning_rate (log) x batch_size x opt (sgd, adam, adamw: the terms opt[adam] and
opt[adamw], which Rich read as markup and printed as two rows called "opt"), 2 seeds, one wave of 24 runs whose last
run FAILED with a bracketed error. Its reason is longer than 80 columns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.cells import make_cell
from orchestrator.run_record import RunStatus
from tests.conftest import REPO, record_wave, synthetic_spec, write_spec

REASON = ("full factorial of learning_rate, batch_size and opt[sgd|adam|adamw], block 1 of 1: every cell twice, "
          "to measure the noise")
ERROR = "RuntimeError: worker [rank0] lost its peer"
TERMS = ("opt[adam]", "opt[adamw]", "learning_rate:batch_size", "learning_rate:opt[adamw]")


def fill(url: str) -> None:
    spec = synthetic_spec("brackets", seeds=[0, 1], strategy={"mode": "grid", "runs_per_wave": 24})
    spec["factors"] = {"learning_rate": {"levels": [0.0001, 0.001], "scale": "log"},
                       "batch_size": {"levels": [16, 32]}, "opt": {"levels": ["sgd", "adam", "adamw"]}}
    cells = [make_cell("brackets", {"learning_rate": lr, "batch_size": bs, "opt": opt}, seed) for seed in (0, 1)
             for lr in (0.0001, 0.001) for bs in (16, 32) for opt in ("sgd", "adam", "adamw")]

    def result(i: int, cell) -> tuple[RunStatus, dict, str | None]:
        if i == len(cells) - 1:
            return RunStatus.FAILED, {}, ERROR
        levels = cell.levels
        loss = ((1 if levels["learning_rate"] > 0.0005 else -1) + 0.5 * (1 if levels["batch_size"] == 32 else -1)
                + {"sgd": 0.0, "adam": -1.0, "adamw": -1.2}[levels["opt"]] + 0.01 * (i % 5) - 0.02 * cell.seed)
        return RunStatus.COMPLETE, {"loss": loss}, None

    record_wave(url, spec, cells, REASON, "every cell of the full factorial is recorded", result)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('brackets') / 'store.db'}"
    fill(url)
    return url


@pytest.fixture
def width(monkeypatch):
    """The CLI's consoles at a given width (in a pipe Rich takes 80 columns, or $COLUMNS)."""

    def set_width(columns: int) -> None:
        monkeypatch.setattr(cli, "console", Console(width=columns))
        monkeypatch.setattr(cli, "err_console", Console(width=columns, stderr=True))

    return set_width


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.app, list(args), env=env)


def words(text: str) -> str:
    return " ".join(text.split())


# --- 1. names with brackets ------------------------------------------------------------------------------------------

def test_analyze_prints_every_term_whole_at_80_columns(url, width):
    width(80)
    fit = json.loads(invoke("analyze", "brackets", "--store", url, "--format", "json").stdout)
    out = invoke("analyze", "brackets", "--store", url)
    assert out.exit_code == 0, out.output
    # Each term on a line of its own, whole: not "opt" twice, not "learning_r…".
    names = [line.split("│")[1].strip() for line in out.stdout.splitlines() if line.startswith("│")]
    assert [t["term"] for t in fit["terms"]] == [n for n in names if n][:len(fit["terms"])]
    assert set(TERMS) <= set(names)
    assert "…" not in out.stdout
    # Every interval's numbers whole, each within a line of the CI column ("low to" and "high", or more lines at a
    # narrower width), none folded across lines.
    ci = [w for line in out.stdout.splitlines() if line.startswith("│") for w in line.split("│")[3].split()]
    for term in fit["terms"]:
        low, high = f"{term['ci_low']:+.3g}", f"{term['ci_high']:+.3g}"
        assert low in ci and high in ci, (term["term"], low, high)


def test_analyze_in_a_pipe_keeps_the_names(url):
    """The command as a user pipes it (`wavesweep analyze ... | less`): Rich takes 80 columns there."""
    out = subprocess.run([sys.executable, "-m", "orchestrator", "analyze", "brackets", "--store", url], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    for term in TERMS:
        assert re.search(rf"│ {re.escape(term)} +│", out.stdout), term
    assert "…" not in out.stdout


def test_plan_prints_bracketed_levels_and_terms(tmp_path, width):
    width(80)
    spec = synthetic_spec("targets", seeds=[0], strategy={"mode": "grid", "runs_per_wave": 6})
    spec["factors"] = {"lora_targets": {"levels": ["qv", "all", "[q,v]"]}, "rank": {"levels": [8, 16]}}
    out = invoke("plan", str(write_spec(tmp_path / "targets.yaml", spec)), "--minutes-per-run", "2")
    assert out.exit_code == 0, out.output
    assert "lora_targets[all]" in out.stdout and "lora_targets[[q,v]]" in out.stdout
    cells = [line.split("│")[2].strip() for line in out.stdout.splitlines() if line.startswith("│")]
    assert sorted(cells) == sorted(["qv", "all", "[q,v]"] * 2)


def test_errors_keep_their_brackets(url, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["wavesweep", "status", "opt[sgd]", "--store", url])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    assert "study 'opt[sgd]' is not in" in capsys.readouterr().err


# --- 2. never cut names; fold long text ------------------------------------------------------------------------------

def test_status_at_80_columns_lists_the_waves_whole(url, width):
    width(80)
    out = invoke("status", "brackets", "--store", url)
    assert out.exit_code == 0, out.output
    assert "Wave 1, designed: 24 runs (23 COMPLETE, 1 FAILED), finished " in out.stdout
    assert REASON in words(out.stdout)  # wrapped at words, nothing cut or read as markup
    assert f"FAILED run 24 (exception, 1 attempts): {ERROR}" in words(out.stdout)
    assert "…" not in out.stdout
    # Not a table whose reason column is a word wide: the wave takes a few lines.
    assert len(out.stdout.splitlines()) < 30


def test_status_on_a_wide_console_is_a_table(url, width):
    width(250)
    out = invoke("status", "brackets", "--store", url)
    row = next(line for line in out.stdout.splitlines() if re.match(r"\W*1\s*│", line))
    assert re.match(r"\W*1\s*│\s*designed\s*│\s*full factorial of learning_rate, batch_size and opt\[sgd\|adam\|adamw\]",
                    row)
    assert re.search(r"│\s*24\s*│\s*23 COMPLETE, 1 FAILED\s*│", row)


def test_the_study_list_keeps_names_and_folds_reasons(url, width):
    width(50)
    best = json.loads(invoke("status", "--store", url, "--format", "json").stdout)["studies"][0]["best"]["mean"]
    out = invoke("status", "--store", url)
    assert out.exit_code == 0, out.output
    rows = [line.split("│") for line in out.stdout.splitlines() if line.startswith("│")]
    assert [rows[0][1].strip(), rows[0][4].strip()] == ["brackets", f"loss={best:.4g}"]
    assert "…" not in out.stdout
    # Folded onto lines as narrow as the room left, every character kept.
    assert "".join("".join(row[-2].split()) for row in rows) == "everycellofthefullfactorialisrecorded"


# --- 7. --format json, choices, environment variables, --version ----------------------------------------------------

def test_status_as_json(url):
    out = invoke("status", "brackets", "--store", url, "--format", "json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["study"] == "brackets" and report["metric"] == "loss" and report["driver"] is None
    assert report["runs"] == {"total": 24, "by_status": {"COMPLETE": 23, "FAILED": 1}, "designed": 24, "proposed": 0}
    [wave] = report["waves"]
    assert wave["reason"] == REASON and wave["kind"] == "designed" and wave["by_status"] == {"COMPLETE": 23, "FAILED": 1}
    assert datetime.fromisoformat(wave["finished_at"]).tzinfo is not None
    assert report["stop_reason"] == "every cell of the full factorial is recorded"
    assert report["failed"] == [{"run_id": 24, "status": "FAILED", "error_kind": "exception", "attempts": 1,
                                 "error_message": ERROR}]
    best = report["best"][0]
    assert best["params"] == {"learning_rate": "0.0001", "batch_size": "16", "opt": "adamw"} and best["seeds"] == 2

    every = json.loads(invoke("status", "--store", url, "--format", "json").stdout)
    assert [s["study"] for s in every["studies"]] == ["brackets"]
    assert every["studies"][0]["runs"] == 24 and every["studies"][0]["best"]["metric"] == "loss"


def test_plan_as_json(tmp_path):
    spec = synthetic_spec("planned", seeds=[0], strategy={"mode": "grid", "runs_per_wave": 4})
    out = invoke("plan", str(write_spec(tmp_path / "planned.yaml", spec)), "--minutes-per-run", "3",
                 "--format", "json")
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert plan["study"] == "planned" and plan["mode"] == "grid" and plan["runs"] == 6
    assert [len(w["cells"]) for w in plan["waves"]] == [4, 2]
    assert plan["waves"][0]["cells"][0] == {"levels": {"x": 1, "y": 0.1}, "seed": 0}
    assert plan["estimability"][-1]["after_wave"] == 2 and "x:y" in plan["estimability"][-1]["estimable"]
    assert plan["minutes_per_run"] == 3 and plan["gpu_hours"] == pytest.approx(6 * 3 / 60)


@pytest.mark.parametrize(("args", "option", "value", "choices"), [
    (["analyze", "s", "--format", "xml"], "--format", "xml", ("table", "json", "csv")),
    (["analyze", "s", "--method", "anova"], "--method", "anova", ("auto", "ols", "fanova")),
    (["analyze", "s", "--adjust", "bonferroni"], "--adjust", "bonferroni", ("holm", "fdr_bh", "none")),
    (["status", "--format", "csv"], "--format", "csv", ("table", "json")),
    (["plan", "spec.yaml", "--format", "yaml"], "--format", "yaml", ("table", "json")),
    (["export", "s", "--format", "parquet"], "--format", "parquet", ("csv", "json")),
])
def test_an_option_outside_its_choices_is_a_usage_error(args, option, value, choices, width):
    width(200)
    out = invoke(*args)
    assert out.exit_code == 2, out.output
    message = words(out.stderr.replace("│", " "))
    assert f"Invalid value for '{option}'" in message and repr(value) in message
    assert ", ".join(map(repr, choices)) in message


def test_the_store_url_comes_from_its_environment_variable(url):
    out = invoke("status", "brackets", "--format", "json", env={"WAVESWEEP_STORE": url})
    assert out.exit_code == 0 and json.loads(out.stdout)["study"] == "brackets"
    # Rich wraps the help column to the terminal: read the words, not the panel's lines and borders.
    helped = lambda command: words(invoke(command, "--help").stdout.replace("│", " "))  # noqa: E731
    for command in ("run", "status", "plan", "export", "analyze", "dashboard"):
        assert "env var: WAVESWEEP_STORE" in helped(command), command
    assert "env var: RAY_ADDRESS" in helped("run")


def test_version():
    out = invoke("--version")
    assert out.exit_code == 0 and out.stdout.strip() == f"wavesweep {cli.__version__}"


def test_the_best_cells_table_keeps_every_number_whole_at_80_columns(url, width):
    """The demo's table in a pipe folded its numbers ("0.0006" over "72"); the verdict column now wraps at its
    space instead, and p-values stay within 7 characters."""
    width(80)
    out = invoke("status", "brackets", "--store", url)
    assert out.exit_code == 0, out.output
    table = out.stdout.split("Best cells by mean loss")[1].split("Best configuration:")[0]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in rows]
    firsts = [row for row in cells if row[0]]  # a row's first line: its levels, mean, std, n
    assert len(firsts) == 5
    for row in firsts:
        assert row[0] in ("0.0001", "0.001") and row[1] in ("16", "32") and row[2] in ("sgd", "adam", "adamw")
        float(row[3]), float(row[4])  # mean and std, each whole on its line
        assert row[5] == "2"
    verdicts = " ".join(" ".join(row[6] for row in cells).split())
    assert verdicts.startswith("best") and re.fullmatch(r"best( (tied|worse) p(=[0-9.]+|<0\.01))+", verdicts)
