"""Adaptive waves: screen, de-alias, explore, refine, stop (see ``strategy.py``); one small unit per step, each taking
the values it needs (``space.Axis``, ``space.Region``, ``cells.Seeds``) rather than the strategy."""

from orchestrator.strategies.waves.strategy import DEFAULT_MAX_WAVES, Waves

__all__ = ["DEFAULT_MAX_WAVES", "Waves"]
