"""The seed allocator of the adaptive waves: one place that turns points into cells with keys never used before."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from orchestrator.cells import Cell, make_cell


class Seeds:
    """Gives each point the first seed (the spec's, then ascending above them) whose cell is neither recorded nor
    already handed out: how repeated points (replicates, center runs, a model's re-proposal) get seeds of their own,
    and how the spec's seeds stay the first copy of every point."""

    def __init__(self, study: str, order: Iterable[str], seeds: Iterable[int], taken: Iterable[str] = ()):
        self.study, self.order, self.seeds = study, list(order), list(seeds)
        self.taken = set(taken)

    def cell(self, point: dict) -> Cell:
        levels = {n: point[n] for n in self.order}
        for seed in itertools.chain(self.seeds, range(max(self.seeds) + 1, 1 << 30)):
            cell = make_cell(self.study, levels, seed)
            if cell.key not in self.taken:
                self.taken.add(cell.key)
                return cell
        raise AssertionError("unreachable: 2^30 seeds")

    def recorded(self, points: Iterable[dict]) -> bool:
        """Whether every point is already taken at every spec seed (a wave of them would only repeat)."""
        return all(make_cell(self.study, {n: p[n] for n in self.order}, seed).key in self.taken
                   for p in points for seed in self.seeds)

    def cells(self, points: Iterable[dict]) -> list[Cell]:
        return [self.cell(p) for p in points]

    def at_every_seed(self, points: list[dict]) -> list[Cell]:
        """Each point once per spec seed (the seeds first, point by point), as a design wave runs them."""
        return [self.cell(p) for _ in self.seeds for p in points]
