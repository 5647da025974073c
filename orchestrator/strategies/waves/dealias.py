"""DE-ALIAS: the one designed wave that separates what the screen left aliased, before the model takes over: the
fold-over that clears the significant alias chains, or a D-optimal augmentation where no fold-over can. On the
screening region, so the effects fit keeps one geometry."""

from __future__ import annotations

import itertools

import numpy as np

from orchestrator.analysis.coding import term_factors
from orchestrator.cells import Seeds, WavePlan
from orchestrator.designs.fold_over import fold_over
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.designs.regular import multiply
from orchestrator.run_record import RunRecord
from orchestrator.strategies.waves.screen import Reading
from orchestrator.strategies.waves.space import Axis, Region


def fold_wave(region: Region, axes: dict[str, Axis], seeds: Seeds, reading: Reading, designed: list[RunRecord],
              runs_per_wave: int) -> WavePlan | None:
    """A designed wave that separates the significant alias chains, at the spec's seeds: the screening fraction
    folded over on the factors (:func:`best_fold`) when that leaves every effect of those chains clear; otherwise
    the corner points (:func:`augment`) that, added to the ``designed`` runs, make the two-factor model estimable
    (every two-factor interaction when the runs can carry them all, else those of the chains), chosen for the
    most precise estimates (D-optimal). None when it would clear nothing new."""
    active = region.active
    per_seed = runs_per_wave // len(seeds.seeds)
    fraction = choose_fraction(len(active), per_seed)
    if fraction.resolution is None:
        return None  # a full factorial aliases nothing: the alias came from missing runs, not the design
    letter = dict(zip(active, fraction.letters))
    chains = [{_word(term, letter) for term in (t, *aliases)} for t, aliases in reading.aliased.items()]
    members = set().union(*chains)
    what = "; ".join(f"{t} is aliased with {', '.join(a)}" for t, a in reading.aliased.items())
    letters, clear = best_fold(fraction.defining_relation, fraction.letters, chains)
    if letters is not None and clear == len(members):
        new_runs, _ = fold_over(fraction, letters)
        names = dict(zip(fraction.letters, active))
        switched = "every factor" if len(letters) == len(active) else ", ".join(names[c] for c in letters)
        design, how = "fold_over", f"fold-over of the screening fraction on {switched}"
    else:
        windows = region.as_dict()
        old = np.array([[1 if r.levels[n] == windows[n][1] else -1 for n in active] for r in designed
                        if all(r.levels[n] in windows[n] for n in active)])
        pairs = [tuple(active.index(next(n for n, c in letter.items() if c == x)) for x in m)
                 for m in sorted(members) if len(m) == 2]
        new_runs, model = augment(old, per_seed, pairs)
        design, how = "augmentation", (f"D-optimal augmentation: {len(new_runs)} corner points that, with the "
                                       f"{len(old)} run, make {model} estimable (a fold-over would leave "
                                       f"{len(members) - clear} of the {len(members)} effects in the chains aliased)")
    points = [region.decode(axes, row) for row in new_runs]
    if seeds.recorded(points):
        return None
    return WavePlan(seeds.at_every_seed(points), design, f"de-alias: {how} ({what})")


def augment(old: np.ndarray, count: int, chain_pairs: list[tuple[int, int]]) -> tuple[np.ndarray, str]:
    """``count`` corner points (+-1 rows, none in ``old``) that maximise det(X'X) of the model fitted on ``old`` and
    them together: intercept, main effects and every two-factor interaction when the runs can carry them all with a
    residual df to spare, else the two-factor interactions ``chain_pairs`` (column pairs). Greedy forward selection,
    then exchange passes (Fedorov's algorithm, as in Atkinson, Donev and Tobias, Optimum Experimental Designs, ch. 12)."""
    k = old.shape[1]
    every = list(itertools.combinations(range(k), 2))
    pairs, model = ((every, "every two-factor interaction") if 1 + k + len(every) < len(old) + count
                    else (chain_pairs, "the two-factor interactions of the significant chains"))
    candidates = np.array([c for c in itertools.product((-1, 1), repeat=k)
                           if not any((c == row).all() for row in old)])

    def columns(rows: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(rows)), rows, *[rows[:, i] * rows[:, j] for i, j in pairs]])

    cand = columns(candidates)
    ridge = 1e-6 * np.eye(cand.shape[1])  # keeps the first steps' information matrix invertible

    def logdet(chosen: list[int]) -> float:
        x = np.vstack([columns(old), cand[chosen]]) if chosen else columns(old)
        return np.linalg.slogdet(x.T @ x + ridge)[1]

    chosen: list[int] = []
    for _ in range(min(count, len(candidates))):
        free = [i for i in range(len(candidates)) if i not in chosen]
        chosen.append(max(free, key=lambda i: logdet(chosen + [i])))
    for _ in range(3):  # exchange: swap a chosen point for a free one while the determinant grows
        improved = False
        for pos in range(len(chosen)):
            free = [i for i in range(len(candidates)) if i not in chosen]
            current = logdet(chosen)
            best = max(free, key=lambda i: logdet(chosen[:pos] + [i] + chosen[pos + 1:]), default=None)
            if best is not None and logdet(chosen[:pos] + [best] + chosen[pos + 1:]) > current + 1e-9:
                chosen[pos], improved = best, True
        if not improved:
            break
    return candidates[sorted(chosen)], model


def best_fold(defining: tuple[str, ...], letters: str, chains: list[set[str]]) -> tuple[str | None, int]:
    """Which factors to switch so that the fraction and its fold-over together leave the most effects of ``chains``
    (words: main effects and two-factor interactions in letters) clear of every other effect of at most two factors;
    ties go to fewer switched factors. A full fold-over clears a resolution III fraction's main effects, a single
    factor's fold that factor's two-factor interactions (Montgomery, ch. 8); searching every choice (2^k - 1, k <= 11)
    finds the one that separates the chains the screen found significant, which neither rule alone does."""
    members = set().union(*chains) if chains else set()
    best, best_clear = None, -1
    for size in range(1, len(letters) + 1):
        for switched in itertools.combinations(letters, size):
            kept = [w for w in defining if len(set(w) & set(switched)) % 2 == 0]
            if len(kept) == len(defining):
                continue  # the switched runs are the fraction's own: nothing cleared
            clear = sum(all(len(multiply(m, w)) > 2 for w in kept) for m in members)
            if clear > best_clear:
                best, best_clear = "".join(switched), clear
    return best, max(best_clear, 0)


def _word(term: str, letter: dict[str, str]) -> str:
    return "".join(sorted(letter[f] for f in term_factors(term)))
