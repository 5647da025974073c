"""Designs of experiments checked against theory: one conformance suite over every design, then the textbook cases.

The suite never trusts a design's own claims: it codes the points back (low -1, high +1, center 0) and recomputes
balance, orthogonality and the defining relation from the runs.
"""

from __future__ import annotations

import itertools
import string
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from orchestrator.designs import (
    Design,
    DesignError,
    FoldOver,
    FractionalFactorial,
    FullFactorial,
    RegularDesign,
    center_points,
    choose_fraction,
    fold_over,
    fraction_at_resolution,
    fractions,
)
from orchestrator.designs.center_points import center_value
from orchestrator.designs.regular import LETTERS, subgroup
from orchestrator.designs.two_level import TwoLevelDesign, two_level
from orchestrator.spec import parse_spec

# Two-level factors of every kind a spec allows, cycled over A, B, C, ..., so decoding is checked for each kind.
KINDS = [{"levels": [0.1, 0.5]}, {"levels": [1e-4, 1e-2], "scale": "log"}, {"levels": [16, 64]},
         {"levels": ["adam", "sgd"]}, {"levels": [False, True]}]


def make_factors(specs: dict):
    spec = {"study": "d", "experiment": "experiments.synthetic:run", "factors": specs, "response": {"metric": "loss"}}
    return parse_spec(spec, check_experiment=False).factors


def two_level_factors(k: int, extra: dict | None = None):
    return make_factors({f"x{i}": KINDS[i % len(KINDS)] for i in range(k)} | (extra or {}))


def table_fractions(max_runs: int):
    """Every fraction of the catalogue (the table and the half fractions) up to ``max_runs`` runs."""
    return [f for k in range(3, 12) for f in fractions(k) if f.generators and f.runs <= max_runs]


@dataclass
class Case:
    id: str
    factors: dict
    design: Design
    factorial_runs: int  # 2^(k-p) x combinations of crossed levels (x 2 for a fold-over)
    centers: int = 0  # center runs per combination of categorical levels

    @property
    def n_center(self) -> int:
        categorical = [len(f.levels) for f in self.factors.values() if f.kind == "categorical"]
        return self.centers * int(np.prod(categorical))

    def points(self):
        return self.design.points(self.factors)

    def regular(self) -> RegularDesign | None:
        return self.design.fraction(self.factors) if isinstance(self.design, TwoLevelDesign) else None


def cases() -> list[Case]:
    out = [
        Case("full 2^3", two_level_factors(3), FullFactorial(), 8),
        Case("full 2x3x4", make_factors({"a": {"levels": [1, 2]}, "b": {"levels": ["x", "y", "z"]},
                                          "c": {"levels": [0.1, 0.2, 0.3, 0.4]}}), FullFactorial(), 24),
    ]
    for f in table_fractions(128):
        out.append(Case(str(f), two_level_factors(f.k), FractionalFactorial(generators=f.generators), f.runs))
    for f in table_fractions(16):
        if f.resolution == 3:
            out.append(Case(f"full fold-over of {f}", two_level_factors(f.k),
                            FoldOver(FractionalFactorial(generators=f.generators)), 2 * f.runs))
    out += [
        Case("2^(7-4) III folded on D", two_level_factors(7),
             FoldOver(FractionalFactorial(runs=8), fold="x3"), 16),
        Case("2^(6-2) IV folded on A", two_level_factors(6),
             FoldOver(FractionalFactorial(runs=16), fold="x0"), 32),
        # Two categorical factors among the five: 3 center runs at each of their 4 level combinations.
        Case("2^(5-1) V + center points", two_level_factors(5),
             FractionalFactorial(resolution=5, center_points=3), 16, centers=3),
        Case("2^(4-1) IV x 3-level model", two_level_factors(4, {"model": {"levels": ["s", "m", "l"]}}),
             FractionalFactorial(runs=24), 24),
        Case("fold-over with center points", two_level_factors(5),
             FoldOver(FractionalFactorial(runs=8, center_points=2)), 16, centers=2),
    ]
    return out


CASES = cases()


def coded(case: Case, points) -> np.ndarray:
    """The factorial points over the two-level factors: -1 for levels[0], +1 for levels[1]."""
    names = two_level(case.factors)
    return np.array([[-1 if p[n] == case.factors[n].levels[0] else 1 for n in names] for p in points])


def factorial_part(case: Case):
    points = case.points()
    return points[:len(points) - case.n_center], points[len(points) - case.n_center:]


def effects(k: int) -> list[str]:
    return ["".join(c) for n in (1, 2) for c in itertools.combinations(LETTERS[:k], n)]


