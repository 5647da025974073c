"""Runs one cell inside a Ray worker (or in-process): calls the experiment and turns what happens into a result.

Import-light: no torch, no SQLAlchemy. Workers never open the store; everything goes back to the driver.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable

from orchestrator.artifacts import is_uri, localise, publish, scratch_for
from orchestrator.context import Diverged, Pruned, RunContext, import_experiment
from orchestrator.run_record import RunStatus


def run_cell(payload: dict[str, Any], sink: Callable[[str, Any], None], gpu_ids: tuple[int, ...] = ()) -> dict:
    """Run ``payload`` (experiment, params, cell key, seed, response metric) and return a result dict.

    ``sink(kind, data)`` carries events to the driver: ``("started", {...})`` once, then ``("progress", (step,
    metrics))`` for every ``ctx.report``; a progress sink that returns True says the driver pruned the run, and
    ``ctx.report`` raises :class:`Pruned`. Exceptions never escape: they become a FAILED/DIVERGED/OOM/PRUNED result.
    """
    key = payload["cell_key"]
    host = socket.gethostname()
    device = f"cuda:{','.join(map(str, gpu_ids))}" if gpu_ids else "cpu"
    started = datetime.now(timezone.utc)
    sink("started", {"cell_key": key, "host": host, "device": device, "started_at": started})
    location = payload["artifact_dir"]
    ctx = RunContext(
        study=payload["study"], cell_key=key, seed=payload["seed"], num_cpus=payload["num_cpus"], gpu_ids=gpu_ids,
        artifact_dir=scratch_for(location), warm_reuse=payload["warm_reuse"], attempt=payload.get("attempt", 1),
        _sink=lambda step, metrics: sink("progress", (step, metrics)),
    )
    t0 = time.perf_counter()
    result: dict[str, Any] = {"host": host, "device": device, "started_at": started, "metrics": {}}
    try:
        run = import_experiment(payload["experiment"])
        params = localise(payload["params"], payload.get("inputs") or {})
        metrics = _clean_metrics(run(params, ctx), payload["response"])
        if saved := publish(ctx.artifact_dir, location):  # a run whose outputs cannot be kept did not succeed
            result["artifact_dir"] = saved
        result.update(status=RunStatus.COMPLETE, metrics=metrics)
        if ctx.pruned_at is not None:  # it caught Pruned and returned anyway: it was stopped all the same
            result.update(status=RunStatus.PRUNED, error_kind="pruned",
                          error_message=f"pruned at step {ctx.pruned_at} (the run caught Pruned and returned)")
    except Pruned as exc:
        result.update(status=RunStatus.PRUNED, error_kind="pruned", error_message=str(exc))
    except Diverged as exc:
        result.update(status=RunStatus.DIVERGED, error_kind="diverged", error_message=str(exc))
    except Exception as exc:  # noqa: BLE001 - the run's failure is data, recorded with its traceback
        if ctx.pruned_at is not None:  # an error on the way out of a pruned run (Pruned wrapped): still pruned
            result.update(status=RunStatus.PRUNED, error_kind="pruned",
                          error_message=f"pruned at step {ctx.pruned_at}, then {type(exc).__name__}: {exc}"[:2000])
            return _finish(result, ctx, location, payload, t0)
        oom = type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError)
        kind = "oom" if oom else "bad_result" if isinstance(exc, BadResult) else "exception"
        result.update(status=RunStatus.OOM if oom else RunStatus.FAILED, error_kind=kind,
                      error_message=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc())
    return _finish(result, ctx, location, payload, t0)


def _finish(result: dict[str, Any], ctx: RunContext, location: str, payload: dict[str, Any], t0: float) -> dict:
    wall = time.perf_counter() - t0
    result["wall_s"] = wall
    result["finished_at"] = datetime.now(timezone.utc)
    # Cost figures are the executor's, so every experiment reports them the same way (GPU-seconds: the cost).
    result["metrics"]["wall_s"] = wall
    result["metrics"]["gpu_s"] = wall * payload["gpus"]
    if is_uri(location):
        shutil.rmtree(ctx.artifact_dir, ignore_errors=True)  # uploaded by publish, or a failed run's: not kept
    elif "artifact_dir" not in result and os.path.isdir(location) and os.listdir(location):
        result["artifact_dir"] = location  # a failed run's outputs, kept for the post-mortem
    return result


class BadResult(TypeError):
    """run() returned something that is not a dict of numbers holding the response metric."""


def _clean_metrics(returned: Any, response: str) -> dict[str, float]:
    if not isinstance(returned, dict):
        raise BadResult(f"run() must return a dict of metric name -> number; got {type(returned).__name__}")
    metrics: dict[str, float] = {}
    for name, value in returned.items():
        try:
            # A flag stays a flag (the store keeps it as one, and exports write true/false).
            metrics[str(name)] = value if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            raise BadResult(f"run() returned metric {name!r} = {value!r}, which is not a number") from None
    if response not in metrics:
        raise BadResult(f"run() returned no {response!r} (the spec's response.metric); got {sorted(metrics)}")
    if not math.isfinite(metrics[response]):
        raise Diverged(f"response {response!r} is {metrics[response]}")
    return metrics
