"""Strategies propose waves of cells; the driver runs them. Chosen by `strategy.mode` in the spec."""

from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.errors import SpecError, WavesweepError
from orchestrator.strategies.base import Strategy, WavePlan
from orchestrator.strategies.greedy import Greedy, blind_spots
from orchestrator.strategies.grid import Grid
from orchestrator.strategies.waves import Waves

STRATEGIES: dict[str, type[Strategy]] = {"grid": Grid, "waves": Waves, "greedy": Greedy}


def resolve_mode(spec, slots: int) -> str:
    """`auto`: greedy when only one run fits at a time (one GPU, or one CPU slot), since a wave of one run
    cannot hold a design; otherwise adaptive waves, or the grid when waves cannot work: a categorical factor with
    more than two levels (waves handle two), or a wave too small for the smallest two-level fraction of the
    factors. Any other mode is taken as given."""
    if spec.strategy.mode != "auto":
        return spec.strategy.mode
    if slots <= 1:
        return "greedy"
    if any(f.kind == "categorical" and len(f.levels) > 2 for f in spec.factors.values()):
        return "grid"
    try:
        choose_fraction(len(spec.factors), (spec.strategy.runs_per_wave or slots) // len(spec.run_seeds))
    except WavesweepError:
        return "grid"
    return "waves"


def create_strategy(spec, slots: int | None = None) -> Strategy:
    """The spec's strategy; ``slots`` (runs that fit at once) decides `auto`, and is required for it."""
    if spec.strategy.mode == "auto" and slots is None:
        raise ValueError("mode auto needs the number of slots to pick a strategy")
    mode = resolve_mode(spec, slots or 0)
    if mode not in STRATEGIES:
        raise SpecError([("strategy.mode", f"must be one of {sorted(STRATEGIES) + ['auto']}", mode)])
    return STRATEGIES[mode](spec)


__all__ = ["STRATEGIES", "Greedy", "Grid", "Strategy", "WavePlan", "Waves", "blind_spots", "create_strategy",
           "resolve_mode"]
