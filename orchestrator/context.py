"""An experiment's interface: where its ``run`` is found (``module:function``, and the ``PARAMS`` its module
declares), and what ``run(params, ctx)`` sees of the orchestrator.

This module runs inside Ray workers: it must stay import-light (no torch, no SQLAlchemy, no Ray, no pydantic).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestrator.errors import SpecError


class Diverged(RuntimeError):
    """Raised by an experiment whose loss became NaN/inf or exploded.

    The run is recorded as DIVERGED (a result about the configuration), not FAILED (a bug or a crash).
    """


class Pruned(Exception):
    """Raised by ``ctx.report`` once the driver has decided to stop this run (its curve is clearly worse than its
    peers' at the same step: ``orchestrator/execution/pruning.py``). Let it propagate: the run is recorded as PRUNED,
    with the step and the numbers that decided it, and its GPU goes to the next run. Like Optuna's ``TrialPruned``,
    it is an Exception; an experiment that catches it anyway is still recorded as PRUNED, and one that keeps running
    is killed after a grace period."""


@dataclass
class RunContext:
    """Handed to ``run(params, ctx)``.

    ``report(step, **metrics)`` streams learning-curve points back to the driver, which alone writes the store;
    it raises :class:`Pruned` once the driver has stopped the run.
    """

    study: str
    cell_key: str
    seed: int
    num_cpus: int = 1
    gpu_ids: tuple[int, ...] = ()
    artifact_dir: str = ""  # where this run may save outputs (e.g. its adapter); created on first use by the run
    warm_reuse: bool = True  # whether the experiment may keep a loaded base model for the worker's next run
    attempt: int = 1  # 1 for a run's first attempt by this driver; a retry (worker died, lost, OOM) counts up
    # The sink returns True once the driver has decided to stop the run (it may learn it a report late).
    _sink: Callable[[int, dict[str, float]], bool | None] | None = field(default=None, repr=False)
    pruned_at: int | None = field(default=None, repr=False)  # the step whose report raised Pruned

    @property
    def device(self) -> str:
        """``"cuda"`` when Ray gave this run a GPU, else ``"cpu"``."""
        return "cuda" if self.gpu_ids else "cpu"

    def report(self, step: int, **metrics: float) -> None:
        if not metrics:
            raise ValueError("report() needs at least one metric, e.g. ctx.report(step, loss=0.5)")
        clean = {name: float(value) for name, value in metrics.items()}
        if self._sink is not None and self._sink(int(step), clean):
            if self.pruned_at is None:
                self.pruned_at = int(step)
            raise Pruned(f"pruned by the driver at step {step}: its curve is clearly worse than its peers'")


def import_experiment(target: str) -> Callable[..., Any]:
    """Import ``module:function`` and return the function, or raise a SpecError saying why not."""
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        from orchestrator.extras import hint

        raise SpecError([("experiment", f"module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})"
                          + hint(exc), target)]) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise SpecError([("experiment", f"module {module_name!r} has no function {func_name!r}", target)])
    return func


def declared_params(target: str) -> list[str] | None:
    """The params that the experiment's module declares in a ``PARAMS`` mapping (name -> its declaration), or None
    when it declares none (such as ``experiments.synthetic``, whose params are the terms of its surface)."""
    declared = getattr(importlib.import_module(target.partition(":")[0]), "PARAMS", None)
    return list(declared) if isinstance(declared, Mapping) else None
