"""Which waves are designs and which are proposals: the one rule analyze, status, the dashboard and the benchmark use.

A *designed* wave places its runs by a design (a fraction, its fold-over, replicates of its points, a central
composite, a definitive screening design, the grid, greedy's path), so the coded OLS fit of `fit_effects` may use
them: its aliasing and its intervals are those of the design. A *proposed* wave places its runs where a sampler or
a model put them (space-filling exploration, a model-based batch): points no design placed, which the effects fit
must not use (they would give the intervals a geometry they do not have) and the random-forest decomposition
(`decompose`) and the recommendation do. Every stored wave has a ``design`` name; the proposed ones are listed here.

Light on purpose: the dashboard imports it.
"""

from __future__ import annotations

# design name stored with the wave -> what it is, in words
PROPOSED: dict[str, str] = {
    "space_filling": "space-filling exploration (a scrambled Sobol sample inside the box)",
    "model": "a model-based batch (a Gaussian process and qLogNEI, the whole wave chosen jointly)",
}


def is_designed(design: str | None) -> bool:
    """Whether a wave with this stored design name is a design the effects fit may use."""
    return design not in PROPOSED


# Design names a whole strategy stores with every wave it makes: a block of the full factorial, a step of the greedy
# path. They are how a reader of the store tells which mode an "auto" study resolved to (the spec says only "auto").
GRID = "grid"
GREEDY = "greedy"


def resolved_mode(mode: str, first_design: str | None) -> str:
    """The mode a study ran in: its spec's ``mode``, or for "auto" the one its first stored wave shows ("waves"
    while it has none or when a design of its own started it)."""
    if mode != "auto":
        return mode
    return {GRID: "grid", GREEDY: "greedy"}.get(first_design or "", "waves")
