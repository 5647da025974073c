"""Strategies propose waves of cells; the driver runs them. Chosen by `strategy.mode` in the spec."""

from orchestrator.cells import WavePlan
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.errors import SpecError, WavesweepError
from orchestrator.strategies.base import Strategy
from orchestrator.strategies.greedy import Greedy, blind_spots
from orchestrator.strategies.grid import Grid
from orchestrator.strategies.waves import Waves

STRATEGIES: dict[str, type[Strategy]] = {"grid": Grid, "waves": Waves, "greedy": Greedy}


def wave_size(spec, slots: int | None) -> int | None:
    """The runs of one wave: ``strategy.runs_per_wave``, else the slots the study gets (GPUs / GPUs per run, or
    CPU slots; `wavesweep plan --gpus N`). The one rule `run` and `plan` both use, so they choose the same mode."""
    return spec.strategy.runs_per_wave or slots


def resolve_mode(spec, runs_per_wave: int) -> str:
    """`auto`: greedy when a wave holds one run (one GPU, or one CPU slot), since a wave of one run cannot hold a
    design; otherwise adaptive waves, or the grid when waves cannot work: a categorical factor with more than two
    levels (waves handle two), or a wave too small for the smallest two-level fraction of the factors. Any other
    mode is taken as given."""
    if spec.strategy.mode != "auto":
        return spec.strategy.mode
    if runs_per_wave <= 1:
        return "greedy"
    if any(f.kind == "categorical" and len(f.levels) > 2 for f in spec.factors.values()):
        return "grid"
    try:
        choose_fraction(len(spec.factors), runs_per_wave // len(spec.run_seeds))
    except WavesweepError:
        return "grid"
    return "waves"


def create_strategy(spec, runs_per_wave: int | None = None) -> Strategy:
    """The spec's strategy for waves of ``runs_per_wave`` runs (:func:`wave_size`), which decides `auto` and is
    required for it; the strategy keeps it (``Strategy.runs_per_wave``)."""
    if spec.strategy.mode == "auto" and runs_per_wave is None:
        raise ValueError("mode auto needs the wave size to pick a strategy")
    mode = resolve_mode(spec, runs_per_wave or 0)
    if mode not in STRATEGIES:
        raise SpecError([("strategy.mode", f"must be one of {sorted(STRATEGIES) + ['auto']}", mode)])
    strategy = STRATEGIES[mode](spec)
    strategy.runs_per_wave = runs_per_wave
    return strategy


__all__ = ["STRATEGIES", "Greedy", "Grid", "Strategy", "WavePlan", "Waves", "blind_spots", "create_strategy",
           "resolve_mode", "wave_size"]
