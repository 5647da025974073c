"""The second-order response surface over every run (``fit_surface``, ``wavesweep analyze --method surface``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import FactorInfo, fit_surface
from tests.test_cli import wavesweep
from tests.test_designed_proposed import fill


def scattered(n: int, seed: int) -> pd.DataFrame:
    """Points no design placed (a model's batches): uniform in the box, lr on a log scale."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, size=(n, 4))
    frame = pd.DataFrame({"lr": 10 ** (-4 + 1.5 * (u[:, 0] + 1)), "b": u[:, 1], "c": u[:, 2], "d": u[:, 3]})
    x = np.log10(frame["lr"]) + 2.5  # lr coded onto [-1.5, 1.5] before the fit rescales it by its span
    frame["loss"] = (1.0 + 0.4 * x ** 2 + 0.5 * frame["b"] + 0.6 * x * frame["b"] - 0.5 * frame["c"] * frame["d"]
                     + rng.normal(0, 0.05, n))
    return frame


FACTORS = {"lr": FactorInfo((1e-4, 1e-1), "log"), "b": FactorInfo((-1.0, 1.0)), "c": FactorInfo((-1.0, 1.0)),
           "d": FactorInfo((-1.0, 1.0))}


def test_the_surface_names_the_true_interactions_from_scattered_runs():
    frame = scattered(60, 0)
    fit = fit_surface(frame, FACTORS, "loss")
    terms = {t.term: t for t in fit.terms}
    # Mains, a quadratic per factor, the six pairs: no linear x quadratic columns (they alone would be 12 more).
    assert set(terms) == {"lr", "b", "c", "d", "lr^2", "b^2", "c^2", "d^2", "lr:b", "lr:c", "lr:d", "b:c", "b:d",
                          "c:d"}
    assert fit.method == "ols" and fit.error_df == 60 - 15 and fit.n_used == 60
    assert {t.term for t in fit.terms if t.significant and t.order == 2} == {"lr:b", "c:d"}
    # Coded over the span the runs cover: lr's x spans about [-1.5, 1.5], so its coded coefficient is 1.5 x 0.6.
    span = (np.log10(frame["lr"]).max() - np.log10(frame["lr"]).min()) / 2
    assert terms["lr:b"].ci_low < 0.6 * span < terms["lr:b"].ci_high
    assert terms["c:d"].ci_low < -0.5 < terms["c:d"].ci_high
    assert fit.notes[0].startswith("second-order response surface")


def crowded(screen: list[dict], surface, seed: int) -> pd.DataFrame:
    """The bench's screening surface as mode waves leaves it: a quarter-point screen (``screen``), then 48 runs
    crowded towards the best corner, as a GP's batches are (each active factor within three quarters of its range
    of the corner, the inert ones anywhere). Built without the GP, whose proposals change with the machine's load."""
    rng = np.random.default_rng(seed)
    near = []
    for i in range(48):
        point = {n: float(rng.uniform(-1, 1)) for n in surface.factors}
        for n in "abcd":
            corner = surface.argopt[n]
            point[n] = float(corner - np.sign(corner) * rng.uniform(0, 1.5))
        near.append({**point, "y": surface.sample(point, 1000 + i + 100 * seed)})
    return pd.DataFrame([{**{n: r[f"param.{n}"] for n in surface.factors}, "y": r["metric.y"]} for r in screen]
                        + near)


@pytest.mark.slow
def test_without_curvature_the_quadratics_go_and_the_pairs_gain_power(monkeypatch):
    """On 20 such data sets (multilinear surface, 7 factors, true pairs a:b and c:d), the quadratics' joint F test
    lets them go in most, and the fit without them finds more of the true pairs than the full second-order fit on
    the same runs (whose 35 terms leave 28 residual df and spend precision on quadratics of clustered runs), with
    few false ones."""
    from bench.search_quality import simulate
    from experiments.surfaces import get_surface
    from orchestrator.analysis import surface as module

    screening = get_surface("screening")
    spec = screening.spec("bench-waves-0", mode="waves", runs_per_wave=16, max_runs=16, max_waves=1, seeds=[0])
    screen = simulate(screening, spec, 16, 16, 0)  # the designed wave only: no GP is involved
    factors = {n: FactorInfo((box.low, box.high)) for n, box in screening.factors.items()}
    true = {"a:b", "c:d"}
    dropped, found, false, found_full = 0, 0, 0, 0
    for seed in range(20):
        frame = crowded(screen, screening, seed)
        fit = fit_surface(frame, factors, "y")
        pairs = {t.term for t in fit.terms if t.significant and t.order == 2}
        if not any(t.term.endswith("^2") for t in fit.terms):
            dropped += 1
            assert fit.error_df == 64 - 1 - 7 - 21
            assert "7 quadratic terms were left out, as the runs show no curvature (joint F test p = " in fit.notes[0]
        else:
            assert "the quadratic terms are kept: joint F test p = " in fit.notes[0]
        found, false = found + len(pairs & true), false + len(pairs - true)
        with monkeypatch.context() as patch:
            patch.setattr(module, "CURVATURE_P", 2.0)  # never drop them
            full = fit_surface(frame, factors, "y")
        assert "a^2" in {t.term for t in full.terms}
        found_full += len({t.term for t in full.terms if t.significant and t.order == 2} & true)
    # No curvature: the test's p is uniform, so it keeps the quadratics in about 1 of 5 data sets (here 6 of 20).
    # The data are built without threads or a GP, so these counts are the same on every machine.
    assert dropped >= 12, dropped
    assert found >= found_full + 4, (found, found_full)  # measured: 34 of 40 against 26
    assert false <= 4, false  # measured: 2 false pairs over the 20 fits
    # A real curvature keeps them: the scattered lr surface above has 0.4 x^2.
    curved = fit_surface(scattered(60, 0), FACTORS, "loss")
    assert "lr^2" in {t.term for t in curved.terms}
    assert "the quadratic terms are kept: joint F test p = " in curved.notes[0]


def test_a_factor_held_at_one_value_is_left_out_and_too_few_runs_are_refused():
    frame = scattered(40, 1).assign(d=0.5)
    fit = fit_surface(frame, FACTORS, "loss")
    assert not any("d" in t.term.split(":") or t.term == "d^2" for t in fit.terms)
    with pytest.raises(ValueError, match="every factor is held at one value"):
        fit_surface(frame.assign(lr=1e-3, b=0.0, c=0.0), FACTORS, "loss")


@pytest.mark.slow
def test_analyze_fits_the_surface_on_every_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    fill(url)  # 16 designed runs (waves 1-2) and 10 a model proposed (wave 3), one FAILED
    out = wavesweep("analyze", "mixed", "--store", url, "--method", "surface", "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method_used"] == "surface"
    assert (result["n_runs"], result["n_used"], result["excluded"]) == (26, 25, {"FAILED": 1})
    assert result["runs_used"]["note"] == ("second-order fit of all 26 runs: 16 of designed waves 1-2 "
                                           "(fractional_factorial, fold_over), 10 of proposed wave 3 (model)")
    assert {t["term"] for t in result["terms"]} >= {"x^2", "x:y"}
    table = wavesweep("analyze", "mixed", "--store", url, "--method", "surface")
    assert table.returncode == 0, table.stderr
    assert "Response surface of loss" in table.stdout and "25 of 26 runs used" in table.stdout
    assert "Power:" not in table.stdout  # the two-level power line does not describe scattered runs
