"""The level grid of undesigned runs, the forest fitted on it, and each tree's exact functional ANOVA.

Used by :func:`orchestrator.analysis.fanova.decompose`.

- :func:`discretise`: every factor onto a grid of levels, codes ``0 .. L_k - 1``. A categorical factor: its
  levels seen among the runs (in the factor's order); a numeric factor with at most ``max_bins`` distinct values:
  those values; otherwise quantile bins (edges computed in log space for a log-scale factor) with at most
  ``max_bins`` bins, none empty.
- :func:`fit_forest`: a random forest of scikit-learn trees on the codes.
- :func:`additive_basis`, :func:`unidentifiable`: which pairs the runs can separate from additive effects.
- :func:`tree_components`: for every tree, the total variance and the variance of each main and pair component
  of its functional ANOVA under the uniform product measure over the grid, computed exactly from the leaves.

Why this is exact and cheap: a tree's leaves partition the grid into boxes, and a box is a product of one set of
levels per factor. Write ``M[l, k, v]`` (level ``v`` of factor ``k`` lies in leaf ``l``'s box), ``frac[l, k] =
mean_v M[l, k, v]`` and ``P_l = prod_k frac[l, k]`` (the leaf's share of the grid). Averaging the tree over all
factors but ``i`` (and ``j``) gives ``F_i[v] = sum_l val_l P_l M[l,i,v] / frac[l,i]`` and ``F_ij[v, w] = sum_l val_l
P_l M[l,i,v] M[l,j,w] / (frac[l,i] frac[l,j])``, so all marginals of a tree come from one matrix product of its
``(leaves x sum-of-levels)`` matrix, never from predicting on the grid (``prod_k L_k`` points). Every box holds a
training run, hence at least one level per factor: ``frac > 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.tree import DecisionTreeRegressor

from orchestrator.analysis.factors import FactorInfo

MIN_SAMPLES_LEAF = 2


@dataclass(frozen=True)
class Bins:
    """Runs as level codes. ``bins[name]``: the grid's levels (values or categories), or for a binned factor one
    ``[low, high]`` per bin (outer edges: the extreme runs; inner edges: quantiles, in log space for log scale)."""

    names: tuple[str, ...]
    codes: np.ndarray  # (runs, factors), int
    n_levels: np.ndarray  # (factors,)
    categorical: np.ndarray  # (factors,), bool
    bins: dict[str, list[Any]]
    binned: tuple[str, ...]  # factors cut into quantile bins


def discretise(runs: pd.DataFrame, infos: Mapping[str, FactorInfo], max_bins: int) -> Bins:
    codes, bins, binned = [], {}, []
    for name, info in infos.items():
        if name not in runs.columns:
            raise ValueError(f"factor {name!r} is not a column; columns: {list(runs.columns)}")
        if info.kind == "categorical":
            code, levels = _categorical_codes(name, runs[name], info)
        else:
            code, levels, was_binned = _numeric_codes(name, runs[name], info, max_bins)
            if was_binned:
                binned.append(name)
        if len(levels) < 2:
            raise ValueError(f"factor {name!r} has a single level among the used runs ({levels[0]!r}); "
                             "a decomposition needs at least 2")
        codes.append(code)
        bins[name] = levels
    return Bins(tuple(infos), np.column_stack(codes).astype(np.int64),
                np.array([len(bins[n]) for n in infos]),
                np.array([info.kind == "categorical" for info in infos.values()]), bins, tuple(binned))


def _categorical_codes(name: str, values: pd.Series, info: FactorInfo) -> tuple[np.ndarray, list[Any]]:
    unknown = sorted({str(v) for v in values if v not in info.levels})
    if unknown:
        raise ValueError(f"factor {name!r} has values {unknown} that are not among its levels {list(info.levels)}")
    seen = [level for level in info.levels if (values == level).any()]
    index = {level: i for i, level in enumerate(seen)}
    return np.array([index[v] for v in values]), seen


def _numeric_codes(name: str, values: pd.Series, info: FactorInfo,
                   max_bins: int) -> tuple[np.ndarray, list[Any], bool]:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(x)):
        bad = values[~np.isfinite(x)].tolist()[:5]
        raise ValueError(f"numeric factor {name!r} has values that are not finite numbers: {bad}")
    if info.scale == "log" and np.any(x <= 0):
        raise ValueError(f"log-scale factor {name!r} has values <= 0: {sorted(set(x[x <= 0].tolist()))[:5]}")
    distinct = np.unique(x)
    if len(distinct) <= max_bins:
        return np.searchsorted(distinct, x), [float(v) for v in distinct], False
    # Quantile bins: equal numbers of runs per bin, so the uniform measure over bins is the runs' own marginal.
    # Edges are placed in log space for a log-scale factor (an edge between two runs is their geometric mean).
    t = np.log(x) if info.scale == "log" else x
    inner = np.unique(np.quantile(t, np.linspace(0.0, 1.0, max_bins + 1))[1:-1])
    raw = np.searchsorted(inner, t, side="right")
    used, code = np.unique(raw, return_inverse=True)  # drop empty bins (ties at an edge)
    edges = np.concatenate([[x.min()], np.exp(inner) if info.scale == "log" else inner, [x.max()]])
    levels = [[float(edges[b]), float(edges[b + 1])] for b in used]
    # Merged empty bins: a bin's low edge is the previous kept bin's high edge.
    for i in range(1, len(levels)):
        levels[i][0] = levels[i - 1][1]
    return code, levels, True


def fit_forest(codes: np.ndarray, y: np.ndarray, categorical: np.ndarray, *, n_trees: int,
               seed: int) -> list[DecisionTreeRegressor]:
    """A random forest on the level codes: ``n_trees`` CART trees, each on a bootstrap sample (Breiman; as in
    Hutter et al. 2014), with every factor a split candidate and ``min_samples_leaf=2``.

    This is scikit-learn's ``RandomForestRegressor(max_features=1.0, bootstrap=True)`` fitted tree by tree, with the
    bootstrap as sample weights exactly as it does, minus its per-tree estimator cloning and parameter checks,
    which at 60 runs cost as much as growing the tree (the whole forest then fits in half the time).

    A random forest rather than extra trees: on a few ordinal codes, random thresholds waste splits and smear a
    component over neighbouring factors, while the forest's chosen splits follow the data; the bootstrap gives the
    trees their diversity. Every factor is a split candidate: with half of them, the share of a pure x1*x2
    interaction fell from ~0.35 to ~0.18 in our runs (a split on one of the two factors alone gains nothing, so it
    is often not taken). Leaves of 3 or 5 runs lowered the power for mains at the same false-interaction rate.

    A split "code <= t" can only cut a factor's levels into a lower and an upper run of codes. For a categorical
    factor the declared order of its levels means nothing, so its codes are first renumbered by the mean response
    of each level in this sample: for squared error the best split of a categorical is then among these ordered
    cuts (Breiman et al. 1984, sec. 9.4), and the order is refitted on every resample and permutation, so the nulls
    go through the same procedure. Shares do not depend on the numbering (a relabelling of one factor's levels
    leaves the uniform measure unchanged), so nothing is mapped back.
    """
    import sklearn  # here, so that importing the analysis package does not load scikit-learn
    from sklearn.tree import DecisionTreeRegressor

    x = codes.copy()
    for k in np.flatnonzero(categorical):
        n_levels = int(codes[:, k].max()) + 1
        sums = np.bincount(codes[:, k], weights=y, minlength=n_levels)
        counts = np.bincount(codes[:, k], minlength=n_levels)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), y.mean())
        rank = np.empty(n_levels, dtype=np.int64)
        rank[np.argsort(means, kind="stable")] = np.arange(n_levels)
        x[:, k] = rank[codes[:, k]]
    x = np.ascontiguousarray(x, dtype=np.float32)  # the trees' own dtype; codes are exact in float32
    target = np.ascontiguousarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    trees = []
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for _ in range(n_trees):
            weight = np.bincount(rng.integers(0, len(target), len(target)), minlength=len(target)).astype(float)
            tree = DecisionTreeRegressor(min_samples_leaf=MIN_SAMPLES_LEAF, random_state=int(rng.integers(2**31)))
            trees.append(tree.fit(x, target, sample_weight=weight, check_input=False))
    return trees


def leaf_masks(forest: list[DecisionTreeRegressor], n_levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All leaves of all trees: (tree index, value, mask ``M[leaf, factor, level]``), levels padded to the widest
    factor (padding False). Boxes are built top-down for all trees at once, one tree depth per step."""
    trees = [est.tree_ for est in forest]
    sizes = np.array([t.node_count for t in trees])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, offsets)])
    right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1)
                            for t, o in zip(trees, offsets)])
    feature = np.concatenate([t.feature for t in trees])
    threshold = np.concatenate([t.threshold for t in trees])
    value = np.concatenate([t.value[:, 0, 0] for t in trees])
    tree_of = np.repeat(np.arange(len(trees)), sizes)

    k = len(n_levels)
    low = np.full((len(left), k), -np.inf)  # a level code c is in the box when low < c <= high
    high = np.full((len(left), k), np.inf)
    frontier = offsets
    while len(frontier):
        node = frontier[left[frontier] >= 0]
        f, t, lc, rc = feature[node], threshold[node], left[node], right[node]
        low[lc], high[lc], low[rc], high[rc] = low[node], high[node], low[node], high[node]
        high[lc, f] = np.minimum(high[lc, f], t)
        low[rc, f] = np.maximum(low[rc, f], t)
        frontier = np.concatenate([lc, rc])
    leaf = np.flatnonzero(left < 0)
    level = np.arange(int(n_levels.max()))
    mask = ((level > low[leaf, :, None]) & (level <= high[leaf, :, None])
            & (level < n_levels[:, None]))
    return tree_of[leaf], value[leaf], mask


