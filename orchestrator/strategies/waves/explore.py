"""EXPLORE: space-filling points inside the box, for when the screening fit finds nothing to go on.

A screen that finds no significant term and no curvature says the response does not change at its points: either
nothing matters, or what matters happens elsewhere in the box (an optimum inside, a factor that acts only through
curvature). Repeating the same points cannot tell which; points spread over the whole box can, and they give the
model of the next waves something to fit. A scrambled Sobol sample (``scipy.stats.qmc``) spreads them evenly in every
projection; its scramble is seeded from the study and the wave number, so a resumed study proposes the same wave.
"""

from __future__ import annotations

import hashlib

from scipy.stats import qmc

from orchestrator.cells import Seeds, WavePlan
from orchestrator.strategies.waves.space import Axis


def wave_seed(study: str, wave: int) -> int:
    """A reproducible random seed for the wave ``wave`` of ``study`` (the same on every machine)."""
    return int(hashlib.sha256(f"{study}/{wave}".encode()).hexdigest()[:8], 16)


def explore_wave(axes: dict[str, Axis], open_: list[str], fixed: dict, seeds: Seeds, runs_per_wave: int,
                 wave: int, why: str) -> WavePlan:
    """``runs_per_wave`` points (per spec seed, one point each) of a scrambled Sobol sample over the ``open_``
    factors' whole ranges, the others at ``fixed``; a categorical takes its first level below 0.5, else its second."""
    count = max(1, runs_per_wave // len(seeds.seeds))
    sample = qmc.Sobol(len(open_), scramble=True, seed=wave_seed(seeds.study, wave)).random(count)
    points = []
    for row in sample:
        point = dict(fixed)
        for name, u in zip(open_, row):
            axis = axes[name]
            point[name] = axis.from_unit(u) if axis.numeric else (axis.low if u < 0.5 else axis.high)
        points.append(point)
    cells = seeds.at_every_seed(points)
    return WavePlan(cells, "space_filling", f"explore: {why}; {count} scrambled Sobol points over "
                                            f"{', '.join(open_)} (the whole range of each)")
