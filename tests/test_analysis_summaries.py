"""orchestrator.analysis around the fit: failed runs excluded and counted, the variance budget, cell means, power,
and the result records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from orchestrator.analysis import (
    FactorInfo,
    cell_means,
    detectable_effect,
    detection_power,
    fit_effects,
    infer_factors,
    runs_needed,
)
from orchestrator.run_record import RunStatus
from tests.test_analysis import _mixed_study, grid

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
