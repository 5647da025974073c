"""`wavesweep` command line (Typer + Rich). Errors a user can act on print one message and exit with code 1."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from orchestrator import __version__
from orchestrator.errors import WavesweepError
from orchestrator.reporting.tables import fits, table

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
    from orchestrator.execution.driver import exit_code, has_work, run_study
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.extras import require
    from orchestrator.spec import load_spec
    from orchestrator.store import Store, is_new_file, resolve_url
    from orchestrator.strategies import STRATEGIES, create_strategy, wave_size

    spec = load_spec(spec_path)
    if ray_address is None:
        from orchestrator.execution.local_gpu import local_gpu

        gpu = local_gpu() if gpus or spec.resources.gpus_per_run == "auto" else None  # spares a nvidia-smi call
        spec = _local_gpu_memory(spec, gpu)
        if gpus and (warning := _declared_gpus_warning(gpus, gpu)):
            err_console.print(warning, highlight=False, soft_wrap=True, markup=False)
    # Before Ray starts or any file is written: the strategy's extras, and its budget where the spec gives the wave
    # size (which also resolves `auto`). Otherwise only the cluster knows the size, and run_study checks there.
    if (size := wave_size(spec, None)) is not None:
        strategy = create_strategy(spec, size)
        for extra in strategy.extras:
            require(extra)
        strategy.check_budget(size)
    elif spec.strategy.mode != "auto":
        for extra in STRATEGIES[spec.strategy.mode].extras:
            require(extra)
    url = resolve_url(store)
    # A new store file waits until the cluster is known to hold a run: a study refused there leaves no file behind.
    db = None if is_new_file(url) else Store(url)
    study = escape(spec.study)
    # The export hint names --store only when the URL came from it: one from the environment is found there again.
    flag = _store_flag(None if store == os.environ.get("WAVESWEEP_STORE") else store)
    # A local Ray's workers inherit this process's environment; they never open the store, so the URL (and its
    # password) stays here.
    os.environ.pop("WAVESWEEP_STORE", None)
    if db is not None and not has_work(spec, db):
        db.open_study(spec)  # still refuses a changed experiment/fixed params under the same name
        console.print(f"All runs of study [bold]{study}[/] are already finished in {escape(db.display_url)}; "
                      "nothing to run.", highlight=False, soft_wrap=True)
    else:
        from contextlib import nullcontext

        from orchestrator.execution.lease import StudyLease
        from orchestrator.reporting.progress import StudyProgress

        # A study that another driver runs is refused before Ray starts (run_study takes the lease of a new one).
        study_id = db.study_id(spec.study) if db is not None else None
        lease = StudyLease(db, study_id, spec.study) if study_id is not None else nullcontext()
        with lease, RayExecutor(address=ray_address, num_gpus=gpus) as executor:
            executor.check_fits(spec)  # before the store is created (run_study checks it again for its other callers)
            executor.check_artifacts(spec)
            db = db or Store(url)
            outcome = run_study(spec, db, executor, StudyProgress(spec.response.metric, console))
        if outcome.ran:
            console.print(f"Ran {outcome.ran} runs ({outcome.runs_per_wave} per wave, mode {outcome.mode}).",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"Nothing to run: the {outcome.mode} strategy proposes no new wave for study "
                          f"[bold]{study}[/] in {escape(db.display_url)}.", highlight=False, soft_wrap=True)
        if outcome.stop_reason:
            console.print(f"Stopped: {outcome.stop_reason}", highlight=False, soft_wrap=True, markup=False)
        if outcome.mode == "greedy":
            from orchestrator.reporting.best import print_blind_spots

            print_blind_spots(console, spec, db.runs(spec.study))
    from orchestrator.reporting.best import print_best

    runs = db.runs(spec.study)
    print_best(console, runs, spec.response.metric, spec.response.goal)
    console.print(f"Results: {escape(db.display_url)} (study [bold]{study}[/]). "
                  f"Export: wavesweep export {study} --format csv{escape(flag)}", highlight=False, soft_wrap=True)
    if code := exit_code(runs):
        counts = _counts(db.status_counts(spec.study)) or "no runs"
        err_console.print(f"error: study {spec.study} ended with no COMPLETE run ({counts}); "
                          f"`wavesweep status {spec.study}` shows why each run failed.", highlight=False,
                          soft_wrap=True, markup=False)
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


def _declared_gpus_warning(gpus: int, gpu) -> str | None:
    """Ray counts declared GPUs without looking for them: say so when this machine has none (``gpu``:
    ``local_gpu.local_gpu()``) a run could use."""
    if gpu is not None:
        return None
    return (f"warning: --gpus {gpus} declares {gpus} GPU(s) to the local Ray, but this machine shows none (no "
            "nvidia-smi, not an Apple silicon Mac): each run holds a GPU slot and computes on the CPU.")


def _local_gpu_memory(spec, gpu):
    """A local run of ``gpus_per_run: auto`` whose spec leaves ``gpu_memory_gb`` unset packs by this machine's GPU
    (``gpu``: ``local_gpu.local_gpu()``)."""
    resources = spec.resources
    if resources.gpus_per_run != "auto" or "gpu_memory_gb" in resources.model_fields_set:
        return spec
    if gpu is None:
        return spec
    console.print(f"gpus_per_run: auto packs runs for this machine's GPU, {gpu.name}: {gpu.memory_gb:.1f} GB "
                  "(resources.gpu_memory_gb overrides).", highlight=False, soft_wrap=True, markup=False)
    return spec.model_copy(update={"resources": resources.model_copy(update={"gpu_memory_gb": gpu.memory_gb})})


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
    from datetime import UTC, datetime

    from orchestrator.reporting.best import best_value, print_best
    from orchestrator.reporting.report import (
        lease_line,
        recorded_spec,
        split_line,
        wave_lines,
        wave_split,
        wave_table,
    )
    from orchestrator.reporting.study_report import studies_status, study_status
    from orchestrator.store import Store

    db = Store(store, writer=False)
    if format == ReportFormat.json:
        report = studies_status(db) if study is None else study_status(db, study, datetime.now(UTC))
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
        return
    if study is None:
        rows = []
        for name in db.study_names():
            spec = db.study_spec(name) or {}
            counts = db.status_counts(name)
            best = best_value(db.runs(name), spec["response"]["metric"], spec["response"]["goal"])
            stop = (db.study_info(name) or {}).get("stop_reason") or "-"
            rows.append((name, str(sum(counts.values())), _counts(counts), best, stop))
        console.print(table(("study", "runs", "by status", "best", "stopped because"), rows,
                            title=f"Studies in {db.display_url}", wrap=("by status", "stopped because")))
        return
    spec = recorded_spec(db, study)
    runs = db.runs(study)
    console.print(f"Study [bold]{escape(study)}[/] in {escape(db.display_url)}", highlight=False, soft_wrap=True)
    console.print(lease_line(db.lease(db.study_id(study)), datetime.now(UTC)), highlight=False,
                  soft_wrap=True, markup=False)
    waves = db.waves(study)
    waves_table = wave_table(waves, runs)
    if fits(console, waves_table):
        console.print(waves_table)
    else:
        for line in wave_lines(waves, runs):
            console.print(line, highlight=False, markup=False, overflow="fold")
    # Designed runs feed the effects fit; proposed ones (a model's batch, a space-filling sample) do not.
    split = wave_split({w["number"]: w["design"] for w in waves}, (r["wave"] for r in runs))
    console.print(split_line(split), highlight=False, soft_wrap=True, markup=False)
    info = db.study_info(study) or {}
    if info.get("stop_reason"):
        stopped = info["stopped_at"].strftime("%Y-%m-%d %H:%M:%S UTC") if info.get("stopped_at") else "-"
        console.print(f"Stopped ({stopped}): {info['stop_reason']}", highlight=False, soft_wrap=True, markup=False)
    failed = [r for r in runs if r["status"] not in ("COMPLETE", "PENDING", "RUNNING")]
    for r in failed:
        console.print(f"[red]{r['status']}[/] run {r['run_id']} ({escape(str(r['error_kind']))}, {r['attempts']} "
                      f"attempts): {escape(str(r['error_message']))}", highlight=False, soft_wrap=True)
    retried = [r for r in runs if r["attempts"] > 1 and r not in failed]
    logs = db.attempt_logs(study) if retried else {}
    for r in retried:  # what the earlier attempts died of (worker_died, lost, oom, driver_died)
        kinds = ", ".join(a.get("error_kind") or "?" for a in logs.get(r["cell_key"], [])[:-1] if "status" in a)
        console.print(f"{r['status']} run {r['run_id']} after {r['attempts']} attempts (earlier: {kinds or '-'})",
                      highlight=False, soft_wrap=True, markup=False)
    print_best(console, runs, spec["response"]["metric"], spec["response"]["goal"])


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


def _store_flag(store: str | None) -> str:
    from orchestrator.store import mask

    return f" --store '{mask(store)}'" if store else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
