"""Run statuses: one closed set, shared by the store, the executor and the CLI."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    PENDING = "PENDING"  # in the store, not yet handed to Ray
    RUNNING = "RUNNING"  # a worker started it
    COMPLETE = "COMPLETE"  # run() returned the response metric
    FAILED = "FAILED"  # an exception, a dead or lost worker; error_kind and traceback say which
    DIVERGED = "DIVERGED"  # the loss became NaN/inf or exploded: a result about the configuration
    TIMEOUT = "TIMEOUT"  # ran past resources.timeout_s; its worker was killed
    OOM = "OOM"  # out of memory, on every attempt (each retry ran alone)
    PRUNED = "PRUNED"  # stopped early by the strategy


# Statuses that hold a result of the configuration itself; resume keeps them. A DIVERGED run would diverge again
# with the same seed, so it is not re-run. Everything else (a crash, a driver that died mid-run) is requeued.
FINISHED = frozenset({RunStatus.COMPLETE, RunStatus.DIVERGED, RunStatus.PRUNED})
