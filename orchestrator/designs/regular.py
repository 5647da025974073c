"""Regular two-level designs in coded units: the runs, the defining relation and the aliases it implies.

Coding: -1 is a factor's ``levels[0]`` (low), +1 its ``levels[1]`` (high). Effects and words are written in the
textbook letters A, B, C, ... in factor order, skipping I, which stands for the identity column (Montgomery,
*Design and Analysis of Experiments*, ch. 8). Every coded column squares to I, so the product of two effects is
the symmetric difference of their letters, and an effect E is aliased with E x W for every word W of the defining
relation. Signs are left out: E = -F confounds E with F exactly as E = +F does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"


def multiply(a: str, b: str) -> str:
    """The product of two effects, e.g. ``multiply("ABCE", "BCDF") == "ADEF"``."""
    return "".join(sorted(set(a) ^ set(b), key=LETTERS.index))


def _order(effect: str) -> tuple[int, list[int]]:
    return len(effect), [LETTERS.index(c) for c in effect]


def subgroup(words: Iterable[str]) -> tuple[str, ...]:
    """Every product of the given words (the defining contrast subgroup without I), shortest first."""
    group = {""}
    for word in words:
        group |= {multiply(word, other) for other in group}
    group.discard("")
    return tuple(sorted(group, key=_order))


class RegularDesign:
    """Runs (a ``runs x k`` matrix of +-1) and the words of their defining relation.

    The relation is the theory; tests check it against the matrix (a word is in it iff the product of its columns
    is constant), so a design built by hand and its claimed aliasing cannot drift apart unnoticed.
    """

    def __init__(self, coded: np.ndarray, defining_relation: Iterable[str]):
        self._coded = np.array(coded, dtype=int)  # a copy: the caller keeps a writable one
        self._coded.flags.writeable = False
        self.defining_relation: tuple[str, ...] = tuple(sorted(defining_relation, key=_order))

    @property
    def k(self) -> int:
        return self._coded.shape[1]

    @property
    def runs(self) -> int:
        return self._coded.shape[0]

    @property
    def letters(self) -> str:
        return LETTERS[:self.k]

    def coded_matrix(self) -> np.ndarray:
        """The runs in coded units, read-only, columns in factor order."""
        return self._coded

    @property
    def resolution(self) -> int | None:
        """Length of the shortest defining word; None when there is none (a full factorial: nothing aliased)."""
        return min(map(len, self.defining_relation), default=None)

    @property
    def wordlength_pattern(self) -> tuple[int, ...]:
        """(A_1, ..., A_k): the number of defining words of each length. Minimum aberration = smallest, compared
        from the shortest length on (Fries and Hunter 1980)."""
        return tuple(sum(len(w) == n for w in self.defining_relation) for n in range(1, self.k + 1))

    def aliases(self, effect: str, max_order: int = 2) -> list[str]:
        """The effects of at most ``max_order`` factors confounded with ``effect`` (letters), lowest order first."""
        found = {multiply(effect, word) for word in self.defining_relation}
        return sorted((e for e in found if 0 < len(e) <= max_order), key=_order)

    def alias_table(self, names: Sequence[str] | None = None, max_order: int = 2) -> dict[str, list[str]]:
        """For every main effect and two-factor interaction, the effects (up to ``max_order`` factors) it is
        aliased with. With ``names`` (one per column, in order) effects are written as factor names joined by ':'
        (the patsy/statsmodels term names, e.g. ``lr:batch_size``); otherwise in letters (``AB``).
        An empty list means the effect is clear of everything up to ``max_order``."""
        label = self._labeller(names)
        effects = ["".join(c) for n in (1, 2) for c in itertools.combinations(self.letters, n)]
        return {label(e): [label(a) for a in self.aliases(e, max_order)] for e in effects}

    def _labeller(self, names: Sequence[str] | None):
        if names is None:
            return lambda effect: effect
        if len(names) != self.k:
            raise ValueError(f"{len(names)} names for a design of {self.k} factors")
        by_letter = dict(zip(self.letters, names))
        return lambda effect: ":".join(by_letter[c] for c in effect)