def column(matrix: np.ndarray, effect: str) -> np.ndarray:
    return np.prod(matrix[:, [LETTERS.index(c) for c in effect]], axis=1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
class TestConformance:
    def test_points_use_only_the_spec_levels_or_center_values(self, case):
        factorial, centers = factorial_part(case)
        for point in factorial:
            assert list(point) == list(case.factors)
            assert all(point[n] in f.levels for n, f in case.factors.items())
        for point in centers:
            for name, f in case.factors.items():
                assert point[name] == center_value(name, f) if f.kind == "numeric" else point[name] in f.levels

    def test_number_of_runs(self, case):
        factorial, centers = factorial_part(case)
        assert len(factorial) == case.factorial_runs
        assert len({tuple(p.values()) for p in factorial}) == len(factorial), "a factorial run repeats"
        assert centers == center_points(case.factors, case.centers)

    def test_levels_balanced_and_main_effects_orthogonal(self, case):
        # Every level equally often, and every pair of levels of two factors equally often: for two-level
        # factors that is "balanced columns with zero dot products"; for mixed levels, proportional frequencies.
        factorial, _ = factorial_part(case)
        for names in [*([n] for n in case.factors), *itertools.combinations(case.factors, 2)]:
            counts = Counter(tuple(p[n] for n in names) for p in factorial)
            assert len(counts) == np.prod([len(case.factors[n].levels) for n in names])
            assert len(set(counts.values())) == 1, (names, counts)

    def test_defining_relation_and_resolution_are_those_of_the_runs(self, case):
        regular = case.regular()
        names = two_level(case.factors)
        factorial, _ = factorial_part(case)
        x = coded(case, factorial)
        # A word is in the defining relation iff the product of its columns is the same in every run.
        words = ["".join(c) for n in range(1, len(names) + 1) for c in itertools.combinations(LETTERS[:len(names)], n)]
        found = {w for w in words if len(set(column(x, w))) == 1}
        claimed = set(regular.defining_relation) if regular is not None else set()
        assert found == claimed
        # Principal fractions (I = +word): this also pins the coding, levels[0] low, since an odd word's product
        # would be -1 with low and high swapped.
        assert all(set(column(x, w)) == {1} for w in found)
        if regular is not None:
            assert regular.resolution == min(map(len, found), default=None)
            assert regular.runs == case.factorial_runs // _crossed_combos(case)


TWO_LEVEL = [c for c in CASES if isinstance(c.design, TwoLevelDesign)]


@pytest.mark.parametrize("case", TWO_LEVEL, ids=[c.id for c in TWO_LEVEL])
def test_effects_are_orthogonal_unless_aliased(case):
    """Mains and two-factor interactions: dot product 0 when the alias table says clear, +-n when aliased;
    at resolution V or more (or a full factorial) every one of them is orthogonal to every other."""
    regular = case.regular()
    factorial, _ = factorial_part(case)
    x = coded(case, factorial)
    table = regular.alias_table()
    for a, b in itertools.combinations(effects(regular.k), 2):
        dot = abs(int(column(x, a) @ column(x, b)))
        assert dot == (len(x) if b in table[a] else 0), (a, b)
    if (regular.resolution or 99) >= 5:
        cols = np.column_stack([column(x, e) for e in effects(regular.k)])
        assert (cols.T @ cols == len(x) * np.eye(cols.shape[1])).all()


def _crossed_combos(case: Case) -> int:
    return int(np.prod([len(f.levels) for f in case.factors.values() if len(f.levels) != 2]))


# --- the catalogue against the textbook and against pyDOE3 --------------------------------------------------------

def chains(k: int, *groups: str) -> dict[str, list[str]]:
    """An alias table written the textbook way ("AB=CE", "AE=BC=DF"); effects not named are clear."""
    table = {e: [] for e in effects(k)}
    for group in groups:
        members = group.split("=")
        for m in members:
            table[m] = sorted((o for o in members if o != m), key=lambda e: (len(e), e))
    return table


# Montgomery, Design and Analysis of Experiments, ch. 8: the alias structures worked out for these fractions.
TEXTBOOK = [
    ({"C": "AB"}, 3, ("A=BC", "B=AC", "C=AB")),
    ({"D": "ABC"}, 4, ("AB=CD", "AC=BD", "AD=BC")),
    # I = ABCE = BCDF = ADEF (the injection-molding example).
    ({"E": "ABC", "F": "BCD"}, 6, ("AB=CE", "AC=BE", "AD=EF", "AE=BC=DF", "AF=DE", "BD=CF", "BF=CD")),
    ({"D": "AB", "E": "AC", "F": "BC", "G": "ABC"}, 7,
     ("A=BD=CE=FG", "B=AD=CF=EG", "C=AE=BF=DG", "D=AB=CG=EF", "E=AC=BG=DF", "F=BC=AG=DE", "G=CD=BE=AF")),
]


@pytest.mark.parametrize(("generators", "k", "groups"), TEXTBOOK, ids=["3-1", "4-1", "6-2", "7-4"])
def test_alias_tables_match_the_textbook(generators, k, groups):
    fraction = FractionalFactorial(generators=generators).fraction(two_level_factors(k))
    assert fraction.alias_table() == chains(k, *groups)


def test_alias_table_speaks_factor_names_and_shows_longer_aliases_on_request():
    factors = make_factors({"lr": {"levels": [1e-4, 1e-3], "scale": "log"}, "batch": {"levels": [16, 64]},
                            "wd": {"levels": [0.0, 0.1]}})
    design = FractionalFactorial(runs=4)
    assert design.alias_table(factors) == {"lr": ["batch:wd"], "batch": ["lr:wd"], "wd": ["lr:batch"],
                                           "lr:batch": ["wd"], "lr:wd": ["batch"], "batch:wd": ["lr"]}
    assert design.fraction(factors).defining_relation == ("ABC",)


def test_resolution_v_half_fraction_of_five_factors_keeps_mains_and_2fis_clear():
    design = FractionalFactorial(resolution=5)
    factors = two_level_factors(5)
    fraction = design.fraction(factors)
    assert fraction.generators == {"E": "ABCD"} and fraction.defining_relation == ("ABCDE",)
    assert len(design.points(factors)) == 16 and fraction.resolution == 5
    assert all(aliases == [] for aliases in design.alias_table(factors).values())
    # Three-factor aliases only when asked for: each 2fi is aliased with the complementary 3fi.
    assert design.alias_table(factors, max_order=3)["x0:x1"] == ["x2:x3:x4"]
    assert fraction.aliases("A", max_order=5) == ["BCDE"]


@pytest.mark.parametrize("fraction", table_fractions(16), ids=str)
def test_table_fractions_have_minimum_aberration(fraction):
    """No other choice of generators in the same runs has fewer short words (exhaustive for 4 to 16 runs; the
    32- to 128-run entries were checked the same way once, offline: minutes, too slow for the suite)."""
    base = LETTERS[:fraction.k - len(fraction.generators)]
    candidates = ["".join(c) for n in range(2, len(base) + 1) for c in itertools.combinations(base, n)]
    added = list(fraction.generators)

    def pattern(words):
        lengths = Counter(map(len, subgroup(w + a for w, a in zip(words, added))))
        return tuple(lengths[n] for n in range(1, fraction.k + 1))

    best = min(pattern(words) for words in itertools.combinations(candidates, len(added)))
    assert fraction.wordlength_pattern == best


@pytest.mark.parametrize("fraction", table_fractions(128), ids=str)
def test_pydoe3_fracfact_aliasing_agrees_with_our_alias_table(fraction):
    import pyDOE3

    groups, _ = pyDOE3.fracfact_aliasing(fraction.coded_matrix().astype(float))
    theirs = {e: [] for e in effects(fraction.k)}
    for group in groups:
        # pyDOE3 names columns a, b, c, ... including i; ours skip I.
        members = ["".join(LETTERS[string.ascii_lowercase.index(c)] for c in m) for m in group.split(" = ")]
        for m in members:
            if len(m) <= 2:
                theirs[m] = [o for o in members if o != m and len(o) <= 2]
    ours = fraction.alias_table()
    assert {e: sorted(a) for e, a in ours.items()} == {e: sorted(a) for e, a in theirs.items()}


# --- choosing a fraction ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("k", "runs", "resolution", "used"), [
    (5, 16, 5, 16), (6, 16, 4, 16), (7, 16, 4, 16), (8, 16, 4, 16),
    (4, 8, 4, 8), (5, 8, 3, 8), (6, 8, 3, 8), (7, 8, 3, 8), (3, 4, 3, 4),
    (5, 31, 5, 16), (5, 32, None, 32), (9, 100, 4, 64), (11, 20, 3, 16),
])
def test_choose_fraction_takes_the_highest_resolution_that_fits(k, runs, resolution, used):
    fraction = choose_fraction(k, runs)
    assert (fraction.resolution, fraction.runs) == (resolution, used)


