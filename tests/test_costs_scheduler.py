"""The run-time predictions (costs.py) and the driver's queue (scheduler.py), without Ray."""

from __future__ import annotations

import math
import random

import pytest

from orchestrator.cells import make_cell
from orchestrator.execution import scheduler as scheduler_module
from orchestrator.execution.costs import CostModel
from orchestrator.execution.events import Job
from orchestrator.execution.scheduler import Scheduler
from orchestrator.spec import parse_spec

SIZES = {"Qwen/Qwen3.5-0.8B": 0.8, "Qwen/Qwen3.5-2B": 2.0, "Qwen/Qwen3.5-4B": 4.0, "Qwen/Qwen3.5-9B": 9.0}


def spec(factors: dict, **fixed):
    return parse_spec({"study": "c", "experiment": "experiments.synthetic:run", "fixed": fixed, "factors": factors,
                       "response": {"metric": "loss"}}, check_experiment=False)


def test_before_any_run_finished_the_model_size_ranks_runs():
    s = spec({"model": {"levels": list(SIZES)}, "lr": {"levels": [1e-4, 1e-3], "scale": "log"}})
    costs = CostModel(s)
    assert costs.source == "model size"
    ranked = sorted(SIZES, key=lambda m: -costs.predict({"model": m, "lr": 1e-4}))
    assert ranked == ["Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-2B", "Qwen/Qwen3.5-0.8B"]
    # Full fine-tuning of the same model costs more than LoRA.
    assert costs.predict({"model": "Qwen/Qwen3.5-2B", "method": "full"}) > costs.predict({"model": "Qwen/Qwen3.5-2B"})
    plain = CostModel(spec({"x": {"levels": [1, 2]}}))
    assert plain.source == "plan order" and plain.predict({"x": 1}) == plain.predict({"x": 2}) == 1.0


def test_the_fit_learns_which_factor_drives_run_time():
    s = spec({"batch": {"levels": [8, 16, 32, 64], "scale": "log"}, "lr": {"levels": [1e-4, 1e-3], "scale": "log"},
              "opt": {"levels": ["adam", "sgd"]}})
    rng = random.Random(0)
    runs = []
    for batch in (8, 16, 32, 64):
        for lr in (1e-4, 1e-3):
            for opt in ("adam", "sgd"):
                wall = 0.5 * batch * (1.5 if opt == "adam" else 1.0) * math.exp(rng.gauss(0, 0.05))
                runs.append({"status": "COMPLETE", "wall_s": wall, "param.batch": batch, "param.lr": lr,
                             "param.opt": opt})
    runs.append({"status": "FAILED", "wall_s": 1e6, "param.batch": 8, "param.lr": 1e-4, "param.opt": "sgd"})
    costs = CostModel(s, runs)
    assert costs.source == "fit on 16 finished runs"  # the FAILED run is not a duration
    assert costs.predict({"batch": 64, "lr": 1e-4, "opt": "adam"}) == pytest.approx(48, rel=0.15)
    assert costs.predict({"batch": 8, "lr": 1e-3, "opt": "sgd"}) == pytest.approx(4, rel=0.15)
    # Too few runs for the features: no fit.
    assert CostModel(s, runs[:3]).source == "plan order"


class FakeAttempts:
    """Counts what the scheduler submits; each attempt holds its job's GPUs (a whole one when alone)."""

    def __init__(self):
        self.live: dict[str, tuple[float, float]] = {}
        self.submitted: list[tuple[str, int, bool]] = []

    def request(self, job, alone):
        return (1.0 if alone else job.gpus), 1.0

    def submit(self, job, number, alone):
        self.live[job.cell.key] = self.request(job, alone)
        self.submitted.append((job.cell.key, number, alone))

    def used(self):
        return sum(g for g, _ in self.live.values()), sum(c for _, c in self.live.values())

    def end(self, key):
        del self.live[key]


def job(name: str, gpus: float = 1.0) -> Job:
    return Job(make_cell("c", {"name": name}, 0), {}, "/tmp", gpus)


def test_the_queue_starts_the_longest_first_and_never_overfills():
    attempts = FakeAttempts()
    sched = Scheduler(attempts, (2.0, 64.0))
    for name, predicted in (("a", 1.0), ("b", 5.0), ("c", 3.0), ("d", 4.0)):
        sched.add(job(name), predicted)
    assert sched.fill() == 2
    names = {job(n).cell.key: n for n in "abcd"}
    assert [names[k] for k, _, _ in attempts.submitted] == ["b", "d"]
    attempts.end(job("b").cell.key)
    # A retry goes first, even when predicted short.
    sched.add(job("b"), 0.0, number=2)
    sched.fill()
    assert [(names[k], n) for k, n, _ in attempts.submitted] == [("b", 1), ("d", 1), ("b", 2)]
    # Re-ranking by a new prediction: a now ahead of c.
    sched.reorder(lambda j: {"a": 10.0, "c": 2.0}[names[j.cell.key]])
    attempts.end(job("d").cell.key)
    sched.fill()
    assert names[attempts.submitted[-1][0]] == "a"


def test_a_whole_gpu_retry_lets_smaller_runs_past_and_idle_time_is_integrated(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    attempts = FakeAttempts()
    sched = Scheduler(attempts, (1.0, 64.0))
    sched.add(job("small1", 0.5), 1.0)
    sched.fill()
    sched.add(job("big"), 0.0, number=2, alone=True)  # needs a whole GPU: waits
    sched.add(job("small2", 0.5), 1.0)
    sched.fill()
    assert [k for k, _, _ in attempts.submitted] == [job("small1").cell.key, job("small2").cell.key]
    assert [q.job.cell.key for q in sched.queue] == [job("big").cell.key]
    # Nothing free for 10 s; then small1 ends and 0.5 GPU is free for 6 s, counted at that state although small2
    # ended at the very end of the interval (as when an attempt's end is what ray.wait returns on).
    clock[0] += 10
    sched.tick()
    attempts.end(job("small1").cell.key)
    clock[0] += 4
    free_before = sched.free()
    attempts.end(job("small2").cell.key)
    clock[0] += 2
    sched.tick(free_before)
    assert sched.take_idle() == pytest.approx(0.5 * 6)
    assert sched.unit == "GPU" and sched.total == 1.0
