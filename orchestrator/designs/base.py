from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from orchestrator.spec import Factor


class Design(ABC):
    """A set of design points over the factors.

    ``points(factors)`` returns the points in run order, each a mapping factor name -> level. Seeds and
    replicates are applied by the strategy, not here, so every design composes with them the same way.
    """

    name: str

    @abstractmethod
    def points(self, factors: dict[str, Factor]) -> list[dict[str, Any]]: ...
