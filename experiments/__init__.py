"""Experiments runnable by wavesweep: each exposes ``run(params, ctx) -> dict[str, float]``.

Importing this package must stay cheap (no torch): the orchestrator resolves experiments by name before any
worker needs the heavy dependencies.
"""
