"""bench/search_quality.py: batch peers really ask 16 before telling any, scoring reads the right runs."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.surfaces import get_surface

_PATH = Path(__file__).resolve().parents[1] / "bench" / "search_quality.py"
_spec = importlib.util.spec_from_file_location("bench_search_quality", _PATH)
sq = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sq  # dataclasses look their module up there
_spec.loader.exec_module(sq)


def test_checkpoints_and_waves_to_reach():
    assert sq.checkpoints(64) == [16, 32, 48, 64]
    assert sq.checkpoints(40) == [16, 32, 40]
    assert sq.waves_to_reach([0.5, 0.2, 0.1, 0.1], 0.2) == "2"
    assert sq.waves_to_reach([0.5, 0.3, 0.25, 0.21], 0.2) == ">4"
    assert sq.waves_to_reach([0.5], None) == "n/a"
    assert sq._pair("a:b^2") == ("a", "b") and sq._pair("opt[x]:b") == ("opt", "b")


def test_regret_of_best_recommends_the_best_observed_run():
    surface = get_surface("bowl")
    points = [{"x": 0.0, "y": 0.0, "z": 0.0}, {"x": 1.5, "y": 1.0, "z": 0.0}]
    assert sq.regret_of_best(surface, points, [0.1, 5.0]) == surface.regret(points[0])  # observed, not true value
    assert sq.regret_of_best(surface, [], []) == math.inf


@pytest.mark.parametrize(("method", "budget"), [("tpe_batch", 40), ("gp_batch", 34), ("random", 40)])
def test_optuna_batch_peers_ask_16_before_telling_any(method, budget, monkeypatch, one_thread):
    import optuna
    from optuna.trial import TrialState

    surface = get_surface("llm_finetune")
    told_when_asked = []
    ask = optuna.Study.ask

    def spy(self, *args, **kwargs):
        told_when_asked.append(len(self.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", spy)
    found = sq.METHODS[method].search(surface, budget, 0)
    assert found.batches == [16, 16, budget - 32] and len(found.points) == len(found.values) == budget
    # Every trial of a batch was asked while exactly the earlier batches were told.
    assert told_when_asked == [0] * 16 + [16] * 16 + [32] * (budget - 32)
    # Integer factors are integers, log factors stay in their boxes.
    assert all(isinstance(p["batch_size"], int) and isinstance(p["lora_rank"], int) for p in found.points)
    assert all(surface.factors["learning_rate"].contains(p["learning_rate"]) for p in found.points)


def test_sequential_peers_ask_one_at_a_time():
    found = sq.METHODS["tpe_seq"].search(get_surface("screening"), 20, 1)
    assert found.batches == [1] * 20


def test_ax_peer_asks_16_per_batch_after_16_sobol(one_thread):
    pytest.importorskip("ax", reason="the Ax peer needs the bench extra: pip install -e '.[bench]'")
    surface = get_surface("llm_finetune")
    found = sq.search_ax_batch(surface, 48, 0)
    assert found.batches == [16, 16, 16]  # the first model batch too, not 1 (see current_generator_run_limit)
    assert all(isinstance(p["batch_size"], int) and isinstance(p["lora_alpha"], int) for p in found.points)
    assert len({tuple(sorted(p.items())) for p in found.points}) == 48


def test_ax_generation_strategy_is_sobol_then_botorch_without_cap():
    pytest.importorskip("ax", reason="the Ax peer needs the bench extra: pip install -e '.[bench]'")
    strategy = sq.ax_generation_strategy(3)
    first, second = strategy._nodes
    assert [spec.generator_enum.name for spec in first.generator_specs] == ["SOBOL"]
    assert [spec.generator_enum.name for spec in second.generator_specs] == ["BOTORCH_MODULAR"]
    assert not second.transition_criteria and not getattr(second, "pausing_criteria", None)


def _runs(points, values, design, wave):
    return [{"wave": wave, "design": design, "metric.y": v, **{f"param.{k}": x for k, x in p.items()}}
            for p, v in zip(points, values)]


def test_designed_pairs_use_the_designed_waves_only():
    surface = get_surface("screening")
    rest = {"e": 0.0, "f": 0.0, "g": 0.0}
    corners = [dict(zip("abcd", signs), **rest) for signs in itertools.product((-1.0, 1.0), repeat=4)]
    designed = _runs(corners, [surface.sample(p, 0) for p in corners], "full_factorial", 1)
    assert sq.designed_pairs(surface, designed) == {frozenset("ab"), frozenset("cd")}
    # A proposed wave whose values would wreck the fit is left out of it.
    proposed = [dict(zip("abcdefg", (0.3, -0.2, 0.1, 0.5, 0.9, -0.9, 0.0)))] * 4
    wrecked = _runs(proposed, [1e6, -1e6, 1e6, -1e6], "model", 2)
    assert sq.designed_pairs(surface, designed + wrecked) == {frozenset("ab"), frozenset("cd")}
    assert sq.designed_pairs(surface, wrecked) == frozenset()
    # Runs the fit refuses (one cell) give no pairs rather than an error.
    assert sq.designed_pairs(surface, designed[:1]) == frozenset()


def test_surface_pairs_take_every_run():
    # 80 scattered runs of screening (no design): the second-order fit (36 terms) over all of them names a:b and c:d, which the
    # designed-waves fit cannot see in runs it leaves out.
    surface = get_surface("screening")
    rng = np.random.default_rng(3)
    points = [{n: float(v) for n, v in zip("abcdefg", rng.uniform(-1, 1, 7))} for _ in range(80)]
    runs = _runs(points, [surface.sample(p, i) for i, p in enumerate(points)], "model", 1)
    assert sq.surface_pairs(surface, runs) == {frozenset("ab"), frozenset("cd")}
    assert sq.designed_pairs(surface, runs) == frozenset()
    assert sq.surface_pairs(surface, runs[:5]) == frozenset()  # too few runs for the model: no pairs, no error


def test_main_prints_every_requested_row(capsys, monkeypatch):
    # In-process (--jobs 0) the command would pin this whole test process to one thread and import Ax.
    monkeypatch.setattr(sq, "_worker_init", lambda: None)
    monkeypatch.setattr(sq, "_limit_threads", lambda: None)
    sq.main(["--reps", "1", "--budget", "16", "--surfaces", "bowl", "--methods", "waves,random,greedy",
             "--fanova", "none", "--jobs", "0"])
    out = capsys.readouterr().out
    assert "bowl: 3 factors" in out
    for label in ("waves (surface fit, all runs)", "pairs of its designed waves", "random search", "greedy (1 GPU)"):
        assert label in out
    assert "references, not equal-parallelism peers" in out
    assert "ax_batch was not run" in out
    with pytest.raises(SystemExit, match="unknown methods"):
        sq.main(["--methods", "optuna"])
