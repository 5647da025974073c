"""Variance decomposition of undesigned runs (greedy paths, Optuna trials, CSVs): :func:`decompose`.

fANOVA in the sense of Hutter, Hoos & Leyton-Brown (2014): a random forest is fitted to the runs, and each tree's
prediction is split exactly into a mean, main components and pair components under a uniform product measure; a
term's share is its component's variance over the tree's total variance, averaged over the trees. Here the measure
is uniform over a level grid (see :mod:`orchestrator.analysis.forest_marginals`), the trees are scikit-learn's,
and every share comes with a bootstrap interval, a permutation p-value and a noise floor, so that a share a
forest would show on noise is never reported as an effect or an interaction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd

from orchestrator.analysis.factors import factor_infos
from orchestrator.analysis.forest_marginals import additive_basis, discretise, fit_forest, forest_shares, unidentifiable
from orchestrator.analysis.results import RunsUsed, _json_value, _records
from orchestrator.analysis.runs import select_runs


@dataclass(frozen=True)
class FanovaTerm:
    """One main effect ("lr") or pair ("lr:rank"): its share of the forest's variance with a bootstrap interval,
    its permutation p-value against the noise floor of its kind, and the verdict. ``share`` and the interval are
    NaN for a pair the runs cannot identify (``note`` says why)."""

    term: str
    kind: Literal["main", "pair"]
    share: float
    ci_low: float
    ci_high: float
    p_value: float
    floor: float  # shares above it are called an effect / interaction (p_value < alpha)
    verdict: Literal["effect", "interaction", "inconclusive", "not identifiable"]
    note: str
    # An inconclusive main: the smallest run count of the look-ahead ladder at which the main floor falls under its
    # share (None: decided, a pair, or not within the ladder; ``note`` says which).
    runs_to_decide: int | None = None


@dataclass(frozen=True)
class FanovaResult(RunsUsed):
    """What :func:`decompose` found. ``rest_share`` is 1 minus the reported shares: third and higher order
    interactions, plus whatever the model gives to pairs that the runs cannot identify (a note gives its size).
    ``bins`` holds each factor's grid: its levels, or one ``[low, high]`` per quantile bin."""

    response: str
    alpha: float
    terms: tuple[FanovaTerm, ...]
    rest_share: float
    floor_main: float
    floor_pair: float
    n_trees: int
    n_bootstrap: int
    n_permutations: int
    bins: dict[str, list[Any]]
    notes: tuple[str, ...]

    def term(self, name: str) -> FanovaTerm:
        for term in self.terms:
            if term.term == name:
                return term
        raise KeyError(f"no term {name!r}; terms: {[t.term for t in self.terms]}")

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(t) for t in self.terms], columns=[f.name for f in fields(FanovaTerm)])

    def to_records(self) -> list[dict[str, Any]]:
        return _records(self.terms)

    def to_dict(self) -> dict[str, Any]:
        """The whole result, JSON-ready (NaN and infinities become None)."""
        summary = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("terms", "bins")}
        summary["notes"] = list(self.notes)
        summary = {k: _json_value(v) for k, v in summary.items()}
        return summary | {"bins": {k: [_json_value(v) for v in b] for k, b in self.bins.items()},
                          "terms": self.to_records()}


