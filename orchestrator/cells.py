"""A cell is one design point (factor levels) at one seed: the unit that is run, stored and resumed; a wave plan is
the cells a strategy proposes at once, with the design they come from and why (the store records it as a wave);
:class:`Seeds` is the one seed allocator, which turns points into cells whose keys were never used before."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cell:
    key: str
    levels: dict[str, Any]  # factor name -> level
    seed: int


@dataclass(frozen=True)
class WavePlan:
    cells: list[Cell]
    design: str  # name of the design the cells come from, stored with the wave
    reason: str  # why this wave, in words; stored and shown by `wavesweep status`


def cell_key(study: str, levels: dict[str, Any], seed: int) -> str:
    """Stable across processes and machines: the store's unique key for a run.

    Canonical JSON (sorted keys, shortest float repr) so 0.001 and 1e-3 in a spec name the same cell.
    """
    payload = json.dumps({"study": study, "levels": levels, "seed": seed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def make_cell(study: str, levels: dict[str, Any], seed: int) -> Cell:
    return Cell(key=cell_key(study, levels, seed), levels=dict(levels), seed=seed)


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
