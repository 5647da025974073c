"""A cell is one design point (factor levels) at one seed: the unit that is run, stored and resumed; a wave plan is
the cells a strategy proposes at once, with the design they come from and why (the store records it as a wave)."""

from __future__ import annotations

import hashlib
import json
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
