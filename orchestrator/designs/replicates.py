"""Replicates: the same point run again, told apart by a replicate number instead of its levels."""

from __future__ import annotations

import json
from typing import Any


def replicates(points: list[dict[str, Any]], n: int = 1) -> list[tuple[dict[str, Any], int]]:
    """The design ``n`` times over, each point paired with its replicate number: how many identical points came
    before it (0 for the first). Identical levels at the same seed are the same cell (cells.cell_key), so a repeated
    point, from ``n > 1`` or from center points, must run at a seed of its own; the number says which."""
    seen: dict[str, int] = {}
    numbered = []
    for point in points * n:
        key = json.dumps(point, sort_keys=True)  # the canonical form cell keys use
        numbered.append((dict(point), seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return numbered