def decompose(
    df: pd.DataFrame,
    factors: Mapping[str, Any],
    response: str,
    *,
    n_trees: int = 64,
    n_bootstrap: int = 100,
    n_permutations: int = 99,
    max_bins: int = 8,
    alpha: float = 0.05,
    seed: int = 0,
    diverged_value: float | None = None,
    look_ahead: bool = True,
) -> FanovaResult:
    """Shares of the response's variance per factor and per pair of factors, for runs at arbitrary points.

    ``df``: one row per run (factor columns, ``response``, optionally ``status``); ``factors`` maps each factor to
    a :class:`FactorInfo` (or a spec ``Factor``). Failed runs follow :func:`select_runs`, as in ``fit_effects``.

    Model: each factor is put on a grid of at most ``max_bins`` levels (quantile bins for continuous values), a
    random forest of ``n_trees`` trees is fitted to the codes, and each tree's functional ANOVA is computed
    exactly under the uniform measure over the grid. A share is a component's variance over the tree's total,
    averaged over trees; ``rest_share`` is what the mains and pairs leave.

    Intervals at 1 - ``alpha`` from ``n_bootstrap`` refits on runs resampled with replacement (same grid): the
    alpha/2 and 1 - alpha/2 quantiles of the resampled shares, shifted by (share - their median) and clipped to
    [0, 1]. The shift is there because a resample holds only ~63% distinct runs, and a forest on fewer distinct
    points fits less structure: unshifted, the resampled shares of a strong term sat below the share itself (the
    interval missed its own estimate in 3 of 25 simulated data sets), those of weak terms above it. Shifted, the
    intervals were as wide as or wider than +-2 SD of the share over independent data sets and covered the share's
    mean over data sets in 92-100% of them (80 runs, 5 factors, y = 3 x1 x2 + noise). A share is never negative
    and is biased upwards for an inert term, so an interval above 0 says nothing: the test is the p-value.

    Every fit (observed, bootstrap, permutations) grows ``n_trees`` trees. Cost: 1 + n_bootstrap + 2 x
    n_permutations forests, about 8 s for 60 runs of 6 factors with the defaults on one CPU core.

    Noise floors (max statistics over ``n_permutations`` refits, each by the observed procedure):

    - mains: the response is permuted, which destroys every effect; the statistic is the largest main share of
      each refit. ``p = (1 + #{null max >= share}) / (1 + n_permutations)``, family-wise over the mains. Shares
      are relative: next to a dominant factor, a real but much weaker main can stay under the floor (the largest
      share noise alone would get) and be reported inconclusive; fit_effects on a design tests it directly.
    - pairs: the null is "additive, no interaction", not "nothing": a forest approximating an additive function
      with axis-aligned splits invents some pair share by itself (a step in x1 cut at different x2 in different
      branches), and more so with strong mains, so permuting the response alone would give too low a floor. The
      null data follow Freedman & Lane (1983): an additive model (OLS on one indicator per level of each factor)
      is fitted, its residuals are permuted and added back to its fitted values, and the forest is refitted; the
      statistic is the largest pair share over the identifiable pairs. Residuals are scaled by sqrt(n / (n - p))
      so the permuted noise is as large as the runs' noise (p: the additive model's rank); this errs on the
      conservative side.

    A term is an "effect" / "interaction" when its p-value is below ``alpha``, i.e. its share is above the floor;
    otherwise "inconclusive". A pair whose interaction the runs cannot separate from the main effects of all
    factors on the grid (e.g. a one-factor-at-a-time greedy path, where the two factors never vary jointly) is
    "not identifiable", with the reason in ``note``: the forest would still report some share for it, made up.

    How many runs would decide an inconclusive main (``look_ahead``), a power simulation: the additive model the runs
    show (a quadratic in each ordered factor's level code, one mean per level of a
    categorical or of a factor with three levels or fewer) plus their residual noise generates new runs, with each factor's levels
    drawn as the runs have them, at 1.5, 2, 3 and 4 times the run count; at each count the main floor is remeasured
    on permuted responses and the term is decided where most of ``LOOK_AHEAD_DRAWS`` simulated data sets put its
    share above that floor. Both move with the run count: the floor falls (6 factors, noise only: ~0.49 at 24 runs,
    0.35 at 48, 0.17 at 96, 0.12 at 192), and so does a real effect's share, as the forest fits more of the noise
    (0.42 at 24 and 48 runs, 0.25 at 96 for one effect), so the share seen now is not carried forward. The
    simulation leaves out interactions (they count as noise) and treats the fitted effects as true, so read the count
    as a rough guide. Cost: 4 x (LOOK_AHEAD_PERMUTATIONS + LOOK_AHEAD_DRAWS) forests at the larger counts at most,
    only when a main is inconclusive.

    Undesigned runs are observational: a factor correlated with an active one in the runs (a sampler that moved
    both together) can borrow its share; the tests say "associated", not "caused".
    """
    _check_options(n_trees, n_bootstrap, n_permutations, max_bins, alpha)
    infos = factor_infos(factors)
    if not infos:
        raise ValueError("name at least one factor")
    selection = select_runs(df, response, diverged_value=diverged_value)
    runs, k = selection.runs, len(infos)
    if len(runs) < 2 * k + 2:
        raise ValueError(f"{len(runs)} usable run(s) of {selection.n_runs}; a decomposition of {k} factor(s) needs "
                         f"at least 2 * factors + 2 = {2 * k + 2} used runs. " + "; ".join(selection.notes))
    grid = discretise(runs, infos, max_bins)
    y = runs[response].to_numpy(dtype=float)
    if np.ptp(y) == 0:
        raise ValueError(f"response {response!r} is constant ({y[0]:g}) over the {len(y)} used runs: no variance "
                         "to decompose")
    names, pairs = grid.names, list(combinations(range(k), 2))
    basis = additive_basis(grid.codes, grid.n_levels, range(k))
    reasons = {p: unidentifiable(grid, basis, *p) for p in pairs}
    testable = [p for p in pairs if reasons[p] is None]

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]

    def shares(codes: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        forest = fit_forest(codes, target, grid.categorical, n_trees=n_trees, seed=int(rng.integers(2**31)))
        return forest_shares(forest, grid.n_levels)

    main, pair = shares(grid.codes, y, streams[0])
    boot_main, boot_pair = [], []
    for _ in range(n_bootstrap):
        idx = streams[1].integers(0, len(y), len(y))
        m, p = shares(grid.codes[idx], y[idx], streams[1])
        boot_main.append(m)
        boot_pair.append(p)
    null_main = np.array([shares(grid.codes, streams[2].permutation(y), streams[2])[0].max()
                          for _ in range(n_permutations)])

    notes = list(selection.notes)
    df_resid = len(y) - basis.shape[1]
    null_pair = np.array([])
    if testable and n_permutations and df_resid >= 2:
        fitted = basis @ (basis.T @ y)
        resid = (y - fitted) * math.sqrt(len(y) / df_resid)
        rows, cols = np.array(testable).T
        null_pair = np.array([shares(grid.codes, fitted + streams[3].permutation(resid), streams[3])[1]
                              [rows, cols].max() for _ in range(n_permutations)])
    elif testable and n_permutations:
        notes.append(f"the additive null model of the pair test has {df_resid} residual degree(s) of freedom "
                     f"({len(y)} runs, rank {basis.shape[1]}): no pair floor; lower max_bins or add runs")
    if not n_permutations:
        notes.append("n_permutations=0: no noise floors, so nothing is called an effect or an interaction")
    if k == 1:
        notes.append("with one factor its share is 1 on any data, so it cannot be tested here: use fit_effects")

    terms = [_term(names[i], "main", main[i], [b[i] for b in boot_main], null_main, alpha, None)
             for i in range(k)]
    for i, j in pairs:
        term = f"{names[i]}:{names[j]}"
        if reasons[(i, j)] is not None:
            terms.append(FanovaTerm(term, "pair", *[math.nan] * 5, "not identifiable", reasons[(i, j)]))
            continue
        terms.append(_term(term, "pair", pair[i, j], [b[i, j] for b in boot_pair], null_pair, alpha,
                           None if len(null_pair) else "no pair floor (see notes)"))

    if look_ahead and len(null_main):
        terms = _look_ahead(terms, grid, y, n_trees, alpha, np.random.default_rng(seed + 1))

    rest = 1.0 - float(main.sum()) - sum(float(pair[i, j]) for i, j in testable)
    hidden = sum(float(pair[i, j]) for i, j in pairs if reasons[(i, j)] is not None)
    if hidden > 0:
        notes.append(f"the forest gives {hidden:.3g} of the variance to pairs the runs cannot identify; it is "
                     "counted in rest_share, not reported as interactions")
    if rest < 0:
        notes.append(f"rest_share {rest:.3g} < 0 from rounding, clipped to 0")
        rest = 0.0
    if grid.binned:
        notes.append(f"continuous factors cut into quantile bins (at most {max_bins}): {', '.join(grid.binned)}; "
                     "shares are under the uniform measure over bins, i.e. the runs' own spread of each factor")
    return FanovaResult(
        response=response, alpha=alpha, terms=tuple(terms), rest_share=rest,
        floor_main=_floor(null_main, alpha), floor_pair=_floor(null_pair, alpha),
        **selection.used(len(y)),
        n_trees=n_trees, n_bootstrap=n_bootstrap, n_permutations=n_permutations, bins=grid.bins,
        notes=tuple(notes),
    )


LOOK_AHEAD = (1.5, 2, 3, 4)  # run counts, as multiples of the runs used, at which the test is simulated
LOOK_AHEAD_PERMUTATIONS = 39  # the fewest that reach alpha 0.05: the floor is the largest null share
LOOK_AHEAD_DRAWS = 8  # simulated data sets per run count; a term is decided where most of them call it


def _look_ahead(terms: list[FanovaTerm], grid, y: np.ndarray, n_trees: int, alpha: float,
                rng: np.random.Generator) -> list[FanovaTerm]:
    """Each inconclusive main with its ``runs_to_decide`` and a note (see :func:`decompose`)."""
    k = len(grid.names)
    waiting = [i for i in range(k) if terms[i].verdict == "inconclusive"]
    if not waiting:
        return terms
    # The additive model the runs show, smooth so that it does not fit the noise: a quadratic in the level code for
    # an ordered factor of four or more levels, one mean per level otherwise.
    def columns(codes):
        columns = [np.ones(len(codes))]
        for f in range(k):
            levels = grid.n_levels[f]
            if grid.categorical[f] or levels <= 3:
                columns += [(codes[:, f] == v).astype(float) for v in range(1, levels)]
            else:
                c = codes[:, f] / (levels - 1) - 0.5
                columns += [c, c * c]
        return np.column_stack(columns)
    observed = columns(grid.codes)
    beta, *_ = np.linalg.lstsq(observed, y, rcond=None)
    resid = y - observed @ beta
    rank = np.linalg.matrix_rank(observed)
    if len(y) - rank < 2:
        return [replace(t, note="no look-ahead: the additive model leaves under 2 residual degrees of freedom")
                if i in waiting else t for i, t in enumerate(terms)]
    resid = resid * math.sqrt(len(y) / (len(y) - rank))
    permutations = max(LOOK_AHEAD_PERMUTATIONS, math.floor(1 / alpha - 1 + 1e-9) + 1)

    def draw(n):  # new runs: each factor's levels drawn as the runs have them, independently of the others
        return np.column_stack([grid.codes[rng.integers(0, len(y), n), f] for f in range(k)])

    def mains(codes, target):
        forest = fit_forest(codes, target, grid.categorical, n_trees=n_trees, seed=int(rng.integers(2**31)))
        return forest_shares(forest, grid.n_levels)[0]

    decided: dict[int, int] = {}
    for multiple in LOOK_AHEAD:
        n = math.ceil(multiple * len(y))
        floor = _floor(np.array([mains(draw(n), rng.permutation(y)[rng.integers(0, len(y), n)]).max()
                                 for _ in range(permutations)]), alpha)
        calls = np.zeros(k)
        for _ in range(LOOK_AHEAD_DRAWS):
            codes = draw(n)
            calls += mains(codes, columns(codes) @ beta + resid[rng.integers(0, len(y), n)]) > floor
        decided |= {i: n for i in waiting if i not in decided and calls[i] > LOOK_AHEAD_DRAWS / 2}
        if len(decided) == len(waiting):
            break
    last = math.ceil(LOOK_AHEAD[-1] * len(y))
    out = list(terms)
    for i in waiting:
        if i in decided:
            n = decided[i]
            note = (f"about {n} runs in all ({n - len(y)} more) would call it in most simulations with the additive "
                    "effects and noise these runs show")
        else:
            n, note = None, (f"not called in most simulations even at {last} runs ({LOOK_AHEAD[-1]:g} x these) with "
                             "the additive effects and noise these runs show: too weak to call from runs like these")
        out[i] = replace(terms[i], runs_to_decide=n, note=note)
    return out


def _check_options(n_trees: int, n_bootstrap: int, n_permutations: int, max_bins: int, alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    if n_trees < 1:
        raise ValueError(f"n_trees must be >= 1; got {n_trees}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0; got {n_bootstrap}")
    if max_bins < 2:
        raise ValueError(f"max_bins must be >= 2; got {max_bins}")
    least = math.floor(1 / alpha - 1 + 1e-9) + 1  # smallest n with (1 + 0) / (1 + n) < alpha
    if n_permutations < 0 or 0 < n_permutations < least:
        raise ValueError(f"n_permutations must be 0 (no noise floors) or >= {least}, so that a p-value "
                         f"(1 + count) / (1 + n_permutations) can fall below alpha={alpha}; got {n_permutations}")


def _allowed(n: int, alpha: float) -> int:
    """Most null statistics that may reach a share for p = (1 + count) / (1 + n) < alpha."""
    return math.ceil(alpha * (1 + n) - 1e-9) - 2


def _floor(null: np.ndarray, alpha: float) -> float:
    """The share above which p < alpha: the (allowed + 1)-th largest null statistic."""
    if not len(null):
        return math.nan
    return float(np.sort(null)[::-1][_allowed(len(null), alpha)])


def _term(name: str, kind: str, share: float, boot: list[float], null: np.ndarray, alpha: float,
          note: str | None) -> FanovaTerm:
    if boot:
        low, mid, high = np.quantile(boot, [alpha / 2, 0.5, 1 - alpha / 2])
        low, high = max(0.0, low + share - mid), min(1.0, high + share - mid)  # centred on the share
    else:
        low, high = math.nan, math.nan
    if len(null):
        count = int(np.sum(null >= share))
        p_value = (1 + count) / (1 + len(null))
        called = count <= _allowed(len(null), alpha)
        verdict = ("effect" if kind == "main" else "interaction") if called else "inconclusive"
    else:
        p_value, verdict = math.nan, "inconclusive"
    return FanovaTerm(name, kind, float(share), float(low), float(high), p_value, _floor(null, alpha), verdict,
                      note or "")