@pytest.mark.parametrize(("k", "runs"), [(9, 8), (4, 4), (8, 8), (12, 4096)])
def test_choose_fraction_refuses_what_cannot_fit_and_names_k_and_runs(k, runs):
    with pytest.raises(DesignError, match=rf"k={k}|{k}$"):
        choose_fraction(k, runs)
    if k <= 11:
        with pytest.raises(DesignError, match=f"runs={runs}: the smallest is"):
            choose_fraction(k, runs)


@pytest.mark.parametrize(("k", "resolution", "runs"), [(5, 5, 16), (6, 5, 32), (8, 5, 64), (7, 4, 16), (7, 3, 8),
                                                       (2, 3, 4)])
def test_fraction_at_resolution_takes_the_fewest_runs(k, resolution, runs):
    fraction = fraction_at_resolution(k, resolution)
    assert fraction.runs == runs and (fraction.resolution or 99) >= resolution


def test_crossed_factor_shares_the_run_budget():
    factors = two_level_factors(5, {"model": {"levels": ["s", "m", "l"]}})
    assert FractionalFactorial(runs=48).fraction(factors).resolution == 5  # 16 runs per model
    with pytest.raises(DesignError, match=r"runs=5.*runs=16 shared by 3 combinations of model"):
        FractionalFactorial(runs=16).points(factors)


