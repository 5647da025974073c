"""The full factorial and how the grid strategy cuts it into waves."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from orchestrator.cells import cell_key
from orchestrator.designs import FractionalFactorial, FullFactorial
from orchestrator.errors import SpecError
from orchestrator.spec import parse_spec
from orchestrator.strategies import Grid, create_strategy
from tests.conftest import synthetic_spec


def make(factors: dict, **extra):
    spec = {"study": "d", "experiment": "experiments.synthetic:run", "factors": factors,
            "response": {"metric": "loss"}, **extra}
    return parse_spec(spec)


def test_full_factorial_mixed_levels_has_every_combination_once():
    spec = make({"a": {"levels": [1, 2]}, "b": {"levels": ["x", "y", "z"]}, "c": {"levels": [0.1, 0.2, 0.3, 0.4]}})
    points = FullFactorial().points(spec.factors)
    assert len(points) == 2 * 3 * 4
    combos = {tuple(p.values()) for p in points}
    assert combos == set(itertools.product([1, 2], ["x", "y", "z"], [0.1, 0.2, 0.3, 0.4]))


@pytest.mark.parametrize("design", [FullFactorial, FractionalFactorial])
def test_every_design_gives_points_over_exactly_the_factors(design):
    spec = make({"a": {"levels": [1, 2]}, "b": {"levels": ["x", "y", "z"]}})
    points = design().points(spec.factors)
    assert points and all(set(p) == {"a", "b"} for p in points)
    for point in points:
        assert point["a"] in (1, 2) and point["b"] in ("x", "y", "z")


def test_cell_keys_are_unique_stable_and_depend_on_study_levels_seed():
    spec = parse_spec(synthetic_spec())
    cells = Grid(spec).cells()
    assert len(cells) == 2 * 3 * 2  # levels x seeds
    assert len({c.key for c in cells}) == len(cells)
    # The same key from a fresh computation (another process would do exactly this).
    assert [c.key for c in Grid(parse_spec(synthetic_spec())).cells()] == [c.key for c in cells]
    assert cell_key("s", {"lr": 0.001}, 0) == cell_key("s", {"lr": 1e-3}, 0)
    assert cell_key("s", {"lr": 0.001}, 0) != cell_key("s", {"lr": 0.001}, 1)
    assert cell_key("s", {"lr": 0.001}, 0) != cell_key("t", {"lr": 0.001}, 0)
    assert len(cell_key("s", {"a": 1}, 0)) == 24


@pytest.mark.parametrize(("runs_per_wave", "sizes"), [(4, [4, 4, 4]), (5, [5, 5, 2]), (12, [12]), (20, [12])])
def test_waves_hold_at_most_runs_per_wave_and_cover_every_cell_once(runs_per_wave, sizes):
    grid = Grid(parse_spec(synthetic_spec()))
    waves = grid.waves(runs_per_wave)
    assert [len(w) for w in waves] == sizes
    keys = [c.key for w in waves for c in w]
    assert sorted(keys) == sorted(c.key for c in grid.cells())


def test_two_level_factorial_in_two_waves_is_blocked_on_the_highest_interaction():
    spec = make({"a": {"levels": [0, 1]}, "b": {"levels": [0, 1]}, "c": {"levels": [0, 1]}})
    first, second = Grid(spec).waves(4)
    # Each wave is a half fraction with defining relation I = ABC: balanced in every main effect.
    for wave in (first, second):
        assert {sum(c.levels.values()) % 2 for c in wave} in ({0}, {1})
        for factor in "abc":
            assert Counter(c.levels[factor] for c in wave) == {0: 2, 1: 2}


def test_next_wave_skips_known_cells_and_ends():
    grid = Grid(parse_spec(synthetic_spec()))
    known: set[str] = set()
    numbers = []
    while (plan := grid.next_wave(known, 4)) is not None:
        known |= {c.key for c in plan.cells}
        numbers.append(plan.reason)
    assert numbers == [f"full factorial, block {i} of 3" for i in (1, 2, 3)]
    assert len(known) == grid.planned_runs() == 12


@pytest.mark.parametrize(("strategy", "message"), [
    ({"mode": "grid", "max_runs": 10}, "strategy.max_runs: the full factorial x seeds needs 12 runs; raise max_runs or drop levels; got 10"),
    ({"mode": "grid", "max_waves": 2, "runs_per_wave": 4}, "strategy.max_waves: 12 runs at 4 per wave need 3 waves; raise max_waves or runs_per_wave; got 2"),
])
def test_plan_over_budget_is_refused(strategy, message):
    spec = parse_spec(synthetic_spec(strategy=strategy))
    with pytest.raises(SpecError) as info:
        create_strategy(spec).check_budget(4)
    assert str(info.value) == message


def test_an_auto_study_shows_its_mode_by_its_stored_design_not_by_its_wording():
    """The dashboard and analyze read which mode an "auto" study ran in from the design stored with its first wave
    (a grid's blocks, greedy's path): a reason string is prose, free to change."""
    import pandas as pd

    from dashboard.data import Study
    from dashboard.effects import default_scope
    from orchestrator.wave_kinds import GRID, resolved_mode

    spec = parse_spec(synthetic_spec())
    plan = Grid(spec).next_wave(set(), 4)
    assert plan.design == GRID and resolved_mode("auto", plan.design) == "grid"
    assert resolved_mode("auto", "fractional_factorial") == "waves" == resolved_mode("auto", None)
    assert resolved_mode("greedy", None) == "greedy"

    def study(design: str, reason: str) -> Study:
        waves = pd.DataFrame({"number": [1], "design": [design], "reason": [reason]})
        return Study("s", {}, ["x"], "loss", "minimize", "auto", None, None, waves, pd.DataFrame({"wave": []}))

    assert default_scope(study(GRID, "the whole grid, block one")) == "all"  # any wording
    assert default_scope(study("greedy", "start point")) == "all"
    assert default_scope(study("full_factorial", "full factorial, block 1 of 2")) == "latest"  # waves' own screen
