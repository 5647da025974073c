"""What `wavesweep run` does around :func:`orchestrator.execution.driver.run_study`: fit the spec to this machine's
GPU, check the strategy's extras and budget before Ray starts, open the store (or wait to create it until the cluster
holds a run), hold the study's lease, run it, and print the outcome, the best cells and the export hint. The command
passes its consoles in, so whoever replaces the CLI's consoles (a test at a given width) replaces these too."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from orchestrator.cli.status_text import counts_text


def launch(spec_path: Path, store: str | None, gpus: int | None, ray_address: str | None, console: Console,
           err_console: Console) -> int:
    """Run the study of ``spec_path``, resuming where it stopped; the exit code (0 when the study has a COMPLETE run,
    3 when it has none)."""
    # Imported when the command runs: the CLI starts without them, and tests replace run_study and RayExecutor.
    from orchestrator.execution.driver import has_work, run_study
    from orchestrator.execution.executor import RayExecutor
    from orchestrator.execution.outcome import exit_code
    from orchestrator.extras import require
    from orchestrator.spec import load_spec
    from orchestrator.store import Store, is_new_file, resolve_url
    from orchestrator.strategies import STRATEGIES, create_strategy, wave_size

    spec = load_spec(spec_path)
    if ray_address is None:
        from orchestrator.execution.local_gpu import local_gpu

        gpu = local_gpu() if gpus or spec.resources.gpus_per_run == "auto" else None  # spares a nvidia-smi call
        local = _local_gpu_memory(spec, gpu)
        if local is not spec:
            console.print(f"gpus_per_run: auto packs runs for this machine's GPU, {gpu.name}: {gpu.memory_gb:.1f} GB "
                          "(resources.gpu_memory_gb overrides).", highlight=False, soft_wrap=True, markup=False)
        spec = local
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
        counts = counts_text(db.status_counts(spec.study)) or "no runs"
        err_console.print(f"error: study {spec.study} ended with no COMPLETE run ({counts}); "
                          f"`wavesweep status {spec.study}` shows why each run failed.", highlight=False,
                          soft_wrap=True, markup=False)
    return code


def _declared_gpus_warning(gpus: int, gpu) -> str | None:
    """Ray counts declared GPUs without looking for them: say so when this machine has none (``gpu``:
    ``local_gpu.local_gpu()``) a run could use."""
    if gpu is not None:
        return None
    return (f"warning: --gpus {gpus} declares {gpus} GPU(s) to the local Ray, but this machine shows none (no "
            "nvidia-smi, not an Apple silicon Mac): each run holds a GPU slot and computes on the CPU.")


def _local_gpu_memory(spec, gpu):
    """A local run of ``gpus_per_run: auto`` whose spec leaves ``gpu_memory_gb`` unset packs by this machine's GPU
    (``gpu``: ``local_gpu.local_gpu()``): the spec with that GPU's memory, else ``spec`` itself."""
    resources = spec.resources
    if resources.gpus_per_run != "auto" or "gpu_memory_gb" in resources.model_fields_set:
        return spec
    if gpu is None:
        return spec
    return spec.model_copy(update={"resources": resources.model_copy(update={"gpu_memory_gb": gpu.memory_gb})})


def _store_flag(store: str | None) -> str:
    from orchestrator.store import mask

    return f" --store '{mask(store)}'" if store else ""
