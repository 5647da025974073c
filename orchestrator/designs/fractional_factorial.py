"""Two-level fractional factorials 2^(k-p): the textbook minimum-aberration generators, chosen by runs or resolution."""

from __future__ import annotations

import math
import string

from orchestrator.designs.base import DesignError
from orchestrator.designs.regular import LETTERS, RegularDesign, subgroup
from orchestrator.designs.two_level import TwoLevelDesign, crossed, two_level
from orchestrator.spec import Factor

# Generators for p >= 2 as in Montgomery, Design and Analysis of Experiments, Table 8.14 (after Box, Hunter and
# Hunter; see also NIST/SEMATECH e-Handbook 5.3.3.4.7), as principal fractions (every sign +), up to 128 runs. The
# half fractions 2^(k-1) are not listed: their best generator is always the product of all other letters
# (resolution k). Each entry has minimum aberration among all regular fractions of its size: the tests search every
# alternative for the 4- to 16-run ones; the 32- to 128-run ones were searched the same way once (minutes).
_TABLE: dict[int, tuple[str, ...]] = {
    5: ("D=AB E=AC",),
    6: ("E=ABC F=BCD", "D=AB E=AC F=BC"),
    7: ("F=ABCD G=ABDE", "E=ABC F=BCD G=ACD", "D=AB E=AC F=BC G=ABC"),
    8: ("G=ABCD H=ABEF", "F=ABC G=ABD H=BCDE", "E=BCD F=ACD G=ABC H=ABD"),
    9: ("H=ACDFG J=BCEFG", "G=ABCD H=ACEF J=CDEF", "F=BCDE G=ACDE H=ABDE J=ABCE",
        "E=ABC F=BCD G=ACD H=ABD J=ABCD"),
    10: ("H=ABCG J=BCDE K=ACDF", "G=BCDF H=ACDF J=ABDE K=ABCE", "F=ABCD G=ABCE H=ABDE J=ACDE K=BCDE",
         "E=ABC F=BCD G=ACD H=ABD J=ABCD K=AB"),
    11: ("H=ABCG J=BCDE K=ACDF L=ABCDEFG", "G=CDE H=ABCD J=ABF K=BDEF L=ADEF",
         "F=ABC G=BCD H=CDE J=ACD K=ADE L=BDE", "E=ABC F=BCD G=ACD H=ABD J=ABCD K=AB L=AC"),
}
MAX_FACTORS = max(_TABLE)


class Fraction(RegularDesign):
    """A 2^(k-p) fraction: the full factorial in the first k-p letters, each of the other p letters set to the
    product of base letters that its generator names, e.g. ``Fraction(5, {"E": "ABCD"})`` (I = ABCDE)."""

    def __init__(self, k: int, generators: dict[str, str]):
        letters = LETTERS[:k]
        base = letters[:k - len(generators)]
        if list(generators) != list(letters[len(base):]):
            raise DesignError(f"generators of a {k}-factor fraction must define {', '.join(letters[len(base):])} "
                              f"in order; got {', '.join(generators) or 'none'}")
        for added, word in generators.items():
            if len(word) < 2 or len(set(word)) != len(word) or not set(word) <= set(base):
                raise DesignError(f"generator {added}={word}: must be a product of at least two distinct base "
                                  f"letters {base}")
        # pyDOE3.fracfact wants consecutive lowercase letters; ours skip I, so map by position.
        lower = {c: string.ascii_lowercase[i] for i, c in enumerate(LETTERS)}
        gen = " ".join([lower[c] for c in base] + ["".join(lower[c] for c in w) for w in generators.values()])
        import pyDOE3  # here, not at the top: it loads scipy.stats (0.5 s), which the full factorial never needs

        super().__init__(pyDOE3.fracfact(gen), subgroup(word + added for added, word in generators.items()))
        self.generators = dict(generators)

    def __str__(self) -> str:
        if not self.generators:
            return f"2^{self.k} full factorial"
        return f"2^({self.k}-{len(self.generators)}) resolution {_roman(self.resolution)}: {_spell(self.generators)}"