def test_options_and_generators_are_checked():
    with pytest.raises(DesignError, match="at most one of runs, resolution, generators"):
        FractionalFactorial(runs=8, resolution=4)
    with pytest.raises(DesignError, match="must define E in order; got F"):
        FractionalFactorial(generators={"F": "ABCD"}).points(two_level_factors(5))
    with pytest.raises(DesignError, match="E=AE: must be a product of at least two distinct base letters ABCD"):
        FractionalFactorial(generators={"E": "AE"}).points(two_level_factors(5))
    with pytest.raises(DesignError, match="at least one factor with exactly two levels"):
        FractionalFactorial().points(make_factors({"b": {"levels": ["x", "y", "z"]}}))


# --- fold-over ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [f for f in table_fractions(16) if f.resolution == 3], ids=str)
def test_full_fold_over_of_resolution_iii_is_resolution_iv(fraction):
    new, combined = fold_over(fraction)
    assert (new == -fraction.coded_matrix()).all()
    assert combined.resolution == (None if fraction.k == 3 else 4)  # the 2^(3-1) folds back into the full 2^3
    assert combined.runs == 2 * fraction.runs
    assert combined.defining_relation == tuple(w for w in fraction.defining_relation if len(w) % 2 == 0)
    assert all(aliases == [] for e, aliases in combined.alias_table().items() if len(e) == 1)


def test_single_factor_fold_over_clears_that_factor_and_its_interactions():
    factors = two_level_factors(7)
    first = FractionalFactorial(runs=8)
    design = FoldOver(first, fold="x3")  # D in 2^(7-4) III: D = AB = CG = EF before
    assert first.alias_table(factors)["x3"] == ["x0:x1", "x2:x6", "x4:x5"]
    table = design.fraction(factors).alias_table()
    assert table["D"] == [] and all(table[e] == [] for e in table if "D" in e)
    assert table["A"] == ["CE", "FG"]  # A = BD is gone: BD holds D; the aliases without D stay
    assert design.points(factors) == first.points(factors) + design.new_points(factors)
    assert all(new["x3"] != old["x3"] for new, old in zip(design.new_points(factors), first.points(factors)))


def test_fold_over_that_would_repeat_the_runs_is_refused():
    factors = two_level_factors(6)
    # Every word of the 2^(6-2) IV has even length: switching all signs gives the same 16 runs back.
    with pytest.raises(DesignError, match="reproduces the design's own runs.*fold a single factor instead"):
        FoldOver(FractionalFactorial(runs=16)).points(factors)
    with pytest.raises(DesignError, match="fold: 'nope' is not a two-level factor"):
        FoldOver(FractionalFactorial(runs=16), fold="nope").points(factors)


# --- center points and replicates ---------------------------------------------------------------------------------

def test_center_values_by_scale_and_type():
    factors = make_factors({"w": {"levels": [0.1, 0.5]}, "lr": {"levels": [1e-4, 1e-2], "scale": "log"},
                            "bs": {"levels": [16, 128], "scale": "log"}, "layers": {"levels": [2, 4, 6]},
                            "opt": {"levels": ["adam", "sgd"]}})
    points = center_points(factors, 2)
    assert len(points) == 4 and [p["opt"] for p in points] == ["adam", "adam", "sgd", "sgd"]
    assert points[0]["w"] == pytest.approx(0.3) and points[0]["lr"] == pytest.approx(1e-3)
    assert points[0]["bs"] == 45 and points[0]["layers"] == 4  # sqrt(16 * 128) = 45.25, rounded: an integer run
    assert center_points(factors, 0) == []


def test_center_points_refused_where_there_is_no_center():
    with pytest.raises(DesignError, match="factors.layers: no integer lies between 2 and 3"):
        center_points(make_factors({"layers": {"levels": [2, 3]}}), 1)
    with pytest.raises(DesignError, match="need at least one numeric factor"):
        center_points(make_factors({"opt": {"levels": ["adam", "sgd"]}}), 1)
