"""A response surface with known effects, for testing the orchestrator and the analysis without training anything.

``metric = intercept + sum(coef * product of the named params) + noise_sd * N(0, 1)``, where the noise is drawn
from the run's seed and params, so a cell gives the same value on every machine. ``surface`` maps a term
(``"x"``, ``"x*y"``) to its coefficient. ``fail_if`` / ``diverge_if`` (param -> level) make matching runs raise,
to exercise FAILED and DIVERGED; ``sleep_s`` makes a run take time. ``save_artifact`` writes the value into the run's
artifact directory and ``load_artifact`` (a directory, e.g. a resolved ``store:`` reference) reads one back as the
metric ``loaded``, to exercise artifacts; ``report_pid`` returns the worker's process id, to exercise worker reuse.

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
import time
from typing import Any

from orchestrator.context import Diverged, RunContext

_KNOWN = {"surface", "named_surface", "intercept", "noise_sd", "metric", "steps", "sleep_s", "fail_if", "diverge_if",
          "seed", "save_artifact", "load_artifact", "report_pid"}


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, float]:
    factors = {k: v for k, v in params.items() if k not in _KNOWN}
    if params.get("named_surface") is not None:
        value = _named_surface_value(params, factors, params.get("seed", ctx.seed))
        default_metric = "y"
    else:
        value = _generic_surface_value(params, factors, params.get("seed", ctx.seed))
        default_metric = "loss"

    steps = int(params.get("steps", 5))
    sleep_s = float(params.get("sleep_s", 0.0))
    for step in range(1, steps + 1):
        time.sleep(sleep_s / steps)
        ctx.report(step, train_loss=value + 1.0 / step)  # a curve that converges to the final value
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
    return metrics


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


def _matches(factors: dict[str, Any], condition: dict[str, Any] | None) -> bool:
    return bool(condition) and all(factors.get(k) == v for k, v in condition.items())