def _spell(generators: dict[str, str]) -> str:
    return ", ".join(f"{added}={word}" for added, word in generators.items())


def _roman(n: int | None) -> str:
    return {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX", 10: "X", 11: "XI"}.get(n, str(n))


def fractions(k: int) -> list[Fraction]:
    """The catalogue for k two-level factors, fewest runs first: the table's fractions, the half fraction (k >= 3;
    for k = 2 it would alias the two main effects) and the full factorial."""
    if not 1 <= k <= MAX_FACTORS:
        raise DesignError(f"fractional factorials are tabled for 1 to {MAX_FACTORS} two-level factors; got {k}")
    rows = [dict(item.split("=") for item in row.split()) for row in reversed(_TABLE.get(k, ()))]
    if k >= 3:
        rows.append({LETTERS[k - 1]: LETTERS[:k - 1]})
    return [Fraction(k, row) for row in [*rows, {}]]


def _aberration_key(fraction: Fraction) -> tuple[float, tuple[int, ...]]:
    # Higher resolution first, then minimum aberration (fewest short words).
    return fraction.resolution or math.inf, tuple(-a for a in fraction.wordlength_pattern)


def choose_fraction(k: int, runs: int) -> Fraction:
    """The highest-resolution, then minimum-aberration, design of k two-level factors in at most ``runs`` runs
    (the full factorial when it fits: nothing aliased)."""
    catalogue = fractions(k)
    fitting = [f for f in catalogue if f.runs <= runs]
    if not fitting:
        smallest = catalogue[0]
        raise DesignError(f"no two-level fraction of k={k} factors fits in runs={runs}: the smallest is "
                          f"{smallest} with {smallest.runs} runs")
    return max(fitting, key=_aberration_key)


def fraction_at_resolution(k: int, resolution: int) -> Fraction:
    """The fewest-run design of k two-level factors with at least this resolution (3: mains clear of each other,
    4: mains clear of two-factor interactions, 5: two-factor interactions clear of each other too)."""
    if resolution < 3:
        raise DesignError(f"resolution must be at least 3 (III: main effects clear of each other); got {resolution}")
    return next(f for f in fractions(k) if (f.resolution or math.inf) >= resolution)


class FractionalFactorial(TwoLevelDesign):
    """A 2^(k-p) fraction over the factors with two levels (``levels[0]`` is low, ``levels[1]`` high).

    Pick it by ``runs`` (:func:`choose_fraction`), by ``resolution`` (:func:`fraction_at_resolution`, default V:
    main effects and two-factor interactions clear of each other, which the interaction analysis needs), or by
    explicit ``generators`` in letters (``{"E": "ABCD"}``; A is the first two-level factor in spec order).
    Factors with any other number of levels are crossed in full with the fraction (:class:`TwoLevelDesign`), and
    ``runs`` is shared among the combinations of their levels. ``center_points`` come on top of ``runs``.
    """

    name = "fractional_factorial"

    def __init__(self, *, runs: int | None = None, resolution: int | None = None,
                 generators: dict[str, str] | None = None, center_points: int = 0):
        if sum(x is not None for x in (runs, resolution, generators)) > 1:
            raise DesignError("give at most one of runs, resolution, generators")
        if center_points < 0:
            raise DesignError(f"center_points must be >= 0; got {center_points}")
        self.runs, self.generators, self.center_points = runs, generators, center_points
        self.resolution = 5 if runs is None and generators is None and resolution is None else resolution

    def fraction(self, factors: dict[str, Factor]) -> Fraction:
        k = len(two_level(factors))
        if self.generators is not None:
            return Fraction(k, self.generators)
        if self.runs is not None:
            others = crossed(factors)
            combinations = math.prod(len(factors[n].levels) for n in others)
            try:
                return choose_fraction(k, self.runs // combinations)
            except DesignError as exc:
                if not others:
                    raise
                raise DesignError(f"{exc} (runs={self.runs} shared by {combinations} combinations of "
                                  f"{', '.join(others)})") from None
        return fraction_at_resolution(k, self.resolution)
