from __future__ import annotations

import itertools
from typing import Any

from orchestrator.designs.base import Design
from orchestrator.spec import Factor


class FullFactorial(Design):
    """Every combination of levels; factors may have different numbers of levels (e.g. 2 x 3 x 4 = 24 points).

    The first factor varies slowest, so consecutive waves cut the design along its levels in spec order.
    """

    name = "full_factorial"

    def points(self, factors: dict[str, Factor]) -> list[dict[str, Any]]:
        names = list(factors)
        return [dict(zip(names, combo)) for combo in itertools.product(*(factors[n].levels for n in names))]
