"""A response surface with known effects, for testing the orchestrator and the analysis without training anything.

``metric = intercept + sum(coef * product of the named params) + noise_sd * N(0, 1)``, where the noise is drawn
from the run's seed and params, so a cell gives the same value on every machine. ``surface`` maps a term
(``"x"``, ``"x*y"``) to its coefficient. ``fail_if`` / ``diverge_if`` (param -> level) make matching runs raise,
to exercise FAILED and DIVERGED; ``sleep_s`` makes a run take time. ``save_artifact`` writes the value into the run's
artifact directory and ``load_artifact`` (a directory, e.g. a resolved ``store:`` reference) reads one back as the
metric ``loaded``, to exercise artifacts; ``report_pid`` returns the worker's process id, to exercise worker reuse.

Failure knobs, for the executor's retry rules (each a condition param -> level, or a list of them; an extra
``until_attempt: n`` makes one hold on the first n attempts only, ``ctx.attempt``): ``kill_if`` SIGKILLs the worker
process (at the start, or right after reporting step ``kill_at`` when that is given), ``stop_if``
SIGSTOPs it (frozen: its heartbeat stops too), ``oom_if`` raises a class named ``OutOfMemoryError`` (as
``torch.cuda.OutOfMemoryError`` is), ``slow_if`` sleeps ``slow_s`` more. ``log_starts`` (a file) gets a line
``<cell key> <attempt> <pid>`` whenever a run starts, to count executions; ``report_resources`` returns what Ray
gave the run (``assigned_gpu``, ``assigned_cpu``); ``report_node`` the index of the run's Ray node among the
cluster's alive nodes sorted by id (``node``), to see runs spread over nodes.

Curves, for the pruner: every step reports ``value + 1 / step`` as ``train_loss``, or under ``curve_as`` (the
response's name, to make the run prunable); ``bloom_if`` (a condition) with ``bloom_at`` (a step) makes matching
runs late bloomers, 5 worse before that step.

``named_surface`` (a name in ``experiments.surfaces.SURFACES``) replaces ``surface``/``intercept`` with a surface
whose optimum and true interactions are known: the metric (``y`` unless ``metric`` says otherwise) is that surface's
``sample(factors, seed)``, with its own noise unless ``noise_sd`` is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import time
from typing import Any

from orchestrator.context import Diverged, RunContext

_KNOWN = {"surface", "named_surface", "intercept", "noise_sd", "metric", "steps", "sleep_s", "fail_if", "diverge_if",
          "seed", "save_artifact", "load_artifact", "report_pid", "kill_if", "stop_if", "oom_if", "slow_if", "slow_s",
          "log_starts", "report_resources", "report_node", "curve_as", "bloom_if", "bloom_at", "kill_at"}


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the worker records as OOM (it matches the class name)."""


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, float]:
    factors = {k: v for k, v in params.items() if k not in _KNOWN}
    if params.get("named_surface") is not None:
        value = _named_surface_value(params, factors, params.get("seed", ctx.seed))
        default_metric = "y"
    else:
        value = _generic_surface_value(params, factors, params.get("seed", ctx.seed))
        default_metric = "loss"

    _failure_knobs(params, factors, ctx)
    steps = int(params.get("steps", 5))
    sleep_s = float(params.get("sleep_s", 0.0))
    curve_as = params.get("curve_as", "train_loss")
    bloom_at = int(params.get("bloom_at", 0)) if _matches(factors, params.get("bloom_if")) else 0
    for step in range(1, steps + 1):
        time.sleep(sleep_s / steps)
        # A curve that converges to the final value; a late bloomer's is 5 worse before step bloom_at.
        ctx.report(step, **{curve_as: value + 1.0 / step + (5.0 if step < bloom_at else 0.0)})
        if step == params.get("kill_at") and _matches(factors, params.get("kill_if"), ctx.attempt):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-run: what it reported and had not sent yet is lost
        if _matches(factors, params.get("diverge_if")) and step == steps // 2 + 1:
            raise Diverged(f"train_loss became nan at step {step}")
    if _matches(factors, params.get("fail_if")):
        raise RuntimeError(f"fail_if matched {params['fail_if']}")
    metrics = {params.get("metric", default_metric): value}
    if params.get("save_artifact"):
        os.makedirs(ctx.artifact_dir, exist_ok=True)
        with open(os.path.join(ctx.artifact_dir, "value.json"), "w") as f:
            json.dump({"value": value}, f)
    if params.get("load_artifact"):
        with open(os.path.join(params["load_artifact"], "value.json")) as f:
            metrics["loaded"] = json.load(f)["value"]
    if params.get("report_pid"):
        metrics["pid"] = float(os.getpid())
    if params.get("report_resources"):
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        metrics.update(assigned_gpu=float(assigned.get("GPU", 0.0)), assigned_cpu=float(assigned.get("CPU", 0.0)))
    if params.get("report_node"):
        import ray

        alive = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
        metrics["node"] = float(alive.index(ray.get_runtime_context().get_node_id()))
    return metrics


