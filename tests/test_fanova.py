"""orchestrator.analysis.fanova: exact per-tree functional ANOVA against brute force on the grid, detection of a
known interaction, the Freedman-Lane pair floor on additive surfaces and the noise floors on pure noise (rates over
seeds), pairs a one-factor-at-a-time path cannot identify, failed runs, binning, categoricals and input errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import FactorInfo, infer_factors
from orchestrator.analysis.fanova import decompose
from orchestrator.analysis.forest_marginals import fit_forest, forest_shares, tree_components

# Cheap settings for the rate tests: 20 permutations is the fewest for which p can fall below 0.05 (p = 1/21).
FAST = {"n_trees": 16, "n_bootstrap": 0, "n_permutations": 20, "look_ahead": False}


def uniform_runs(seed: int, n: int = 80, k: int = 5, surface: str = "noise") -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, k))
    noise = rng.normal(size=n)
    y = {"interaction": 3 * x[:, 0] * x[:, 1] + 0.5 * noise,
         "additive": 3 * x[:, 0] + 6 * x[:, 1] ** 2 + 0.5 * noise,
         "noise": noise}[surface]
    names = [f"x{i + 1}" for i in range(k)]
    df = pd.DataFrame(x, columns=names).assign(y=y)
    return df, infer_factors(df, names)


def called(result) -> list[str]:
    return [t.term for t in result.terms if t.verdict in ("effect", "interaction")]


# --- 1. exactness -------------------------------------------------------------------------------------------------

def test_tree_components_equal_brute_force_on_the_grid():
    rng = np.random.default_rng(3)
    n_levels = np.array([3, 5, 2, 4, 3])
    codes = np.column_stack([rng.integers(0, n, 70) for n in n_levels])
    y = codes[:, 0] * codes[:, 1] + np.sin(codes[:, 3]) * codes[:, 4] + rng.normal(size=70) * 0.3
    categorical = np.array([False, True, False, False, True])
    forest = fit_forest(codes, y, categorical, n_trees=6, seed=0)
    total, v_main, v_pair = tree_components(forest, n_levels)

    points = np.array(list(itertools.product(*(range(n) for n in n_levels))), dtype=float)
    k = len(n_levels)
    ratios_main, ratios_pair = [], []
    for t, tree in enumerate(forest):
        f = tree.predict(points).reshape(*n_levels)  # the tree on every grid point, uniform weights
        f0 = f.mean()
        assert total[t] == pytest.approx(((f - f0) ** 2).mean(), abs=1e-10)
        marg = [f.mean(axis=tuple(a for a in range(k) if a != i)) for i in range(k)]
        for i in range(k):
            assert v_main[t, i] == pytest.approx(((marg[i] - f0) ** 2).mean(), abs=1e-10)
        for i, j in itertools.combinations(range(k), 2):
            fij = f.mean(axis=tuple(a for a in range(k) if a not in (i, j)))
            expected = ((fij - marg[i][:, None] - marg[j][None, :] + f0) ** 2).mean()
            assert v_pair[t, i, j] == pytest.approx(expected, abs=1e-10)
            assert v_pair[t, j, i] == pytest.approx(expected, abs=1e-10)
        ratios_main.append([v_main[t, i] / total[t] for i in range(k)])
        ratios_pair.append(v_pair[t] / total[t])
    assert (total > 0).all() and v_pair[:, 0, 1].max() > 0.1 * total.max()  # a real, non-trivial test
    main, pair = forest_shares(forest, n_levels)
    np.testing.assert_allclose(main, np.mean(ratios_main, axis=0), atol=1e-10)
    np.testing.assert_allclose(pair, np.mean(ratios_pair, axis=0), atol=1e-10)
    # Mains and pairs of an exact functional ANOVA never exceed the total.
    assert (v_main.sum(axis=1) + v_pair.sum(axis=(1, 2)) / 2 <= total * (1 + 1e-12)).all()


# --- 2-4. detection and floors --------------------------------------------------------------------------------------

def test_a_product_surface_is_an_interaction_and_no_other_pair_is():
    df, factors = uniform_runs(11, surface="interaction")
    result = decompose(df, factors, "y", n_bootstrap=40, n_permutations=39, seed=1)
    pair = result.term("x1:x2")
    assert pair.verdict == "interaction" and pair.p_value < 0.05
    assert pair.share > result.floor_pair == pair.floor
    assert 0 < pair.ci_low <= pair.share <= pair.ci_high
    assert pair.ci_low > max(t.share for t in result.terms if t.kind == "pair" and t.term != "x1:x2")
    assert [t.term for t in result.terms if t.verdict == "interaction"] == ["x1:x2"]
    assert result.term("x3").verdict == "inconclusive"
    shares = sum(t.share for t in result.terms) + result.rest_share
    assert shares == pytest.approx(1.0)


def test_additive_surfaces_are_not_called_interactions():
    """The Freedman-Lane floor: a forest fitting 3 x1 + 6 x2^2 invents pair share; the floor must hold it."""
    false_pairs, both_mains = 0, 0
    for seed in range(20):
        df, factors = uniform_runs(100 + seed, surface="additive")
        result = decompose(df, factors, "y", seed=seed, **FAST)
        false_pairs += any(t.verdict == "interaction" for t in result.terms)
        both_mains += result.term("x1").verdict == result.term("x2").verdict == "effect"
        assert result.term("x1:x2").share > 0.02  # the made-up share the floor has to cover
    # Measured here: 1 of 20 seeds with a false pair, both mains in 19 of 20. With the defaults (64 trees, 99
    # permutations): 0 of 60 seeds with a false pair, both mains in 58 of 60.
    assert false_pairs <= 2, false_pairs
    assert both_mains >= 18, both_mains


def test_pure_noise_is_mostly_inconclusive():
    with_calls = 0
    for seed in range(20):
        df, factors = uniform_runs(200 + seed, surface="noise")
        with_calls += bool(called(decompose(df, factors, "y", seed=seed, **FAST)))
    # Two family-wise tests at 0.05: at most ~10% expected. Measured here: 1 of 20; with the defaults 6 of 60
    # (a main in 5, a pair in 1).
    assert with_calls <= 3, with_calls


def test_an_inconclusive_main_says_how_many_runs_would_decide_it():
    """The look-ahead simulates the runs' own additive effects and noise at more runs; run that many new runs of the
    same process and the main is called. A factor with no effect is not given a count."""
    def runs(seed, n):
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, (n, 5))
        df = pd.DataFrame(x, columns=[f"x{i + 1}" for i in range(5)]).assign(y=0.8 * x[:, 0] + rng.normal(size=n))
        return df, infer_factors(df, list(df.columns[:5]))

    cheap = {"n_trees": 16, "n_bootstrap": 0, "n_permutations": 20}
    df, factors = runs(0, 30)
    result = decompose(df, factors, "y", seed=0, **cheap)
    x1 = result.term("x1")
    assert x1.verdict == "inconclusive" and x1.share < result.floor_main
    assert x1.runs_to_decide in (45, 60, 90, 120), x1
    assert x1.note.startswith(f"about {x1.runs_to_decide} runs in all ({x1.runs_to_decide - 30} more)")
    inert = [t for t in result.terms if t.kind == "main" and t.term != "x1"]
    assert sum(t.runs_to_decide is None for t in inert) >= 3, inert
    assert all("not called in most simulations" in t.note for t in inert if t.runs_to_decide is None)

    more, _ = runs(50, x1.runs_to_decide)
    later = decompose(more, factors, "y", seed=0, look_ahead=False, **cheap)
    assert later.term("x1").verdict == "effect", later.term("x1")
    assert decompose(df, factors, "y", seed=0, look_ahead=False, **cheap).term("x1").runs_to_decide is None


# --- 5. greedy paths ----------------------------------------------------------------------------------------------

def one_factor_at_a_time(levels: dict[str, list]) -> pd.DataFrame:
    """A greedy path: the start point three times, then each factor through its levels, keeping the best."""
    current = {name: values[0] for name, values in levels.items()}
    rows = [dict(current) for _ in range(3)]
    for name, values in levels.items():
        for value in values[1:]:
            rows.append(current | {name: value})
        current = current | {name: values[-1]}
    df = pd.DataFrame(rows)
    rng = np.random.default_rng(0)
    return df.assign(loss=df["lr"].map(np.log10) + df["rank"] / 8 + rng.normal(0, 0.1, len(df)))


def test_pairs_of_a_one_factor_at_a_time_path_are_not_identifiable():
    levels = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "rank": [4, 8, 16, 32], "warmup": [0.0, 0.05, 0.1],
              "opt": ["adam", "sgd", "lion"]}
    df = one_factor_at_a_time(levels)
    factors = {"lr": FactorInfo(tuple(levels["lr"]), "log"), "rank": FactorInfo(tuple(levels["rank"])),
               "warmup": FactorInfo(tuple(levels["warmup"])),
               "opt": FactorInfo(tuple(levels["opt"]), kind="categorical")}
    result = decompose(df, factors, "loss", n_bootstrap=5, n_permutations=20, n_trees=16)
    pairs = [t for t in result.terms if t.kind == "pair"]
    assert len(pairs) == 6
    for pair in pairs:
        assert pair.verdict == "not identifiable"
        assert np.isnan(pair.share) and np.isnan(pair.p_value)
        assert "never vary jointly" in pair.note and "2 x 2" in pair.note
    assert any("cannot identify" in note for note in result.notes)
    assert np.isnan(result.floor_pair)
    # Completing one square makes that pair (and only it) identifiable.
    corner = df.iloc[[0]].assign(rank=8)  # (lr low, rank 8): the path has (low, 4), (high, 4) and (high, 8)
    result = decompose(pd.concat([df, corner, corner], ignore_index=True), factors, "loss", n_bootstrap=0, n_permutations=20, n_trees=16)
    assert result.term("lr:rank").verdict != "not identifiable"
    assert result.term("lr:warmup").verdict == "not identifiable"


def test_an_interaction_aliased_with_a_main_effect_is_not_identifiable():
    # The half fraction C = A x B (twice): A and B vary jointly, but their interaction is C's main effect.
    half = pd.DataFrame({"a": [0, 1, 0, 1], "b": [0, 0, 1, 1], "c": [1, 0, 0, 1]})
    df = pd.concat([half, half], ignore_index=True).assign(y=[1.0, 2.0, 3.0, 5.0, 1.1, 2.1, 2.9, 5.2])
    result = decompose(df, infer_factors(df, "abc"), "y", n_bootstrap=0, n_permutations=0, n_trees=8)
    note = result.term("a:b").note
    assert result.term("a:b").verdict == "not identifiable"
    assert "cannot be separated" in note and "main effects" in note


# --- 6. runs, bins, categoricals, results ---------------------------------------------------------------------------

def test_failed_runs_follow_the_fit_effects_rule():
    df, factors = uniform_runs(5, n=40, k=3, surface="additive")
    df["status"] = ["COMPLETE"] * 32 + ["DIVERGED"] * 3 + ["FAILED"] * 2 + ["OOM"] + ["COMPLETE"] * 2
    df.loc[38, "y"] = np.nan
    kw = {"n_bootstrap": 0, "n_permutations": 0, "n_trees": 8}
    result = decompose(df, factors, "y", **kw)
    assert (result.n_runs, result.n_used, result.n_diverged, result.n_imputed) == (40, 33, 3, 0)
    assert result.excluded == {"DIVERGED": 3, "FAILED": 2, "OOM": 1}
    assert result.n_missing_response == 1
    assert any("3 DIVERGED run(s) excluded" in n for n in result.notes)
    assert any("n_permutations=0" in n for n in result.notes)
    assert all(t.verdict in ("inconclusive", "not identifiable") for t in result.terms)
    imputed = decompose(df, factors, "y", diverged_value=10.0, **kw)
    assert (imputed.n_used, imputed.n_imputed) == (36, 3)


def test_continuous_factors_are_quantile_binned_in_log_space_for_log_scale():
    rng = np.random.default_rng(2)
    lr = 10 ** rng.uniform(-5, -1, 60)
    df = pd.DataFrame({"lr": lr, "wd": rng.uniform(0, 0.1, 60), "rank": rng.choice([4, 8, 16], 60)})
    df["y"] = np.log10(df["lr"]) + rng.normal(0, 0.1, 60)
    factors = infer_factors(df, ["lr", "wd", "rank"], log=["lr"])
    result = decompose(df, factors, "y", max_bins=6, n_bootstrap=0, n_permutations=0, n_trees=8)
    inner = np.exp(np.quantile(np.log(lr), np.linspace(0, 1, 7))[1:-1])
    bins = np.array(result.bins["lr"])
    assert bins.shape == (6, 2)
    np.testing.assert_allclose(bins[1:, 0], inner, rtol=1e-12)  # geometric, not arithmetic, interpolation
    arithmetic = np.quantile(lr, np.linspace(0, 1, 7))[1:-1]
    assert np.abs(bins[1:, 0] / arithmetic - 1).max() > 1e-6
    assert bins[0, 0] == lr.min() and bins[-1, 1] == lr.max()
    assert len(result.bins["wd"]) == 6 and result.bins["rank"] == [4.0, 8.0, 16.0]
    assert any("quantile bins" in n and "lr, wd" in n for n in result.notes)
    assert result.term("lr").share > 0.8


def test_categorical_factors_and_json():
    rng = np.random.default_rng(4)
    n = 60
    # Levels declared in an order unrelated to their effect (the forest reorders them per fit).
    opt = rng.choice(["adam", "lion", "sgd", "adafactor"], n)
    effect = {"adam": 0.0, "lion": 2.0, "sgd": -2.0, "adafactor": 1.0}
    df = pd.DataFrame({"opt": opt, "x": rng.uniform(0, 1, n), "z": rng.uniform(0, 1, n)})
    df["y"] = df["opt"].map(effect) + rng.normal(0, 0.3, n)
    factors = {"opt": FactorInfo(("adam", "sgd", "lion", "adafactor"), kind="categorical"),
               "x": FactorInfo((0.0, 1.0)), "z": FactorInfo((0.0, 1.0))}
    result = decompose(df, factors, "y", n_bootstrap=20, n_permutations=20, n_trees=16)
    assert result.bins["opt"] == ["adam", "sgd", "lion", "adafactor"]
    assert result.term("opt").verdict == "effect" and result.term("opt").share > 0.7
    assert result.term("x").verdict == "inconclusive"
    record = json.loads(json.dumps(result.to_dict()))
    assert record["terms"][0]["term"] == "opt" and record["bins"]["opt"][0] == "adam"
    frame = result.to_frame()
    assert list(frame.columns[:3]) == ["term", "kind", "share"] and len(frame) == 6
    again = decompose(df, factors, "y", n_bootstrap=20, n_permutations=20, n_trees=16)
    assert again == result  # a fixed seed gives the same answer


def test_an_unused_categorical_level_is_left_off_the_grid():
    df, factors = uniform_runs(8, n=30, k=2, surface="additive")
    df["opt"] = np.where(np.arange(30) % 2 == 0, "adam", "sgd")
    factors["opt"] = FactorInfo(("adam", "lion", "sgd"), kind="categorical")
    result = decompose(df, factors, "y", n_bootstrap=0, n_permutations=0, n_trees=8)
    assert result.bins["opt"] == ["adam", "sgd"]


# --- 7. errors ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "kwargs", "message"), [
    ("few", {}, "needs at least 2 * factors + 2 = 8 used runs"),
    ("constant_factor", {}, "factor 'x2' has a single level"),
    ("constant_response", {}, "response 'y' is constant"),
    ("bad_category", {}, "not among its levels"),
    (None, {"n_permutations": 10}, "n_permutations must be 0 (no noise floors) or >= 20"),
    (None, {"alpha": 1.5}, "alpha must be in (0, 1); got 1.5"),
    (None, {"max_bins": 1}, "max_bins must be >= 2; got 1"),
    (None, {"n_trees": 0}, "n_trees must be >= 1; got 0"),
    (None, {"n_bootstrap": -1}, "n_bootstrap must be >= 0; got -1"),
    ("missing_column", {}, "factor 'x3' is not a column"),
    ("negative_log", {}, "log-scale factor 'x1' has values <= 0"),
])
def test_bad_input_names_the_constraint_and_value(change, kwargs, message):
    df, factors = uniform_runs(1, n=20, k=3, surface="additive")
    if change == "few":
        df = df.head(7)
    elif change == "constant_factor":
        df["x2"] = 0.5
    elif change == "constant_response":
        df["y"] = 1.0
    elif change == "bad_category":
        df["opt"] = "adam"
        factors["opt"] = FactorInfo(("sgd", "lion"), kind="categorical")
    elif change == "missing_column":
        df = df.drop(columns="x3")
    elif change == "negative_log":
        factors["x1"] = FactorInfo((0.5, 1.0), scale="log")
    with pytest.raises(ValueError) as info:
        decompose(df, factors, "y", **({"n_bootstrap": 0, "n_permutations": 0, "n_trees": 4} | kwargs))
    assert message in str(info.value)
