"""What happens to a run after each kind of failure: its status, and whether (and how) it is tried again.

One table, read by the executor (which resubmits) and documented in docs/design.md ("Failures and retries").
Retries are the driver's decision, never Ray's (tasks run with ``max_retries=0``), so every attempt is counted and
recorded in the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.run_record import RunStatus


@dataclass(frozen=True)
class Rule:
    status: RunStatus  # what the run is recorded as once no retry follows
    retry: bool  # tried again, up to resources.max_retries times
    alone: bool = False  # the retry runs with nothing else beside it (a whole GPU, or a whole node's CPUs)


# error_kind -> rule. A kind that is not here (a new one) is recorded as FAILED and not retried.
RULES: dict[str, Rule] = {
    "exception": Rule(RunStatus.FAILED, retry=False),  # a bug in the experiment: it would fail the same way
    "bad_result": Rule(RunStatus.FAILED, retry=False),  # run() returned no response metric, or non-numbers
    "diverged": Rule(RunStatus.DIVERGED, retry=False),  # a result about the configuration (same seed, same NaN)
    "timeout": Rule(RunStatus.TIMEOUT, retry=False),  # past resources.timeout_s: it would be as slow again
    "worker_died": Rule(RunStatus.FAILED, retry=True),  # the process or node died (SIGKILL, preemption, segfault)
    "lost": Rule(RunStatus.FAILED, retry=True),  # no heartbeat for heartbeat_grace_s: frozen or dead, unreported
    "oom": Rule(RunStatus.OOM, retry=True, alone=True),  # out of memory, maybe because of a neighbour
    "pruned": Rule(RunStatus.PRUNED, retry=False),  # stopped by the driver's pruner (execution/pruning.py): final
}


@dataclass(frozen=True)
class Decision:
    retry: bool
    alone: bool = False


def decide(error_kind: str | None, attempt: int, max_retries: int) -> Decision:
    """Whether attempt number ``attempt`` (1-based) of a run that failed with ``error_kind`` is followed by another."""
    rule = RULES.get(error_kind or "")
    if rule is None or not rule.retry or attempt > max_retries:
        return Decision(retry=False)
    return Decision(retry=True, alone=rule.alone)


def status_of(error_kind: str) -> RunStatus:
    rule = RULES.get(error_kind)
    return rule.status if rule is not None else RunStatus.FAILED


def alone_request(gpus: float, cpus: float, node_cpus: float) -> tuple[float, float]:
    """(num_gpus, num_cpus) of a retry that must run with nothing beside it.

    On GPUs: whole GPUs (``ceil(gpus_per_run)``, so a run that shared a GPU gets one of its own). Without GPUs: every
    CPU of the largest node, which no other run can share (a custom resource would have to be declared on every
    node of the cluster; the CPU count needs nothing)."""
    if gpus > 0:
        return float(max(1, math.ceil(gpus - 1e-9))), cpus
    return 0.0, max(cpus, node_cpus)
