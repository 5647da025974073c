"""orchestrator.analysis.hints: reparametrisation hints, checked on synthetic surfaces whose valley slope is known.

The surfaces are exact quadratics in log coordinates, loss = (log a - s log b - c)^2 (+ more) + noise, so the
valley of the best a has slope s and the surface's Hessian is known: the tests compare the hint's numbers with
them, and the interval's coverage over noise seeds with its level.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import FactorInfo, fit_effects
from orchestrator.analysis.hints import Hint, reparam_hints
from orchestrator.analysis.scaling_rules import SCALING_RULES
from orchestrator.analysis.valley import _fieller

LR = tuple(float(v) for v in np.geomspace(1e-4, 1e-2, 5))
BATCH = (8, 16, 32, 64, 128)


def grid(levels: dict[str, tuple], replicates: int = 1) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(levels, combo)) for combo in itertools.product(*levels.values())] * replicates)


def log_factors(levels: dict[str, tuple]) -> dict[str, FactorInfo]:
    return {name: FactorInfo(tuple(values), "log") for name, values in levels.items()}


def valley(a: str, b: str, slope: float, *, a_at: float, b_at: float, noise: float = 0.1, seed: int = 0,
           levels: dict[str, tuple] | None = None, replicates: int = 1) -> tuple[pd.DataFrame, dict]:
    """loss = (log a - slope log b - c)^2 + noise: the best a is a_at at b = b_at and moves like b**slope."""
    levels = levels or {a: LR, b: BATCH}
    df = grid(levels, replicates)
    c = math.log(a_at) - slope * math.log(b_at)
    rng = np.random.default_rng(seed)
    df["loss"] = (np.log(df[a]) - slope * np.log(df[b]) - c) ** 2 + rng.normal(0, noise, len(df))
    return df, log_factors(levels)


def hints_for(df: pd.DataFrame, factors: dict, response: str = "loss", **kwargs) -> list[Hint]:
    fit = fit_effects(df, factors, response)
    return reparam_hints(fit, factors, df, **kwargs)


# --- learning rate x batch size -------------------------------------------------------------------------------------


def test_sqrt_scaling_valley_is_found_its_interval_holds_half_not_one_and_the_interaction_vanishes():
    df, factors = valley("learning_rate", "batch_size", 0.5, a_at=1e-3, b_at=32, seed=1)
    fit = fit_effects(df, factors, "loss")
    assert fit.term("learning_rate:batch_size").significant

    [hint] = reparam_hints(fit, factors, df)
    assert hint.pair == ("learning_rate", "batch_size") and hint.roles == ("lr", "batch")
    assert (hint.status, hint.rule, hint.slope) == ("supported", "sqrt_scaling", 0.5)
    assert hint.coordinates == ("learning_rate / sqrt(batch_size)", "batch_size")
    assert "learning_rate / sqrt(batch_size)" in hint.suggestion and "Malladi" in hint.rationale
    assert any("Adam-type assumed" in note for note in hint.notes)  # no optimizer named: the default, said so

    ev = hint.evidence
    ci = ev["valley_slope_ci"]
    assert ci["kind"] == "bounded" and ci["low"] < 0.5 < ci["high"] and ci["high"] < 1.0
    assert ev["valley_slope"] == pytest.approx(0.5, abs=0.05)
    assert ev["rules"]["sqrt_scaling"]["consistent"] and not ev["rules"]["linear_scaling"]["consistent"]
    # Hessian of (x - 0.5 y - c)^2 in natural-log units: [[2, -1], [-1, 0.5]]
    assert np.array(ev["hessian"]) == pytest.approx(np.array([[2.0, -1.0], [-1.0, 0.5]]), abs=0.1)
    # the interaction relative to the curvature along the swept coordinate: 0.5 before, ~0 in (lr/sqrt(bs), bs)
    assert ev["interaction_before"]["ratio"] == pytest.approx(0.5, abs=0.05)
    assert ev["rules"]["sqrt_scaling"]["ratio"] < 0.05
    assert ev["rules"]["linear_scaling"]["ratio"] == pytest.approx(0.5, abs=0.05)
    # J^T H J with J = [[1, s], [0, 1]]: off-diagonal H_aa s + H_ab, and the ratio is |H_uv / H_uu|
    h = np.array(ev["hessian"])
    after = np.array(ev["rules"]["sqrt_scaling"]["hessian"])
    assert after[0, 0] == pytest.approx(h[0, 0]) and after[0, 1] == pytest.approx(h[0, 0] * 0.5 + h[0, 1])
    assert abs(after[0, 1] / after[0, 0]) == pytest.approx(ev["rules"]["sqrt_scaling"]["ratio"])
    assert ev["interaction_before"]["p_value"] < 1e-6 and ev["rules"]["sqrt_scaling"]["p_value"] > 0.05


def test_linear_scaling_data_make_the_hint_switch_to_the_linear_rule_and_say_why():
    df, factors = valley("learning_rate", "batch_size", 1.0, a_at=1e-3, b_at=32, seed=2)
    [hint] = hints_for(df, factors)
    assert (hint.status, hint.rule, hint.slope) == ("supported", "linear_scaling", 1.0)
    assert hint.coordinates == ("learning_rate / batch_size", "batch_size")
    ci = hint.evidence["valley_slope_ci"]
    assert ci["low"] < 1.0 < ci["high"] and ci["low"] > 0.5
    assert any("favour linear scaling" in note and "0.5 is outside" in note for note in hint.notes)
    assert hint.evidence["rules"]["linear_scaling"]["ratio"] < 0.05


def test_sgd_named_in_the_fixed_params_expects_the_linear_rule():
    df, factors = valley("lr", "bs", 1.0, a_at=1e-3, b_at=32, seed=3, levels={"lr": LR, "bs": BATCH})
    [hint] = hints_for(df, factors, fixed={"optimizer": "SGD"})
    assert (hint.status, hint.rule) == ("supported", "linear_scaling")
    assert not any("favour" in note for note in hint.notes)
    assert any("SGD" in note for note in hint.notes)


@pytest.mark.parametrize("slope", [0.5, 1.0])
def test_the_valley_slope_interval_covers_the_true_slope_at_about_its_level(slope):
    covered, seeds = 0, 60
    for seed in range(seeds):
        df, factors = valley("lr", "batch", slope, a_at=1e-3, b_at=32, seed=100 + seed,
                             levels={"lr": LR, "batch": BATCH})
        [hint] = hints_for(df, factors)
        ci = hint.evidence["valley_slope_ci"]
        covered += ci["low"] <= slope <= ci["high"]
    # 95% nominal; 60 seeds: a binomial(60, 0.95) is below 52 with probability < 0.2%
    assert covered >= 52


def test_a_nuisance_factor_and_a_maximised_response_give_the_same_valley():
    levels = {"learning_rate": LR[::2], "batch_size": BATCH[::2], "lora_dropout": (0.0, 0.1)}
    df = grid(levels, replicates=2)
    rng = np.random.default_rng(4)
    c = math.log(1e-3) - 0.5 * math.log(32)
    loss = (np.log(df.learning_rate) - 0.5 * np.log(df.batch_size) - c) ** 2 + 3.0 * df.lora_dropout
    df["accuracy"] = -loss + rng.normal(0, 0.05, len(df))
    factors = log_factors({k: v for k, v in levels.items() if k != "lora_dropout"})
    factors["lora_dropout"] = FactorInfo((0.0, 0.1))
    fit = fit_effects(df, factors, "accuracy")
    [hint] = reparam_hints(fit, factors, df, goal="maximize")
    assert (hint.status, hint.rule) == ("supported", "sqrt_scaling")
    assert hint.evidence["valley_slope"] == pytest.approx(0.5, abs=0.05)
    assert "lora_dropout" not in str(hint.evidence["valley_slope_ci"])
    assert np.array(hint.evidence["hessian"])[0, 0] < 0  # a maximum: the response's own curvature is negative
    # read as a loss to minimise, the same surface has no valley (a ridge of the worst): said, not computed
    [wrong] = reparam_hints(fit, factors, df, goal="minimize")
    assert wrong.status == "unchecked" and wrong.evidence["reason"] == "no_valley"


# --- when there is no hint, or only one by name -------------------------------------------------------------------


def test_no_interaction_no_hint():
    df = grid({"learning_rate": LR, "batch_size": BATCH})
    rng = np.random.default_rng(5)
    df["loss"] = ((np.log(df.learning_rate) - math.log(1e-3)) ** 2 + 0.3 * (np.log(df.batch_size) - 3.0) ** 2
                  + rng.normal(0, 0.1, len(df)))
    factors = log_factors({"learning_rate": LR, "batch_size": BATCH})
    fit = fit_effects(df, factors, "loss")
    assert not fit.term("learning_rate:batch_size").significant
    assert reparam_hints(fit, factors, df) == []


def test_an_interaction_that_is_not_significant_still_gets_a_hint_when_it_carries_variance_beyond_noise():
    levels = {"learning_rate": LR[::2], "batch_size": BATCH[::2]}
    df = grid(levels)
    rng = np.random.default_rng(1)
    x, y = np.log(df.learning_rate), np.log(df.batch_size)
    x, y = x - x.mean(), y - y.mean()
    df["loss"] = 0.15 * x * y + 0.3 * x**2 + rng.normal(0, 0.3, len(df))
    factors = log_factors(levels)
    fit = fit_effects(df, factors, "loss")
    [hint] = reparam_hints(fit, factors, df)
    assert not hint.interaction["significant"]
    assert hint.interaction["percent"] > hint.interaction["percent_beyond_noise"] >= 5.0
    assert reparam_hints(fit, factors, df, min_share=0.5) == []


def test_unrelated_factor_names_get_no_hint_and_overrides_name_the_roles():
    levels = {"step_size": LR, "mb": BATCH}
    df, factors = valley("step_size", "mb", 0.5, a_at=1e-3, b_at=32, seed=6, levels=levels)
    fit = fit_effects(df, factors, "loss")
    assert fit.term("step_size:mb").significant
    assert reparam_hints(fit, factors, df) == []
    [hint] = reparam_hints(fit, factors, df, names={"lr": "step_size", "batch": "mb"})
    assert hint.pair == ("step_size", "mb") and hint.rule == "sqrt_scaling" and hint.status == "supported"
    with pytest.raises(ValueError, match="neither a factor"):
        reparam_hints(fit, factors, df, names={"lr": "nope"})
    with pytest.raises(ValueError, match="unknown role"):
        reparam_hints(fit, factors, df, names={"learning": "step_size"})


def test_names_none_switches_a_role_off_and_matching_ignores_case_and_dashes():
    df, factors = valley("Learning-Rate", "BS", 0.5, a_at=1e-3, b_at=32, seed=7,
                         levels={"Learning-Rate": LR, "BS": BATCH})
    fit = fit_effects(df, factors, "loss")
    [hint] = reparam_hints(fit, factors, df)
    assert hint.pair == ("Learning-Rate", "BS")
    assert reparam_hints(fit, factors, df, names={"batch": None}) == []


def test_two_levels_give_a_hint_by_name_marked_unchecked():
    levels = {"learning_rate": (1e-4, 1e-2), "batch_size": (8, 128)}
    df = grid(levels, replicates=3)
    rng = np.random.default_rng(8)
    df["loss"] = (np.log(df.learning_rate) - 0.5 * np.log(df.batch_size) - math.log(1e-3) + 0.5 * math.log(32)) ** 2
    df["loss"] += rng.normal(0, 0.1, len(df))
    factors = log_factors(levels)
    fit = fit_effects(df, factors, "loss")
    assert fit.term("learning_rate:batch_size").significant
    [hint] = reparam_hints(fit, factors, df)
    assert hint.status == "unchecked" and hint.rule == "sqrt_scaling"
    assert hint.evidence["reason"] == "two_levels" and "3+ levels" in hint.evidence["summary"]
    assert hint.evidence["summary"].startswith("by name, unchecked")
    assert "valley_slope" not in hint.evidence  # no number without a check
    # without runs: by name too
    [by_name] = reparam_hints(fit, factors)
    assert by_name.status == "unchecked" and by_name.evidence["reason"] == "no_runs"


def test_an_aliased_interaction_cannot_be_judged():
    # 2^(3-1) with warmup = lr x batch (coded): lr:batch is not estimable, aliased with warmup's main effect
    base = pd.DataFrame([(lr, bs) for lr in (1e-4, 1e-2) for bs in (8, 128)], columns=["lr", "batch_size"])
    base["warmup"] = np.where((base.lr > 1e-3) == (base.batch_size > 32), 0.1, 0.0)
    df = pd.concat([base, base], ignore_index=True)
    rng = np.random.default_rng(9)
    df["loss"] = np.log(df.lr) + rng.normal(0, 0.1, len(df))
    factors = {"lr": FactorInfo((1e-4, 1e-2), "log"), "batch_size": FactorInfo((8, 128), "log"),
               "warmup": FactorInfo((0.0, 0.1))}
    fit = fit_effects(df, factors, "loss")
    assert "lr:batch_size" in fit.not_estimable
    [hint] = reparam_hints(fit, factors, df)
    assert hint.status == "not_judged" and "cannot be judged" in hint.suggestion
    assert hint.interaction["not_estimable"] == {"lr:batch_size": ["warmup"]}
    assert hint.evidence["reason"] == "aliased"


def test_linear_scale_factors_get_the_log_scale_note():
    df, _ = valley("learning_rate", "batch_size", 0.5, a_at=1e-3, b_at=32, seed=10)
    factors = {"learning_rate": FactorInfo(LR), "batch_size": FactorInfo(BATCH, "log")}
    [hint] = hints_for(df, factors)
    assert any("learning_rate is not on a log scale" in note and "multiplicative" in note for note in hint.notes)


# --- weight decay x learning rate -----------------------------------------------------------------------------------


def test_weight_decay_valley_follows_the_effective_decay_lr_times_wd():
    wd = tuple(float(v) for v in np.geomspace(1e-3, 1e-1, 5))
    levels = {"learning_rate": LR, "weight_decay": wd}
    df = grid(levels)
    rng = np.random.default_rng(11)
    x, y = np.log(df.weight_decay), np.log(df.learning_rate)
    df["loss"] = (x + y - math.log(1e-5)) ** 2 + 0.5 * (y - math.log(1e-3)) ** 2 + rng.normal(0, 0.1, len(df))
    [hint] = hints_for(df, log_factors(levels))
    assert hint.pair == ("weight_decay", "learning_rate") and hint.rule == "effective_decay"
    assert hint.status == "supported" and hint.slope == -1.0
    assert hint.coordinates == ("learning_rate * weight_decay", "learning_rate")
    assert "sweep learning_rate and learning_rate * weight_decay" in hint.suggestion
    assert "Loshchilov" in hint.rationale
    ci = hint.evidence["valley_slope_ci"]
    assert ci["low"] < -1.0 < ci["high"]
    assert hint.evidence["rules"]["effective_decay"]["ratio"] < 0.1 < hint.evidence["interaction_before"]["ratio"]


def test_a_zero_weight_decay_level_leaves_the_hint_unchecked():
    levels = {"learning_rate": LR, "weight_decay": (0.0, 0.01, 0.1)}
    df = grid(levels, replicates=2)
    rng = np.random.default_rng(12)
    df["loss"] = (np.log(df.learning_rate) + math.log(1e-3)) * df.weight_decay * 20 + rng.normal(0, 0.05, len(df))
    factors = {"learning_rate": FactorInfo(LR, "log"), "weight_decay": FactorInfo((0.0, 0.01, 0.1))}
    [hint] = hints_for(df, factors)
    assert hint.status == "unchecked" and hint.evidence["reason"] == "not_positive"
    assert any("weight_decay is not on a log scale" in note for note in hint.notes)


# --- LoRA alpha x rank ----------------------------------------------------------------------------------------------

RANK = (4, 8, 16, 32, 64)
ALPHA = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def test_lora_alpha_valley_follows_the_adapter_scale_alpha_over_rank():
    df, factors = valley("lora_alpha", "lora_rank", 1.0, a_at=32.0, b_at=16, seed=13,
                         levels={"lora_alpha": ALPHA, "lora_rank": RANK})
    [hint] = hints_for(df, factors)
    assert (hint.status, hint.rule) == ("supported", "lora_scale")
    assert hint.coordinates == ("lora_alpha / lora_rank", "lora_rank") and "Hu et al." in hint.rationale


def test_rslora_flag_expects_alpha_over_sqrt_rank():
    df, factors = valley("alpha", "r", 0.5, a_at=32.0, b_at=16, seed=14, levels={"alpha": ALPHA, "r": RANK})
    [expected] = hints_for(df, factors, fixed={"use_rslora": True})
    assert (expected.status, expected.rule) == ("supported", "rslora_scale")
    assert expected.coordinates == ("alpha / sqrt(r)", "r") and not any("favour" in n for n in expected.notes)
    [standard] = hints_for(df, factors)  # standard LoRA expects alpha / r; the data say otherwise
    assert standard.rule == "rslora_scale" and any("favour rslora scale" in n for n in standard.notes)


# --- what the check says when no rule fits --------------------------------------------------------------------------


def test_a_slope_near_but_not_at_a_rule_is_approximate_and_a_far_one_is_contradicted():
    df, factors = valley("lr", "batch", 0.6, a_at=1e-3, b_at=32, noise=0.02, seed=15, levels={"lr": LR, "batch": BATCH})
    [hint] = hints_for(df, factors)
    ci = hint.evidence["valley_slope_ci"]
    assert ci["high"] < 1.0 and not ci["low"] <= 0.5 <= ci["high"]
    assert (hint.status, hint.rule) == ("approximate", "sqrt_scaling")
    assert hint.evidence["rules"]["sqrt_scaling"]["shrink"] >= 0.8
    assert any("removes" in note for note in hint.notes)

    df, factors = valley("lr", "batch", 2.0, a_at=1e-3, b_at=32, seed=16, levels={"lr": LR, "batch": BATCH})
    [far] = hints_for(df, factors)
    assert (far.status, far.rule) == ("contradicted", "fitted_slope")
    assert far.slope == pytest.approx(far.evidence["valley_slope"], abs=0.05)
    assert far.coordinates[0].startswith("lr / batch^")


def test_an_interaction_that_does_not_move_the_optimum_gets_no_reparametrisation():
    levels = {"learning_rate": LR, "batch_size": BATCH}
    df = grid(levels, replicates=2)
    rng = np.random.default_rng(17)
    x = np.log(df.learning_rate) - math.log(1e-3)
    y = np.log(df.batch_size) - math.log(32)
    df["loss"] = (1.0 + 0.3 * y) * x**2 + rng.normal(0, 0.05, len(df))  # curvature changes; the optimum does not
    fit = fit_effects(df, log_factors(levels), "loss")
    assert fit.term("learning_rate^2:batch_size").significant
    [hint] = reparam_hints(fit, log_factors(levels), df)
    assert (hint.status, hint.rule, hint.slope, hint.coordinates) == ("contradicted", "none", None, None)
    assert "no reparametrisation" in hint.suggestion


def test_noisy_curvature_makes_the_interval_unbounded_and_the_hint_inconclusive():
    levels = {"learning_rate": LR[1:4], "batch_size": BATCH[1:4]}
    df = grid(levels, replicates=2)
    rng = np.random.default_rng(2)
    x, y = np.log(df.learning_rate), np.log(df.batch_size)
    x, y = x - x.mean(), y - y.mean()
    df["loss"] = 3.0 * x * y + 0.2 * x**2 + rng.normal(0, 0.5, len(df))  # a strong interaction, a faint minimum
    [hint] = hints_for(df, log_factors(levels))
    assert np.array(hint.evidence["hessian"])[0, 0] > 0
    assert hint.status == "inconclusive" and hint.evidence["valley_slope_ci"]["kind"] == "two_rays"
    assert hint.rule == "sqrt_scaling" and "unbounded" in hint.evidence["summary"]


# --- pieces ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_fieller_interval_is_exactly_the_set_of_slopes_not_rejected(seed):
    rng = np.random.default_rng(seed)
    n, d = rng.normal(0, 1, 2)
    a = rng.normal(0, 0.6, (2, 2))
    cov = a @ a.T + 0.01 * np.eye(2)
    v_nn, v_dd, v_nd = cov[0, 0], cov[1, 1], cov[0, 1]
    t = 2.1
    interval = _fieller(n, d, v_nn, v_dd, v_nd, t)
    thetas = np.linspace(-30, 30, 20001)
    inside = (n - thetas * d) ** 2 <= t * t * (v_nn - 2 * thetas * v_nd + thetas**2 * v_dd)
    if interval["kind"] == "bounded":
        expected = (thetas >= interval["low"]) & (thetas <= interval["high"])
    elif interval["kind"] == "two_rays":
        expected = (thetas <= interval["low"]) | (thetas >= interval["high"])
    else:
        expected = np.ones_like(thetas, dtype=bool)
    mismatched = np.flatnonzero(inside != expected)
    # only grid points within rounding of an end point may disagree
    ends = [v for v in (interval["low"], interval["high"]) if math.isfinite(v)]
    assert all(min(abs(thetas[i] - e) for e in ends) < 1e-6 for i in mismatched)


def test_hint_to_dict_is_strict_json_and_describe_shows_the_suggestion_and_the_check():
    df, factors = valley("learning_rate", "batch_size", 0.5, a_at=1e-3, b_at=32, seed=19)
    [hint] = hints_for(df, factors)
    record = json.loads(json.dumps(hint.to_dict(), allow_nan=False))
    assert record["pair"] == ["learning_rate", "batch_size"] and record["status"] == "supported"
    assert record["evidence"]["rules"]["sqrt_scaling"]["consistent"] is True
    text = hint.describe()
    assert text.splitlines()[0].startswith("learning_rate x batch_size [supported]: sweep learning_rate / sqrt(")
    assert "check: valley of the best learning_rate" in text and "why:" in text
    assert set(SCALING_RULES) == {"sqrt_scaling", "linear_scaling", "effective_decay", "lora_scale", "rslora_scale"}
