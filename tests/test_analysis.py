"""orchestrator.analysis: coding, the fit against statsmodels' own formula fit, recovery of known surfaces over many
noise seeds, Lenth for saturated designs, aliasing in fractions, failed runs, the variance budget, cell means and
power."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from experiments import synthetic
from orchestrator.analysis import (
    FactorInfo,
    cell_means,
    code_numeric,
    design_matrix,
    detectable_effect,
    detection_power,
    factor_infos,
    fit_effects,
    infer_factors,
    lenth_pse,
    runs_needed,
)
from orchestrator.context import RunContext
from orchestrator.run_record import RunStatus
from orchestrator.spec import Factor


def grid(levels: dict[str, list], replicates: int = 1) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(levels, combo)) for combo in itertools.product(*levels.values())] * replicates)


# --- coding ---------------------------------------------------------------------------------------------------------


def test_log_scale_levels_code_to_minus_one_zero_one():
    info = FactorInfo((1e-4, 1e-3, 1e-2), scale="log")
    assert code_numeric([1e-4, 1e-3, 1e-2], info) == pytest.approx([-1.0, 0.0, 1.0], abs=1e-12)
    linear = FactorInfo((1e-4, 1e-3, 1e-2))
    assert code_numeric([1e-4, 1e-2], linear) == pytest.approx([-1.0, 1.0])


def test_three_level_categorical_gets_sum_contrasts_whose_estimates_are_deviations_from_the_mean():
    df = grid({"opt": ["adamw", "lion", "sgd"], "bs": [8, 32]}, replicates=2)
    factors = {"opt": FactorInfo(("adamw", "lion", "sgd"), kind="categorical"), "bs": FactorInfo((8, 32))}
    design = design_matrix(df, factors)
    assert [c.name for c in design.columns] == ["opt[lion]", "opt[sgd]", "bs", "opt[lion]:bs", "opt[sgd]:bs"]
    first_rows = df["opt"].drop_duplicates()
    coded = design.matrix.loc[first_rows.index].set_index(first_rows)
    # the first level is the reference: -1 in every column
    assert coded.loc["adamw", ["opt[lion]", "opt[sgd]"]].tolist() == [-1, -1]
    assert coded.loc["lion", ["opt[lion]", "opt[sgd]"]].tolist() == [1, 0]
    assert {c.name: c.term for c in design.columns if c.name.startswith("opt[")} == {
        "opt[lion]": "opt", "opt[sgd]": "opt", "opt[lion]:bs": "opt:bs", "opt[sgd]:bs": "opt:bs"}

    rng = np.random.default_rng(0)
    df["y"] = df["opt"].map({"adamw": 1.0, "lion": 2.0, "sgd": 4.5}) + rng.normal(0, 0.1, len(df))
    result = fit_effects(df, factors, "y")
    level_means = df.groupby("opt")["y"].mean()
    assert result.term("opt[lion]").estimate == pytest.approx(level_means["lion"] - level_means.mean())
    assert result.term("opt[sgd]").estimate == pytest.approx(level_means["sgd"] - level_means.mean())
    anova = result.anova.to_frame().set_index("term")
    assert anova.loc["opt", "df"] == 2 and anova.loc["opt:bs", "df"] == 2


def test_two_level_categorical_is_plus_minus_one_and_numeric_three_levels_get_a_centred_quadratic():
    df = grid({"flag": [False, True], "x": [0.0, 1.0, 2.0]})
    factors = infer_factors(df, ["flag", "x"])
    design = design_matrix(df, factors)
    assert set(design.matrix["flag[True]"]) == {-1.0, 1.0}
    assert design.matrix["x^2"].tolist()[:3] == pytest.approx([1 / 3, -2 / 3, 1 / 3])
    assert "flag[True]:x^2" not in design.matrix  # linear x quadratic only between numeric factors


def test_infer_factors_and_factor_infos_from_a_spec():
    df = pd.DataFrame({"lr": [1e-3, 1e-4, 1e-3, 1e-2], "opt": ["sgd", "adamw", "sgd", "lion"],
                       "flag": [True, False, True, False]})
    inferred = infer_factors(df, ["lr", "opt", "flag"], log=["lr"])
    assert inferred["lr"] == FactorInfo((1e-4, 1e-3, 1e-2), "log", "numeric")
    assert inferred["opt"] == FactorInfo(("adamw", "lion", "sgd"), "linear", "categorical")
    assert inferred["flag"].kind == "categorical" and inferred["flag"].levels == (False, True)
    with pytest.raises(ValueError, match="log scale|scale 'log'"):
        infer_factors(df, ["opt"], log=["opt"])
    with pytest.raises(ValueError, match="at least 2 levels"):
        infer_factors(df.head(1), ["lr"])

    spec_factors = {"lr": Factor(levels=(1e-4, 1e-3), scale="log"), "opt": Factor(levels=("a", "b"))}
    assert factor_infos(spec_factors) == {"lr": FactorInfo((1e-4, 1e-3), "log", "numeric"),
                                          "opt": FactorInfo(("a", "b"), "linear", "categorical")}
    with pytest.raises(ValueError, match="must not contain"):
        factor_infos({"a:b": FactorInfo((1, 2))})


# --- the fit equals statsmodels' formula fit on independently coded data ---------------------------------------------


def _mixed_study(seed: int = 0) -> tuple[pd.DataFrame, dict[str, FactorInfo]]:
    """Unbalanced: a 4-level log factor, a 2-level numeric, a 3-level categorical, 2 replicates, a fifth dropped."""
    lr_levels = (1e-4, 3e-4, 1e-3, 1e-2)
    df = grid({"lr": list(lr_levels), "rank": [4, 16], "opt": ["adamw", "lion", "sgd"]}, replicates=2)
    rng = np.random.default_rng(seed)
    df = df.sample(frac=0.8, random_state=seed).reset_index(drop=True)
    df["loss"] = (2 - 0.3 * np.log10(df["lr"]) + 0.01 * df["rank"] + df["opt"].map({"adamw": 0, "lion": 0.2,
                  "sgd": 0.5}) + 0.05 * np.log10(df["lr"]) ** 2 + rng.normal(0, 0.2, len(df)))
    factors = {"lr": FactorInfo(lr_levels, "log"), "rank": FactorInfo((4, 16)),
               "opt": FactorInfo(("adamw", "lion", "sgd"), kind="categorical")}
    return df, factors


def test_estimates_se_t_p_and_ci_equal_statsmodels_formula_fit():
    df, factors = _mixed_study()
    result = fit_effects(df, factors, "loss", adjust=None)

    # Code independently: log10 of 1e-4..1e-2 is -4..-2, so coded = log10(lr) + 3; rank 4..16 -> (rank - 10) / 6.
    data = pd.DataFrame({"loss": df["loss"], "opt": df["opt"]})
    data["lr_c"] = np.log10(df["lr"]) + 3
    data["rank_c"] = (df["rank"] - 10) / 6
    centre = np.mean((np.log10([1e-4, 3e-4, 1e-3, 1e-2]) + 3) ** 2)
    data["lr_q"] = data["lr_c"] ** 2 - centre
    cat = "C(opt, Sum(omit=0))"  # patsy's sum contrast with the first level as the -1 reference
    formula = (f"loss ~ lr_c + rank_c + {cat} + lr_q + lr_c:rank_c + lr_c:{cat} + rank_c:{cat} + lr_q:rank_c")
    reference = smf.ols(formula, data).fit()

    def ours(patsy_name: str) -> frozenset[str]:
        parts = []
        for part in patsy_name.split(":"):
            part = part.replace(f"{cat}[S.", "opt[").replace("lr_c", "lr").replace("rank_c", "rank")
            parts.append(part.replace("lr_q", "lr^2"))
        return frozenset(parts)

    by_parts = {frozenset(t.term.split(":")): t for t in result.terms}
    names = [n for n in reference.params.index if n != "Intercept"]
    assert len(names) == len(result.terms) == 11
    ci = reference.conf_int(0.05)
    for name in names:
        term = by_parts[ours(name)]
        assert term.estimate == pytest.approx(reference.params[name], abs=1e-8)
        assert term.std_error == pytest.approx(reference.bse[name], abs=1e-8)
        assert term.t == pytest.approx(reference.tvalues[name], abs=1e-8)
        assert term.p_value == pytest.approx(reference.pvalues[name], abs=1e-8)
        assert (term.ci_low, term.ci_high) == pytest.approx(tuple(ci.loc[name]), abs=1e-8)
    assert result.intercept == pytest.approx(reference.params["Intercept"], abs=1e-8)
    assert result.r_squared == pytest.approx(reference.rsquared, abs=1e-10)
    assert result.sigma == pytest.approx(np.sqrt(reference.scale), abs=1e-10)
    assert result.df_resid == reference.df_resid and result.method == "ols"


def test_anova_is_sequential_sums_of_squares_from_nested_fits():
    df, factors = _mixed_study(seed=1)
    result = fit_effects(df, factors, "loss")
    matrix = design_matrix(df, factors).matrix
    sequential, previous = {}, ["Intercept"]

    def ssr(columns: list[str]) -> float:
        return OLS(df["loss"].to_numpy(), matrix[columns]).fit().ssr

    rss_before = ssr(previous)
    for term in dict.fromkeys(t.anova_term for t in result.terms):
        previous = previous + [t.term for t in result.terms if t.anova_term == term]
        rss_after = ssr(previous)
        sequential[term] = rss_before - rss_after
        rss_before = rss_after
    anova = result.anova.to_frame().set_index("term")
    for term, ss in sequential.items():
        assert anova.loc[term, "sum_sq"] == pytest.approx(ss, rel=1e-9, abs=1e-12)
    within = df.groupby(["lr", "rank", "opt"])["loss"].transform(lambda v: v - v.mean())
    assert anova.loc["pure error", "sum_sq"] == pytest.approx((within**2).sum())
    assert anova.loc["lack of fit", "sum_sq"] + anova.loc["pure error", "sum_sq"] == pytest.approx(rss_before)


def test_adjusted_p_values_are_multipletests_over_all_terms():
    df, factors = _mixed_study(seed=2)
    raw = fit_effects(df, factors, "loss", adjust=None).to_frame()
    assert raw["p_adjusted"].tolist() == raw["p_value"].tolist()
    for method in ("holm", "fdr_bh"):
        frame = fit_effects(df, factors, "loss", adjust=method).to_frame()
        expected = multipletests(raw["p_value"], alpha=0.05, method=method)[1]
        assert frame["p_adjusted"].to_numpy() == pytest.approx(expected, abs=1e-12)
        assert frame["significant"].tolist() == (expected < 0.05).tolist()


# --- recovery of a known surface ------------------------------------------------------------------------------------


def _synthetic_runs(dataset: int, replicates: int = 2) -> pd.DataFrame:
    """y = 3 + 2A - 1.5B + 1.2AB + N(0, 0.5^2) on a 2^4, from experiments.synthetic (levels -1/+1 = coded)."""
    rows = []
    for rep in range(replicates):
        seed = dataset * replicates + rep
        for a, b, c, d in itertools.product([-1, 1], repeat=4):
            params = {"A": a, "B": b, "C": c, "D": d, "seed": seed, "intercept": 3.0, "noise_sd": 0.5, "steps": 1,
                      "surface": {"A": 2.0, "B": -1.5, "A*B": 1.2}}
            loss = synthetic.run(params, RunContext(study="recovery", cell_key="k", seed=seed))["loss"]
            rows.append({"A": a, "B": b, "C": c, "D": d, "loss": loss, "status": "COMPLETE"})
    return pd.DataFrame(rows)


def test_known_surface_is_recovered_over_50_noise_seeds():
    truth = {"A": 2.0, "B": -1.5, "A:B": 1.2}
    factors = {name: FactorInfo((-1, 1)) for name in "ABCD"}
    exact, mains_exact, covered, intervals = 0, 0, 0, 0
    for dataset in range(50):
        result = fit_effects(_synthetic_runs(dataset), factors, "loss")
        assert result.method == "ols" and result.df_resid == 21 and not result.not_estimable
        frame = result.to_frame()
        significant = set(frame.loc[frame["significant"], "term"])
        exact += {t for t in significant if ":" in t} == {"A:B"}
        mains_exact += {t for t in significant if ":" not in t} == {"A", "B"}
        true = frame["term"].map(lambda t: truth.get(t, 0.0))
        covered += int(((frame["ci_low"] <= true) & (true <= frame["ci_high"])).sum())
        intervals += len(frame)
    rate, coverage = exact / 50, covered / intervals
    print(f"\nsignificant two-way set == {{A:B}}: {rate:.0%}; main set == {{A, B}}: {mains_exact / 50:.0%}; "
          f"95% CI coverage: {coverage:.1%} of {intervals}")
    assert rate >= 0.8
    assert mains_exact / 50 >= 0.8
    assert 0.85 <= coverage <= 0.99


# --- no residual degrees of freedom: Lenth ---------------------------------------------------------------------------


def test_lenth_pse_by_hand():
    effects = np.array([0.1, -0.2, 0.3, -0.15, 0.25, 5.0, -4.0])
    # s0 = 1.5 * median|c| = 0.375, so |c| >= 2.5 * s0 = 0.94 (the two real effects) is left out
    assert lenth_pse(effects) == pytest.approx(1.5 * np.median([0.1, 0.2, 0.3, 0.15, 0.25]))
    assert lenth_pse(np.zeros(4)) == 0.0


def test_unreplicated_saturated_2_4_uses_lenth_and_finds_the_big_effects():
    df = grid({name: [-1, 1] for name in "ABCD"})
    rng = np.random.default_rng(7)
    df["y"] = 10 + 3 * df.A + 2 * df.B - 2.5 * df.A * df.C + rng.normal(0, 0.3, len(df))
    result = fit_effects(df, {n: FactorInfo((-1, 1)) for n in "ABCD"}, "y", max_order=4)
    assert result.method == "lenth" and result.df_resid == 0 and len(result.terms) == 15
    assert result.error_df == pytest.approx(5.0)
    assert {t.term for t in result.terms if t.significant} == {"A", "B", "A:C"}
    assert any("Lenth" in note for note in result.notes)
    # classic Lenth on effects 2b: SE(b) = PSE(2b) / 2; the interval is b +- t(0.975, m/3) SE
    estimates = np.array([t.estimate for t in result.terms])
    se = lenth_pse(2 * estimates) / 2
    term = result.term("C")
    assert term.std_error == pytest.approx(se)
    assert term.ci_high - term.estimate == pytest.approx(stats.t.ppf(0.975, 5) * se)
    assert term.p_value == pytest.approx(2 * stats.t.sf(abs(term.estimate) / se, 5))
    assert result.sigma == pytest.approx(se * 4)  # PSE of standardised effects estimates sigma: SE = sigma/sqrt(16)


def test_unreplicated_2_3_with_all_interactions_uses_lenth():
    df = grid({name: [-1, 1] for name in "ABC"})
    df["y"] = 5 + 4 * df.A + np.array([0.1, -0.05, 0.02, 0.08, -0.1, 0.03, -0.02, 0.06])
    result = fit_effects(df, {n: FactorInfo((-1, 1)) for n in "ABC"}, "y", max_order=3)
    assert result.method == "lenth" and len(result.terms) == 7
    assert result.term("A").significant and result.term("A:B:C").kind == "interaction"
    assert result.budget.to_frame()["percent"].sum() == pytest.approx(100.0)


# --- aliasing -------------------------------------------------------------------------------------------------------


def test_half_fraction_reports_aliases_and_never_estimates_aliased_terms():
    df = grid({"A": [-1, 1], "B": [-1, 1]})
    df["C"] = df.A * df.B  # 2^(3-1), I = ABC
    df["y"] = [1.0, 5.0, 2.0, 9.0]
    result = fit_effects(df, {n: FactorInfo((-1, 1)) for n in "ABC"}, "y")
    assert [t.term for t in result.terms] == ["A", "B", "C"]
    assert result.term("A").aliased_with == ("B:C",)
    assert result.term("B").aliased_with == ("A:C",)
    assert result.term("C").aliased_with == ("A:B",)
    assert result.not_estimable == {"A:B": ("C",), "A:C": ("B",), "B:C": ("A",)}
    with pytest.raises(KeyError, match="not estimable"):
        result.term("B:C")
    assert result.to_frame().set_index("term").loc["A", "aliased_with"] == ["B:C"]
    assert "B:C" not in set(result.anova.to_frame()["term"])


def test_exact_negative_and_linear_combinations_are_aliased():
    df = grid({"A": [-1, 1], "B": [-1, 1]}, replicates=2)
    df["C"] = -df.A * df.B
    df["y"] = np.arange(len(df), dtype=float)
    result = fit_effects(df, {n: FactorInfo((-1, 1)) for n in "ABC"}, "y")
    assert result.not_estimable["A:B"] == ("C",)
    assert result.method == "ols"  # replicates leave residual df for the estimable columns


# --- the motivating case: a curved interaction ---------------------------------------------------------------------


def test_sin_interaction_is_linear_by_quadratic_not_linear_by_linear():
    levels = {"x1": [0.0, 0.5, 1.0], "x2": [0.0, 0.5, 1.0]}
    factors = infer_factors(grid(levels), ["x1", "x2"])
    noiseless = grid(levels)
    noiseless["y"] = 10 * np.sin(np.pi * noiseless.x1 * noiseless.x2)
    exact = fit_effects(noiseless, factors, "y")
    assert exact.term("x1:x2").estimate == pytest.approx(0.0, abs=1e-9)  # no linear x linear part at all
    assert exact.term("x1:x2^2").estimate == pytest.approx(-5.0)
    assert exact.term("x1^2:x2").estimate == pytest.approx(-5.0)

    lin_quad, lin_lin = 0, 0
    for seed in range(20):
        df = grid(levels, replicates=3)
        df["y"] = 10 * np.sin(np.pi * df.x1 * df.x2) + np.random.default_rng(seed).normal(0, 1, len(df))
        result = fit_effects(df, factors, "y")
        lin_quad += result.term("x1:x2^2").significant and result.term("x1^2:x2").significant
        lin_lin += result.term("x1:x2").significant
    print(f"\nsin(pi x1 x2), 20 seeds: both linear x quadratic significant {lin_quad}/20, x1:x2 {lin_lin}/20")
    assert lin_quad == 20
    assert lin_lin <= 2
    assert result.budget.percent("two_way") > 30


# --- failed runs ----------------------------------------------------------------------------------------------------


def _runs_with_failures() -> pd.DataFrame:
    df = grid({"lr": [1e-4, 1e-3, 1e-2], "bs": [8, 32]}, replicates=2)
    rng = np.random.default_rng(3)
    df["loss"] = 1 - 0.1 * np.log10(df.lr) + 0.01 * df.bs + rng.normal(0, 0.05, len(df))
    df["status"] = RunStatus.COMPLETE
    df.loc[df.lr == 1e-2, "status"] = RunStatus.DIVERGED
    df.loc[df.lr == 1e-2, "loss"] = np.nan
    df.loc[0, "status"] = "FAILED"
    df.loc[1, "status"] = "OOM"
    df.loc[2, "loss"] = np.nan  # COMPLETE without a response
    return df


def test_diverged_failed_and_missing_runs_are_excluded_counted_and_explained():
    df = _runs_with_failures()
    factors = {"lr": FactorInfo((1e-4, 1e-3, 1e-2), "log"), "bs": FactorInfo((8, 32))}
    result = fit_effects(df, factors, "loss")
    assert result.n_runs == 12 and result.n_diverged == 4 and result.n_missing_response == 1
    assert result.excluded == {"DIVERGED": 4, "FAILED": 1, "OOM": 1}
    assert result.n_used == 12 - 4 - 2 - 1
    notes = " ".join(result.notes)
    assert "non-diverging" in notes or "did not diverge" in notes
    assert "1 FAILED" in notes and "1 OOM" in notes and "non-finite" in notes
    # only two lr levels are left: the quadratic is a combination of the intercept and the linear column
    assert result.not_estimable == {"lr^2": ("Intercept", "lr"), "lr^2:bs": ("bs", "lr:bs")}
    assert result.term("lr").aliased_with == ("lr^2",) and result.term("lr:bs").aliased_with == ("lr^2:bs",)
    assert "lr^2" not in {t.term for t in result.terms}

    imputed = fit_effects(df, factors, "loss", diverged_value=10.0)
    assert imputed.n_imputed == 4 and imputed.n_used == 12 - 2 - 1
    assert "DIVERGED" not in imputed.excluded
    assert imputed.term("lr").estimate > 1  # the penalty dominates the high-lr end
    assert "lr^2" in {t.term for t in imputed.terms}


def test_too_few_runs_and_bad_arguments_are_refused():
    df = _runs_with_failures()
    factors = infer_factors(df, ["lr", "bs"], log=["lr"])
    with pytest.raises(ValueError, match="usable run"):
        fit_effects(df[df.status == "FAILED"], factors, "loss")
    with pytest.raises(ValueError, match="adjust"):
        fit_effects(df, factors, "loss", adjust="bonferroni")
    with pytest.raises(ValueError, match="not a column"):
        fit_effects(df, factors, "accuracy")
    bad = df.assign(opt="sgd")
    with pytest.raises(ValueError, match="not among its levels"):
        fit_effects(bad, {**factors, "opt": FactorInfo(("adamw", "lion"), kind="categorical")}, "loss")


# --- variance budget ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["replicated", "unbalanced", "unreplicated", "saturated"])
def test_variance_budget_sums_to_100_percent(case):
    if case == "saturated":
        df = grid({n: [-1, 1] for n in "ABC"})
        df["y"] = df.A + 0.5 * df.B * df.C + np.linspace(0, 0.1, 8)
        result = fit_effects(df, {n: FactorInfo((-1, 1)) for n in "ABC"}, "y", max_order=3)
    elif case == "unreplicated":
        df = grid({"x": [1, 2, 3, 4], "y": [0.1, 0.2, 0.4], "opt": ["a", "b"]})
        df["r"] = df.x * df.y + (df.opt == "a") + np.sin(df.x)
        result = fit_effects(df, infer_factors(df, ["x", "y", "opt"]), "r")
    else:
        df, factors = _mixed_study(seed=3 if case == "replicated" else 4)
        if case == "replicated":
            df = grid({"lr": list(factors["lr"].levels), "rank": [4, 16], "opt": ["adamw", "lion", "sgd"]}, 2)
            df["loss"] = np.random.default_rng(0).normal(size=len(df)) + df["rank"] / 8
        result = fit_effects(df, factors, "loss")
    budget = result.budget.to_frame()
    assert budget["percent"].sum() == pytest.approx(100.0)
    assert budget["sum_sq"].sum() == pytest.approx(result.anova.to_frame()["sum_sq"].sum())
    expected_tail = ["residual"] if np.isnan(result.sigma_pure_error) else ["lack_of_fit", "pure_error"]
    assert budget["category"].tolist() == ["main", "two_way", "quadratic_higher"] + expected_tail
    r2 = budget.loc[budget.category.isin(["main", "two_way", "quadratic_higher"]), "percent"].sum() / 100
    assert r2 == pytest.approx(result.r_squared)


# --- cell means -----------------------------------------------------------------------------------------------------


def test_cell_means_with_t_intervals_and_empty_cells():
    df = _runs_with_failures()
    factors = {"lr": FactorInfo((1e-4, 1e-3, 1e-2), "log"), "bs": FactorInfo((8, 32))}
    by_lr = cell_means(df, factors, "loss", "lr")
    assert by_lr["lr"].tolist() == [1e-4, 1e-3, 1e-2]
    assert by_lr["n"].tolist() == [2, 3, 0]  # FAILED + OOM at 1e-4, a missing loss at 1e-3, all DIVERGED at 1e-2
    used = df[(df.lr == 1e-3)]["loss"].dropna()
    row = by_lr.iloc[1]
    margin = stats.t.ppf(0.975, 2) * used.std() / np.sqrt(3)
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((used.mean(), used.mean() - margin,
                                                                          used.mean() + margin))
    assert np.isnan(by_lr.iloc[2]["mean"]) and np.isnan(by_lr.iloc[2]["ci_low"])

    pairs = cell_means(df, factors, "loss", "lr", "bs", diverged_value=5.0)
    assert list(pairs.columns) == ["lr", "bs", "n", "mean", "std", "ci_low", "ci_high"]
    assert len(pairs) == 6 and pairs.loc[(pairs.lr == 1e-2) & (pairs.bs == 8), "mean"].item() == 5.0


def test_cell_means_take_the_fit_noise_so_other_factors_do_not_widen_them():
    # 2^3 x 2 seeds, y = x + 3 z + noise 0.05: an x-by-y cell holds both levels of z, so its spread is ~3, not 0.05.
    rng = np.random.default_rng(0)
    rows = [{"x": x, "y": y, "z": z} for x in (-1, 1) for y in (-1, 1) for z in (-1, 1) for _ in range(2)]
    df = pd.DataFrame(rows).assign(loss=lambda d: d.x + 3 * d.z + rng.normal(0, 0.05, len(d)))
    infos = {n: FactorInfo((-1, 1)) for n in "xyz"}
    fit = fit_effects(df, infos, "loss")
    raw = cell_means(df, infos, "loss", "x", "y")
    model = cell_means(df, infos, "loss", "x", "y", sigma=fit.sigma, error_df=fit.error_df)
    assert (model["mean"] == raw["mean"]).all()
    width = (model.ci_high - model.ci_low) / 2
    assert width.to_numpy() == pytest.approx(stats.t.ppf(0.975, fit.error_df) * fit.sigma / np.sqrt(4))
    assert ((raw.ci_high - raw.ci_low) / 2 > 20 * width).all()


# --- power ----------------------------------------------------------------------------------------------------------


def test_power_matches_a_one_sample_t_test_and_the_solvers_invert_it():
    # with one parameter the residual has n - 1 df: the one-sample t test with effect size delta / sigma
    assert detection_power(0.3, 1.0, 40, 39) == pytest.approx(TTestPower().power(0.3, 40, 0.05), abs=1e-6)
    delta = detectable_effect(0.5, 32, 21)
    assert detection_power(delta, 0.5, 32, 21) == pytest.approx(0.8, abs=1e-9)
    assert 0.2 < delta < 0.3  # about (1.96 + 0.84) * 0.5 / sqrt(32) = 0.25, a bit more on 21 df
    n = runs_needed(0.1, 0.5, n_params=11)
    assert detection_power(0.1, 0.5, n, n - 11) >= 0.8 > detection_power(0.1, 0.5, n - 1, n - 12)


# --- results --------------------------------------------------------------------------------------------------------


def test_results_frame_and_json_records():
    df = _runs_with_failures()
    result = fit_effects(df, infer_factors(df, ["lr", "bs"], log=["lr"]), "loss")
    frame = result.to_frame()
    assert frame.columns.tolist()[:11] == ["term", "estimate", "std_error", "ci_low", "ci_high", "t", "p_value",
                                           "p_adjusted", "significant", "aliased_with", "kind"]
    assert set(frame["kind"]) <= {"main", "interaction", "quadratic"}
    assert json.loads(json.dumps(result.to_records()))[0]["term"] == "lr"
    whole = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert whole["method"] == "ols" and whole["excluded"]["DIVERGED"] == 4
    assert whole["not_estimable"]["lr^2"] == ["Intercept", "lr"] and whole["budget"][0]["category"] == "main"


def test_too_few_residual_df_switches_to_lenth_when_asked():
    # 2^3 full factorial + 1 replicate of one corner: mains + two-way interactions leave 2 residual df.
    rows = [{"a": a, "b": b, "c": c} for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)] + [{"a": 1, "b": 1, "c": 1}]
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rows).assign(y=lambda d: 2 * d.a - d.b + 0.5 * d.a * d.c + rng.normal(0, 0.1, len(d)))
    infos = {n: FactorInfo((-1, 1)) for n in "abc"}
    assert fit_effects(df, infos, "y").method == "ols"
    fit = fit_effects(df, infos, "y", min_resid_df=3)
    assert fit.method == "lenth" and fit.df_resid == 2
    assert any("2 (fewer than 3) residual degrees of freedom" in n for n in fit.notes)
    with pytest.raises(ValueError, match="min_resid_df must be >= 1; got 0"):
        fit_effects(df, infos, "y", min_resid_df=0)
