"""What an experiment's ``run(params, ctx)`` sees of the orchestrator.

This module runs inside Ray workers: it must stay import-light (no torch, no SQLAlchemy, no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


class Diverged(RuntimeError):
    """Raised by an experiment whose loss became NaN/inf or exploded.

    The run is recorded as DIVERGED (a result about the configuration), not FAILED (a bug or a crash).
    """


@dataclass
class RunContext:
    """Handed to ``run(params, ctx)``.

    ``report(step, **metrics)`` streams learning-curve points back to the driver, which alone writes the store.
    """

    study: str
    cell_key: str
    seed: int
    num_cpus: int = 1
    gpu_ids: tuple[int, ...] = ()
    artifact_dir: str = ""  # where this run may save outputs (e.g. its adapter); created on first use by the run
    warm_reuse: bool = True  # whether the experiment may keep a loaded base model for the worker's next run
    attempt: int = 1  # 1 for a run's first attempt by this driver; a retry (worker died, lost, OOM) counts up
    _sink: Callable[[int, dict[str, float]], None] | None = field(default=None, repr=False)

    @property
    def device(self) -> str:
        """``"cuda"`` when Ray gave this run a GPU, else ``"cpu"``."""
        return "cuda" if self.gpu_ids else "cpu"

    def report(self, step: int, **metrics: float) -> None:
        if not metrics:
            raise ValueError("report() needs at least one metric, e.g. ctx.report(step, loss=0.5)")
        clean = {name: float(value) for name, value in metrics.items()}
        if self._sink is not None:
            self._sink(int(step), clean)

