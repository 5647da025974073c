from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from orchestrator.errors import WavesweepError
from orchestrator.spec import Factor


class DesignError(WavesweepError):
    """A design cannot be built for these factors or options; the message says which and why."""


class Design(ABC):
    """A set of design points over the factors.

    ``points(factors)`` returns the points in run order, each a mapping factor name -> level. Seeds and
    replicates are applied by the strategy, not here, so every design composes with them the same way. A design
    may repeat a point on purpose (center points); the strategy's seed allocator (``cells.Seeds``) gives each repeat
    its own seed.
    """

    name: str

    @abstractmethod
    def points(self, factors: dict[str, Factor]) -> list[dict[str, Any]]: ...