def tree_components(forest: list[DecisionTreeRegressor], n_levels: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tree: total variance ``V[t]``, main variances ``Vi[t, k]`` and pair variances ``Vij[t, i, j]``
    (symmetric, zero diagonal) of its functional ANOVA under the uniform measure over the grid."""
    n_levels = np.asarray(n_levels)
    tree, value, mask = leaf_masks(forest, n_levels)
    n_trees, k, width = len(forest), len(n_levels), mask.shape[2]
    valid = np.arange(width) < n_levels[:, None]  # (k, width)
    frac = mask.sum(axis=2) / n_levels  # (leaves, k), > 0
    share = np.prod(frac, axis=1)  # P_l
    weight = (mask / frac[:, :, None]).reshape(len(value), k * width)

    # Pad each tree's leaves to the same count so one batched matrix product serves every tree.
    counts = np.bincount(tree, minlength=n_trees)
    slot = np.arange(len(tree)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[tree]
    padded = np.zeros((n_trees, counts.max(), k * width))
    padded[tree, slot] = weight
    a = np.zeros((n_trees, counts.max()))
    a[tree, slot] = value * share

    f0 = a.sum(axis=1)  # (T,)
    total = np.bincount(tree, weights=share * (value - f0[tree]) ** 2, minlength=n_trees)
    main = np.einsum("tl,tld->td", a, padded).reshape(n_trees, k, width)
    pair = np.matmul(padded.transpose(0, 2, 1) * a[:, None, :], padded).reshape(n_trees, k, width, k, width)

    centred = np.where(valid, main - f0[:, None, None], 0.0)
    v_main = (centred**2).sum(axis=2) / n_levels
    resid = pair - main[:, :, :, None, None] - centred[:, None, None, :, :]  # F_ij - F_i - F_j + f0
    resid *= valid[:, :, None, None] & valid[None, None, :, :]
    v_pair = (resid**2).sum(axis=(2, 4)) / np.outer(n_levels, n_levels)
    v_pair[:, np.arange(k), np.arange(k)] = 0.0
    return total, v_main, v_pair


def forest_shares(forest: list[DecisionTreeRegressor], n_levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Main shares (k,) and pair shares (k, k) of the forest: each tree's component variance over its total
    variance, averaged over the trees (Hutter et al. 2014). Constant trees have no shares and are left out; a
    forest of constant trees has all shares 0."""
    total, v_main, v_pair = tree_components(forest, n_levels)
    varies = total > 1e-12 * max(1.0, float(np.max(total, initial=0.0)))
    if not varies.any():
        k = len(n_levels)
        return np.zeros(k), np.zeros((k, k))
    t = total[varies]
    return (v_main[varies] / t[:, None]).mean(axis=0), (v_pair[varies] / t[:, None, None]).mean(axis=0)


def additive_basis(codes: np.ndarray, n_levels: np.ndarray, factors: Any) -> np.ndarray:
    """Orthonormal basis of the additive model's columns: intercept and one indicator per level of each factor."""
    columns = [np.ones(len(codes))] + [(codes[:, f] == v).astype(float)
                                       for f in factors for v in range(1, n_levels[f])]
    u, s, _ = np.linalg.svd(np.column_stack(columns), full_matrices=False)
    return u[:, s > 1e-9 * s[0]]


def _separable(basis: np.ndarray, codes: np.ndarray, i: int, j: int) -> bool:
    """Whether some contrast of the (i, j) cells lies outside the additive span: an estimable interaction."""
    cells = np.unique(codes[:, [i, j]], axis=0, return_inverse=True)[1].ravel()
    indicators = np.eye(cells.max() + 1)[cells]
    left = indicators - basis @ (basis.T @ indicators)
    return bool(np.abs(left).max() > 1e-8)


def unidentifiable(grid: Bins, basis: np.ndarray, i: int, j: int) -> str | None:
    """None when the runs can estimate the (i, j) interaction on the grid (some contrast of its cells lies outside
    the additive model of all factors, ``basis``), else the reason in words."""
    if _separable(basis, grid.codes, i, j):
        return None
    a, b = grid.names[i], grid.names[j]
    if not _separable(additive_basis(grid.codes, grid.n_levels, (i, j)), grid.codes, i, j):
        return (f"{a} and {b} never vary jointly in the used runs: no 2 x 2 square (or longer cycle) of their "
                "levels, e.g. a one-factor-at-a-time path; add the missing corners of a square to estimate it")
    return (f"the runs where {a} and {b} vary jointly also differ in other factors: their interaction cannot be "
            "separated from those factors' main effects")
