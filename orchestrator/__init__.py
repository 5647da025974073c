"""wavesweep: factorial waves of LLM experiments on Ray, a SQL store, interaction effects.

Kept import-light on purpose: ``import orchestrator`` loads neither torch, Ray nor SQLAlchemy.
"""

__version__ = "0.1.0"
