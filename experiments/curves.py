"""A learning-curve experiment over the named surfaces of ``experiments/surfaces.py``, for pruning benchmarks.

Each run trains for ``steps`` steps (sleeping ``step_s`` seconds per step, the "GPU" time) and reports its loss
after every step with ``ctx.report(step, loss=...)``. Its final value, at step ``steps``, is exactly what
``experiments.synthetic`` would give for the same cell: the surface's value plus the surface's own noise
(``Surface.sample(factors, seed)``), so regret is measured against a known optimum.

The curve, for a goal of minimize (mirrored for maximize: it then rises to its final value):

    y(s) = final + (start - final) * g(s / steps, k) + step noise,
    g(u, k) = (exp(-k u) - exp(-k)) / (1 - exp(-k))          (g(0) = 1, g(1) = 0, decreasing)

- ``start`` is the same for every configuration, as a loss at initialisation is: the surface's optimum plus 1.25 x
  its spread over the box (worst of 2,000 uniform points, seeded, minus the optimum), so worse than any final value.
- ``k``, the speed, is a property of the configuration: ``2 * 3 ** u * exp(0.2 z)``, where ``u`` is the *first*
  factor of the surface in unit coordinates (its box, in the box's scale) and ``z`` a standard normal drawn from a
  hash of the configuration (not of the seed). The first factor of ``llm_finetune`` is its learning rate: a low
  learning rate learns slowly. ``hartmann6`` and ``rosenbrock`` get the same rule on their ``x1`` (nothing was
  chosen per surface). With k from about 2 to 6, curves cross: a late bloomer (good final value, low k) is behind
  a fast configuration with a worse final value early on (at 25% of the run its remaining gap is about 0.5 of the
  start gap against about 0.2) and ahead at the end. ``tests/test_curves.py`` checks such a pair.
- ``shape="wsd"`` (a second family, for the predictors' sake: ``orchestrator/execution/extrapolate.py`` fits
  exponential and power curves, and this is neither): a warmup-stable-decay learning-rate schedule, whose loss
  comes down like the above and then drops once more over the last ``WSD_DECAY`` of the run, as the rate anneals:
  ``y = final + D (1 - h(u)) + (start - final - D) g(u, k)``, ``h`` rising smoothly from 0 at ``u = 1 - WSD_DECAY``
  to 1 at ``u = 1``; the drop ``D = WSD_DROP x spread x (0.5 + u1)`` is larger for a higher first factor (a higher
  rate gains more from annealing), so the order of the runs before the decay is not the final order.
- step noise: ``noise_sd * (1 - s / steps) * N(0, 1)``, independent per step, drawn from a hash of (surface,
  configuration, seed); it vanishes at the last step, so ``y(steps)`` is the final value exactly.

Everything is a pure function of (surface name, factors, step, steps, seed): :func:`value_at` and :func:`curve`,
so peers outside wavesweep (Ray Tune, Optuna in ``bench/gpu_hours.py``) compute exactly the same numbers.

Params: the surface's factors, and fixed ``surface`` (a name in ``experiments.surfaces.SURFACES``), ``steps``
(default 60), ``step_s`` (seconds slept per step, default 0.1), ``shape`` (``exp``, default, or ``wsd``), ``seed``
(set by the orchestrator), ``step_log`` (optional, a file: every run
appends a JSON line per executed step, see :func:`train`; a benchmark's own record, a pruned run's included). numpy
only; the surfaces import no scipy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

METRIC = "loss"  # the name of the curve and of the final value: a spec's response.metric
START_SPREADS = 1.25  # the common start value: optimum + this many spreads (worse than any final value)
K_LOW, K_RATIO, K_JITTER = 2.0, 3.0, 0.2  # speed k = K_LOW * K_RATIO ** u * exp(K_JITTER * z)
SPREAD_POINTS = 2000
SHAPES = ("exp", "wsd")
WSD_DECAY, WSD_DROP = 0.2, 0.15  # wsd: the share of the run the rate anneals over; the drop, in spreads



def _surface(name: str):
    from experiments.surfaces import get_surface

    return get_surface(name)


def factors_of(surface_name: str, params: Mapping[str, Any]) -> dict[str, float]:
    """The surface's factors out of a run's params (fixed params and anything else dropped), checked."""
    surface = _surface(surface_name)
    return surface.check({name: params[name] for name in surface.factors if name in params})


@functools.cache
def spread(surface_name: str) -> float:
    """Worst of SPREAD_POINTS uniform points of the box (seeded, so the same everywhere) minus the optimum, >= 0."""
    surface = _surface(surface_name)
    rng = np.random.default_rng(0)
    values = [surface.value(surface.random_point(rng)) for _ in range(SPREAD_POINTS)]
    worst = max(values) if surface.goal == "minimize" else min(values)
    return abs(worst - surface.optimum)


def start_value(surface_name: str) -> float:
    """Where every curve starts (step 0): worse than any final value, the same for every configuration."""
    surface = _surface(surface_name)
    sign = 1.0 if surface.goal == "minimize" else -1.0
    return surface.optimum + sign * START_SPREADS * spread(surface_name)


def _rng(*identity: Any) -> np.random.Generator:
    text = json.dumps(identity, sort_keys=True)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _first_unit(surface_name: str, factors: Mapping[str, float]) -> float:
    surface = _surface(surface_name)
    first = next(iter(surface.factors))
    return surface.factors[first].to_unit(factors[first])


def speed(surface_name: str, params: Mapping[str, Any]) -> float:
    """The configuration's speed k: low for a low first factor (a low learning rate), jittered per configuration."""
    factors = factors_of(surface_name, params)
    u = _first_unit(surface_name, factors)
    z = float(_rng("speed", surface_name, factors).standard_normal())
    return K_LOW * K_RATIO ** u * math.exp(K_JITTER * z)


