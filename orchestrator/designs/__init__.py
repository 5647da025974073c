"""Experimental designs, one per module behind :class:`Design`."""

from orchestrator.designs.base import Design
from orchestrator.designs.full_factorial import FullFactorial

DESIGNS: dict[str, type[Design]] = {FullFactorial.name: FullFactorial}

__all__ = ["DESIGNS", "Design", "FullFactorial"]
