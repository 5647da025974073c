"""orchestrator.analysis, the fit itself: coding, the fit against statsmodels' own formula fit, recovery of known
surfaces over many noise seeds, Lenth for saturated designs, aliasing in fractions, a curved interaction. (Failed runs,
the variance budget, cell means and power: test_analysis_summaries.py.)"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests

from experiments import synthetic
from orchestrator.analysis import (
    FactorInfo,
    code_numeric,
    design_matrix,
    factor_infos,
    fit_effects,
    infer_factors,
    lenth_pse,
)
from orchestrator.context import RunContext
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
