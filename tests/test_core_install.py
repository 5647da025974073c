"""The core install holds no torch (#13.16): what it declares, what works without the extras, and the error each
missing extra gives (the pip command) before anything is started or written."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# The modules of the extras (and what they pull): blocked, the interpreter behaves as a core install.
EXTRA_MODULES = ("torch", "botorch", "gpytorch", "transformers", "peft", "datasets", "streamlit", "plotly",
                 "psycopg")


def core_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`wavesweep ARGS` in an interpreter where the extras' modules cannot be imported."""
    code = ("import sys\n"
            "class Core:  # refuses the extras' modules, as if they were not installed\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {EXTRA_MODULES!r}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Core())\n"
            f"sys.argv = ['wavesweep', *{list(args)!r}]\n"
            "from orchestrator.cli import main\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300,
                          check=False)


def test_core_dependencies_hold_no_torch_and_all_brings_every_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for heavy in ("torch", "botorch", "transformers", "peft", "datasets", "streamlit", "plotly", "psycopg"):
        assert heavy not in core, heavy
    extras = project["optional-dependencies"]
    assert extras["all"] == ["wavesweep[search,qwen,dashboard,postgres]"]
    assert any(d.startswith("torch") for d in extras["qwen"]) and extras["search"][0].startswith("botorch")
    # README command 1 and CI install everything.
    assert 'torch==2.13.0 -e ".[all]"' in (REPO / "README.md").read_text()
    assert '-e ".[all]"' in (REPO / ".ci" / "run").read_text()


def test_an_analyst_without_the_extras_analyzes_and_plans(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"a": a, "b": b, "y": 2 * a - b + a * b + rng.normal(0, 0.1)}
            for a in (-1, 1) for b in (-1, 1) for _ in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    out = core_cli("analyze", "--csv", "runs.csv", "--response", "y", "--factors", "a,b", "--format", "json",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"term": "a:b"' in out.stdout
    plan = core_cli("plan", str(REPO / "experiments" / "specs" / "demo.yaml"), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "Wave 1" in plan.stdout


def test_each_missing_extra_names_its_pip_command_before_anything_starts(tmp_path):
    qwen = core_cli("run", str(REPO / "experiments" / "specs" / "demo.yaml"), cwd=tmp_path)
    assert qwen.returncode == 1
    assert "torch comes with pip install 'wavesweep[qwen]'" in qwen.stderr, qwen.stderr
    spec = tmp_path / "waves.yaml"
    spec.write_text(SYNTHETIC_WAVES)
    out = core_cli("run", str(spec), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "pip install 'wavesweep[search]'" in out.stderr, out.stderr
    assert "mode waves proposes its model waves with a Gaussian process (BoTorch)" in out.stderr
    assert not (tmp_path / "wavesweep.db").exists()  # nothing written, and Ray never started
    dash = core_cli("dashboard", cwd=tmp_path)
    assert dash.returncode == 1 and "pip install 'wavesweep[dashboard]'" in dash.stderr, dash.stderr
    pg = core_cli("status", "--store", "postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path)
    assert pg.returncode == 1 and "pip install 'wavesweep[postgres]'" in pg.stderr, pg.stderr


SYNTHETIC_WAVES = """\
study: core-waves
experiment: experiments.synthetic:run
factors:
  a: {levels: [0.0, 1.0]}
  b: {levels: [0.0, 1.0]}
  c: {levels: [0.0, 1.0]}
response: {metric: loss, goal: minimize}
strategy: {mode: waves, runs_per_wave: 8, max_waves: 2}
"""