def _failure_knobs(params: dict[str, Any], factors: dict[str, Any], ctx: RunContext) -> None:
    if params.get("log_starts"):
        # One short O_APPEND write per start: lines from concurrent runs do not interleave.
        fd = os.open(params["log_starts"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.cell_key} {ctx.attempt} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    if params.get("kill_at") is None and _matches(factors, params.get("kill_if"), ctx.attempt):
        os.kill(os.getpid(), signal.SIGKILL)
    if _matches(factors, params.get("stop_if"), ctx.attempt):
        os.kill(os.getpid(), signal.SIGSTOP)  # every thread stops, the heartbeat's too
    if _matches(factors, params.get("oom_if"), ctx.attempt):
        raise OutOfMemoryError(f"CUDA out of memory (oom_if matched {params['oom_if']} on attempt {ctx.attempt})")
    if _matches(factors, params.get("slow_if"), ctx.attempt):
        time.sleep(float(params.get("slow_s", 60.0)))


def _generic_surface_value(params: dict[str, Any], factors: dict[str, Any], seed: Any) -> float:
    surface: dict[str, float] = params.get("surface", {})
    value = float(params.get("intercept", 0.0))
    for term, coef in surface.items():
        names = term.split("*")
        missing = [n for n in names if n not in factors]
        if missing:
            raise ValueError(f"surface term {term!r} names {missing}, which are not params; params: {sorted(factors)}")
        value += coef * math.prod(float(factors[n]) for n in names)
    identity = json.dumps({"seed": seed, **factors}, sort_keys=True, default=str)
    rng = random.Random(hashlib.sha256(identity.encode()).hexdigest())
    return value + float(params.get("noise_sd", 0.0)) * rng.gauss(0.0, 1.0)


def _named_surface_value(params: dict[str, Any], factors: dict[str, Any], seed: Any) -> float:
    # Imported here: the generic path (most tests, every Ray worker of them) does not need it.
    from experiments.surfaces import get_surface

    clash = [k for k in ("surface", "intercept") if k in params]
    if clash:
        raise ValueError(f"give either 'named_surface' or {clash}, not both: a named surface has its own formula")
    surface = get_surface(params["named_surface"])
    if "noise_sd" in params:  # the spec may ask for more or less noise than the surface's default
        surface = dataclasses.replace(surface, noise_sd=float(params["noise_sd"]))
    return surface.sample(factors, int(seed))


def _matches(factors: dict[str, Any], condition: dict[str, Any] | list[dict[str, Any]] | None,
             attempt: int = 1) -> bool:
    if isinstance(condition, list):  # any of several conditions
        return any(_matches(factors, one, attempt) for one in condition)
    if not condition:
        return False
    levels = {k: v for k, v in condition.items() if k != "until_attempt"}
    return attempt <= condition.get("until_attempt", attempt) and all(factors.get(k) == v for k, v in levels.items())
