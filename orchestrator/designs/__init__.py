"""Experimental designs, one per module behind :class:`Design`."""

from orchestrator.designs.base import Design, DesignError
from orchestrator.designs.center_points import center_points
from orchestrator.designs.fold_over import FoldOver, fold_over
from orchestrator.designs.fractional_factorial import (
    Fraction,
    FractionalFactorial,
    choose_fraction,
    fraction_at_resolution,
    fractions,
)
from orchestrator.designs.full_factorial import FullFactorial
from orchestrator.designs.regular import RegularDesign
from orchestrator.designs.replicates import replicates

# The designs a study can start from, by name. FoldOver is left out: it augments a fraction already chosen.
DESIGNS: dict[str, type[Design]] = {d.name: d for d in (FullFactorial, FractionalFactorial)}


def create_design(name: str, **options) -> Design:
    """``DESIGNS[name](**options)``, or a DesignError that lists the valid names."""
    if name not in DESIGNS:
        raise DesignError(f"unknown design {name!r}; valid designs: {', '.join(sorted(DESIGNS))}")
    return DESIGNS[name](**options)


__all__ = [
    "DESIGNS", "Design", "DesignError", "FoldOver", "Fraction", "FractionalFactorial", "FullFactorial",
    "RegularDesign", "center_points", "choose_fraction", "create_design", "fold_over", "fraction_at_resolution",
    "fractions", "replicates",
]