def shape(u: float, k: float) -> float:
    """g(u, k): the share of the start gap left after a share u of the run; 1 at u = 0, 0 at u = 1."""
    return (math.exp(-k * u) - math.exp(-k)) / (1.0 - math.exp(-k))


def final_value(surface_name: str, params: Mapping[str, Any], seed: int) -> float:
    """The value at the last step: the surface's value plus its noise for this seed (``Surface.sample``)."""
    return _surface(surface_name).sample(factors_of(surface_name, params), int(seed))


def _decay(u: float) -> float:
    """wsd's h(u): 0 before the decay phase, then a smoothstep to 1 at the end of the run."""
    x = min(1.0, max(0.0, (u - (1.0 - WSD_DECAY)) / WSD_DECAY))
    return x * x * (3.0 - 2.0 * x)


def curve(surface_name: str, params: Mapping[str, Any], steps: int, seed: int, shape_name: str = "exp",
          ) -> list[float]:
    """The values after steps 1..steps; the last one is :func:`final_value`."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    if shape_name not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}; got {shape_name!r}")
    surface = _surface(surface_name)
    factors = factors_of(surface_name, params)
    final = surface.sample(factors, int(seed))
    start, k = start_value(surface_name), speed(surface_name, factors)
    sign = 1.0 if surface.goal == "minimize" else -1.0
    drop = sign * WSD_DROP * spread(surface_name) * (0.5 + _first_unit(surface_name, factors)) * (shape_name == "wsd")
    noise = _rng("steps", surface_name, factors, int(seed), int(steps)).standard_normal(steps)
    out = []
    for s in range(1, steps + 1):
        u = s / steps
        out.append(final + drop * (1.0 - _decay(u)) + (start - final - drop) * shape(u, k)
                   + surface.noise_sd * (1.0 - u) * float(noise[s - 1]))
    out[-1] = final  # exactly, whatever rounding the formula above does
    return out


def value_at(surface_name: str, params: Mapping[str, Any], step: int, steps: int, seed: int,
             shape_name: str = "exp") -> float:
    """The value after ``step`` (1..steps) of a run of ``steps`` steps; pure: the same numbers in any process."""
    if not 1 <= step <= steps:
        raise ValueError(f"step must be in 1..{steps}; got {step}")
    return curve(surface_name, params, steps, seed, shape_name)[step - 1]


def _log(path: str | None, record: dict[str, Any]) -> None:
    if path:
        # One short O_APPEND write per line: lines from concurrent runs (processes or threads) do not interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)


def train(surface_name: str, params: Mapping[str, Any], steps: int, step_s: float, seed: int,
          report: Callable[[int, float], None], *, step_log: str | None = None, key: str = "",
          shape_name: str = "exp") -> float:
    """Run the curve: per step, sleep ``step_s``, log the step (``step_log``), then ``report(step, value)``, which may
    raise to stop the run (wavesweep's Pruned, Optuna's TrialPruned); the final value.

    ``step_log`` (a file) gets a JSON line per run at its start (``step`` 0, with its factors and seed) and one after
    every executed step (``key``, ``step``, ``t`` = ``time.time()``), written by the run itself: a benchmark counts
    the steps each run really executed and times them by the runs' own clocks, whatever the framework records."""
    values = curve(surface_name, params, steps, seed, shape_name)
    if step_log:
        _log(step_log, {"key": key, "step": 0, "t": time.time(), "seed": int(seed),
                        "params": factors_of(surface_name, params)})
    for step, value in enumerate(values, start=1):
        time.sleep(step_s)
        if step_log:
            _log(step_log, {"key": key, "step": step, "t": time.time()})
        report(step, value)
    return values[-1]


def run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """wavesweep's entry point (``experiments.curves:run``): sleep and report, step by step; the final value."""
    steps = int(params.get("steps", 60))

    def report(step: int, value: float) -> None:
        ctx.report(step, **{METRIC: value})  # raises orchestrator.context.Pruned once the driver pruned the run

    final = train(params["surface"], params, steps, float(params.get("step_s", 0.1)),
                  int(params.get("seed", ctx.seed)), report, step_log=params.get("step_log"), key=ctx.cell_key,
                  shape_name=params.get("shape", "exp"))
    return {METRIC: final, "steps": float(steps)}
