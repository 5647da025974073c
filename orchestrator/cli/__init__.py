"""`wavesweep` command line (Typer + Rich). Errors a user can act on print one message and exit with code 1.

This module holds the app, its consoles and options, and every command; the longer bodies live beside it, in
:mod:`orchestrator.cli.launch` (`run`) and :mod:`orchestrator.cli.status_text` (`status`). Each command imports what
it needs when it runs (so `wavesweep --version` loads no store or Ray) and hands them these consoles."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from orchestrator import __version__
from orchestrator.errors import WavesweepError
from orchestrator.reporting.tables import table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Run studies of LLM experiments as factorial waves on Ray, recorded in a SQL store.")
db_app = typer.Typer(no_args_is_help=True, help="Store maintenance.")
app.add_typer(db_app, name="db")
console = Console()
err_console = Console(stderr=True)

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="WAVESWEEP_STORE",
                 help="SQLAlchemy URL of the store; default sqlite:///wavesweep.db. Put a URL with a password in the "
                      "environment variable: a command line shows in every process list."),
]


# The values an option takes: Typer refuses any other with a usage error (exit 2) naming the option, the value and
# these choices, before anything runs.
class ReportFormat(StrEnum):
    table = "table"
    json = "json"


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class AnalyzeFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Method(StrEnum):
    auto = "auto"
    ols = "ols"
    fanova = "fanova"
    surface = "surface"


class Adjust(StrEnum):
    holm = "holm"
    fdr_bh = "fdr_bh"
    none = "none"


def _version(shown: bool) -> None:
    if shown:
        console.print(f"wavesweep {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    # Options of `wavesweep` itself; --version answers in its eager callback, before any command is parsed.
    return


def main() -> None:
    try:
        app()
    except WavesweepError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted. Finished runs are in the store; run the same command again to resume "
                          "(runs left RUNNING are requeued).", highlight=False, soft_wrap=True)
        sys.exit(130)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
    store: StoreOpt = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs to declare for a local Ray (logical ones are fine; an Apple "
                                                  "GPU, which Ray does not detect, is declared as 1).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        envvar="RAY_ADDRESS", help="Join this Ray cluster instead of starting one (ray job submit sets it).")] = None,
) -> None:
    """Run a study: design its waves, run them on Ray, record everything in the store. Resumes where it stopped.

    Exits 0 when the study has a COMPLETE run, 3 when it ended with none (every run failed), 1 on an error."""
    from orchestrator.cli.launch import launch

    if code := launch(spec_path, store, gpus, ray_address, console, err_console):
        raise typer.Exit(code)


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
    gpus: Annotated[int | None, typer.Option(help="GPUs (or CPU slots) the study will get; sizes the waves when "
                                                  "the spec has no runs_per_wave, and is the runs at once of the "
                                                  "wall-clock estimate (default: a wave's runs).")] = None,
    minutes_per_run: Annotated[float | None, typer.Option(help="Per-run estimate for the cost; default: the "
                                                               "median of the study's finished runs.")] = None,
    store: StoreOpt = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="table, or json for scripts.")] = ReportFormat.table,
) -> None:
    """The waves a study will run, which effects each prefix of waves can estimate, and what it will cost."""
    from orchestrator.reporting.plan import make_plan
    from orchestrator.spec import load_spec
    from orchestrator.strategies import wave_size

    spec = load_spec(spec_path, check_experiment=False)
    runs_per_wave = wave_size(spec, gpus)
    if runs_per_wave is None:
        raise WavesweepError("strategy.runs_per_wave is not in the spec: pass --gpus N, the GPUs (or CPU slots) the "
                             "study will run on")
    if minutes_per_run is None:
        minutes_per_run = _history_minutes(spec.study, store)
    result = make_plan(spec, runs_per_wave, minutes_per_run, slots=gpus)
    if format == ReportFormat.json:
        sys.stdout.write(json.dumps({"study": spec.study, **result.to_dict()}, indent=1, default=str) + "\n")
        return
    factors = list(spec.factors)
    for number, (cells, reason) in enumerate(zip(result.waves, result.reasons), start=1):
        rows = [(str(i), *[str(cell.levels[f]) for f in factors], str(cell.seed)) for i, cell in enumerate(cells, 1)]
        console.print(table(("#", *factors, "seed"), rows, title=f"Wave {number}: {len(cells)} runs ({reason})"))
    for step in result.estimability:
        console.print(f"After wave {step.after_wave} ({step.runs} runs): estimable: {', '.join(step.estimable)}",
                      highlight=False, soft_wrap=True, markup=False)
        for term, mixed in step.aliased.items():
            console.print(f"  not separable: {term} = combination of {', '.join(mixed) or 'nothing (constant)'}",
                          highlight=False, soft_wrap=True, markup=False)
    if result.adaptive:
        console.print(f"Mode {spec.strategy.mode}: later waves are chosen from this wave's results (at most "
                      f"{spec.strategy.max_waves or 6} waves of at most {result.runs_per_wave} runs); the cost below "
                      "is for the first wave.", highlight=False, soft_wrap=True, markup=False)
    console.print(result.size_text(), highlight=False, markup=False)
    console.print(result.cost_text(), highlight=False, soft_wrap=True, markup=False)


def _history_minutes(study: str, store: str | None) -> float | None:
    from orchestrator.reporting.plan import median_minutes
    from orchestrator.store import Store

    try:
        db = Store(store, writer=False)
    except WavesweepError:
        return None  # no store yet: no history
    return median_minutes(db.runs(study)) if db.study_id(study) is not None else None


@app.command()
def status(study: Annotated[str | None, typer.Argument(help="A study; all studies when omitted.")] = None,
           store: StoreOpt = None,
           format: Annotated[ReportFormat, typer.Option("--format", help="table, or json for scripts.")]
           = ReportFormat.table) -> None:
    """Runs by status, waves (each with its reason), why the study stopped, and its best cells (or a line per
    study)."""
    from orchestrator.cli.status_text import print_studies, print_study
    from orchestrator.reporting.study_report import studies_status, study_status
    from orchestrator.store import Store

    db = Store(store, writer=False)
    if format == ReportFormat.json:
        from datetime import UTC, datetime

        report = studies_status(db) if study is None else study_status(db, study, datetime.now(UTC))
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
    elif study is None:
        print_studies(console, db)
    else:
        print_study(console, db, study)


@app.command()
def export(study: Annotated[str, typer.Argument(help="The study to export.")],
           format: Annotated[ExportFormat, typer.Option("--format", help="csv or json")] = ExportFormat.csv,
           output: Annotated[Path | None, typer.Option("--output", "-o", help="File; default stdout.")] = None,
           store: StoreOpt = None) -> None:
    """One row per run: its levels and fixed params, status, metrics, timings, error (reporting/export.py)."""
    from orchestrator.reporting.export import export_rows, to_csv, to_json
    from orchestrator.reporting.report import recorded_spec
    from orchestrator.store import Store

    db = Store(store, writer=False)
    rows = export_rows(db.runs(study), recorded_spec(db, study).get("fixed") or {})
    text = to_csv(rows) if format == ExportFormat.csv else to_json(rows)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err_console.print(f"wrote {len(rows)} runs to {output}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def analyze(
    study: Annotated[str | None, typer.Argument(help="A study in the store (or --csv, or --optuna-storage).")] = None,
    store: StoreOpt = None,
    csv: Annotated[Path | None, typer.Option(help="Analyse runs from a CSV file instead (one row per run).")] = None,
    optuna_storage: Annotated[str | None, typer.Option(
        help="Analyse an Optuna study instead: its storage URL (with --optuna-study).")] = None,
    optuna_study: Annotated[str | None, typer.Option(help="With --optuna-storage: the study name.")] = None,
    response: Annotated[str | None, typer.Option(
        help="With --csv: the response column. With Optuna: the objective's name or index (multi-objective).")] = None,
    factors: Annotated[str | None, typer.Option(help="With --csv: factor columns, comma-separated.")] = None,
    log: Annotated[str, typer.Option(help="With --csv: factors on a log scale, comma-separated.")] = "",
    goal: Annotated[str | None, typer.Option(
        help="With --csv: minimize or maximize the response (reparametrisation hints need it; default minimize).")] = None,
    method: Annotated[Method, typer.Option(
        help="ols (designed runs: effects with CIs; in a study with proposed waves, the designed waves' runs only), "
             "fanova (undesigned runs: variance shares with bootstrap CIs and permutation noise floors; every run), "
             "surface (a second-order response surface by OLS over every run, designed or proposed: main effects, "
             "quadratics, two-factor interactions with CIs that assume that model) or auto")] = Method.auto,
    format: Annotated[AnalyzeFormat, typer.Option("--format", help="table, json or csv")] = AnalyzeFormat.table,
    adjust: Annotated[Adjust, typer.Option(help="ols, surface: p-value adjustment, holm, fdr_bh or none")] = Adjust.holm,
    alpha: Annotated[float, typer.Option(help="Significance level and 1 - CI level.")] = 0.05,
    seed: Annotated[int, typer.Option(help="fanova: seed of the forests, bootstrap and permutations.")] = 0,
    detect: Annotated[float | None, typer.Option(
        help="ols: also print the runs needed to detect this coded effect with 80% power.")] = None,
) -> None:
    """Effects and interactions with CIs (designed runs) or a variance decomposition (undesigned runs)."""
    from orchestrator.reporting.analyze import analyze as run_analysis
    from orchestrator.reporting.analyze import load_runs

    runs = load_runs(study=study, store=store, csv=csv, response=response, factors=factors, log=log,
                     optuna_storage=optuna_storage, optuna_study=optuna_study, goal=goal)
    run_analysis(runs, method.value, fmt=format.value, adjust=adjust.value, alpha=alpha, seed=seed, console=console,
                 detect=detect)


@app.command()
def dashboard(
    store: StoreOpt = None,
    address: Annotated[str, typer.Option(help="Address to serve on; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
) -> None:
    """Serve the dashboard (Streamlit): studies, waves, runs, effects, interactions, decisions. Read-only; safe to
    open while a study runs."""
    import os

    import dashboard as package
    from orchestrator.extras import require
    from orchestrator.store.engine import mask, resolve_url

    require("dashboard")
    url = resolve_url(store)
    app_path = Path(package.__file__).parent / "app.py"
    console.print(f"Dashboard of {mask(url)} at http://{address}:{port} (Ctrl-C stops it).", highlight=False,
                  soft_wrap=True, markup=False)
    # The URL goes by environment, not argv: a password in it would show in every process list.
    env = {**os.environ, "WAVESWEEP_STORE": url}
    command = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", address,
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    sys.stdout.flush()
    # Streamlit takes this process over: signals (Ctrl-C, a service manager's SIGTERM) reach the server itself.
    os.execve(sys.executable, command, env)


@app.command()
def models(rank: Annotated[int, typer.Option(min=1, help="LoRA rank for the trainable counts.")] = 16) -> None:
    """The released Qwen3.5 sizes: parameters, LoRA trainable parameters per target preset, and the memory estimate
    per method that resources.gpus_per_run: auto packs by. Counted on the meta device: nothing is downloaded."""
    from orchestrator.extras import require
    from orchestrator.sizing import memory_gb

    require("qwen")
    from experiments.qwen35.counts import released_counts

    for row in released_counts(rank):
        lora = "; ".join(f"{preset} {count:,}" for preset, count in row.lora.items())
        console.print(f"{row.model}: {row.params:,} parameters (language model)\n"
                      f"  LoRA rank {rank} trainable: {lora}\n"
                      f"  memory estimate: LoRA {memory_gb(row.model, 'lora'):.1f} GB, "
                      f"full {memory_gb(row.model, 'full'):.1f} GB", highlight=False, soft_wrap=True, markup=False)


@db_app.command("upgrade")
def db_upgrade(store: StoreOpt = None) -> None:
    """Bring the store's schema to this wavesweep's version (back the database up first)."""
    from orchestrator.store.engine import make_engine, mask, resolve_url, upgrade

    url = resolve_url(store)
    upgrade(make_engine(url))
    console.print(f"{mask(url)} is at the current schema.", highlight=False, soft_wrap=True, markup=False)

