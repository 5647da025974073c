"""Experimental designs, one per module behind :class:`Design`."""

from orchestrator.designs.base import Design, DesignError
from orchestrator.designs.center_points import center_points
from orchestrator.designs.central_composite import CentralComposite, axial_points, face_centred_ccd
from orchestrator.designs.definitive_screening import DefinitiveScreening, conference_matrix, definitive_screening
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

__all__ = [
    "CentralComposite", "DefinitiveScreening", "Design", "DesignError", "FoldOver", "Fraction",
    "FractionalFactorial", "FullFactorial", "RegularDesign", "axial_points", "center_points", "choose_fraction",
    "conference_matrix", "definitive_screening", "face_centred_ccd", "fold_over",
    "fraction_at_resolution", "fractions"
]
