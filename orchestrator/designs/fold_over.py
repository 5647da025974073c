"""Fold-over: the runs of a fraction again with some signs switched, run next to break the fraction's aliases."""

from __future__ import annotations

import numpy as np

from orchestrator.designs.base import DesignError
from orchestrator.designs.fractional_factorial import FractionalFactorial
from orchestrator.designs.regular import LETTERS, RegularDesign
from orchestrator.designs.two_level import TwoLevelDesign, decode, two_level
from orchestrator.spec import Factor


def fold_over(design: RegularDesign, letters: str | None = None) -> tuple[np.ndarray, RegularDesign]:
    """Switch the signs of ``letters`` (default: every factor) in every run of ``design``.

    Returns the new runs and the combined design (old runs, then new). A defining word stays in the combined
    design iff it holds an even number of the switched letters (its sign is the same in both halves; otherwise the
    halves cancel it). So the full fold-over drops every odd-length word and a resolution III fraction becomes
    resolution IV; folding one factor drops every word that holds it, which clears that factor's main effect and
    its two-factor interactions of all other mains and 2fis (Montgomery, ch. 8, fold-over of resolution III
    fractions).
    """
    letters = design.letters if letters is None else letters
    if not letters or not set(letters) <= set(design.letters):
        raise DesignError(f"fold-over letters must be among {design.letters}; got {letters!r}")
    kept = [w for w in design.defining_relation if len(set(w) & set(letters)) % 2 == 0]
    if len(kept) == len(design.defining_relation):
        # Then the switched runs are the design's own runs again: a resolution IV fraction (all words of even
        # length) folded on every factor, or a factor that appears in no defining word.
        raise DesignError(f"switching {letters} reproduces the design's own runs (every defining word holds an even "
                          "number of those letters), so it would clear no alias; fold a single factor instead")
    import pyDOE3  # here, not at the top: it loads scipy.stats (0.5 s)

    combined = pyDOE3.fold(design.coded_matrix(), [design.letters.index(c) for c in letters])
    return combined[design.runs:], RegularDesign(combined, kept)


class FoldOver(TwoLevelDesign):
    """A fractional factorial followed by its fold-over on one factor (``fold``, a factor name) or on all.

    ``points()`` gives both halves: the first half's cells keep their keys, so a strategy that skips known cells
    runs only the new half after a wave of ``base``; ``new_points()`` gives the new half alone. Center points are
    ``base``'s, once. Not in DESIGNS: it augments a fraction already chosen, it is not a design to start from.
    """

    name = "fold_over"

    def __init__(self, base: FractionalFactorial, fold: str | None = None):
        self.base, self.fold, self.center_points = base, fold, base.center_points

    def _folded(self, factors: dict[str, Factor]) -> tuple[np.ndarray, RegularDesign]:
        names = two_level(factors)
        if self.fold is not None and self.fold not in names:
            raise DesignError(f"fold: {self.fold!r} is not a two-level factor; the two-level factors are "
                              f"{', '.join(names)}")
        letters = None if self.fold is None else LETTERS[names.index(self.fold)]
        return fold_over(self.base.fraction(factors), letters)

    def fraction(self, factors: dict[str, Factor]) -> RegularDesign:
        return self._folded(factors)[1]

    def new_points(self, factors: dict[str, Factor]) -> list[dict]:
        return decode(self._folded(factors)[0], factors)
