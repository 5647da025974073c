"""Strategies propose waves of cells; the driver runs them. Chosen by `strategy.mode` in the spec."""

from orchestrator.errors import SpecError
from orchestrator.strategies.base import Strategy, WavePlan
from orchestrator.strategies.grid import Grid
from orchestrator.strategies.waves import Waves

STRATEGIES: dict[str, type[Strategy]] = {"grid": Grid, "waves": Waves}
# `auto` will pick adaptive waves or greedy by the GPUs available once those exist; until then it is the grid.
_ALIASES = {"auto": "grid"}


def create_strategy(spec) -> Strategy:
    mode = _ALIASES.get(spec.strategy.mode, spec.strategy.mode)
    if mode not in STRATEGIES:
        raise SpecError([("strategy.mode", f"must be one of {sorted(STRATEGIES) + sorted(_ALIASES)}", mode)])
    return STRATEGIES[mode](spec)


__all__ = ["STRATEGIES", "Grid", "Strategy", "WavePlan", "Waves", "create_strategy"]
