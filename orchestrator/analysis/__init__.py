"""Effects of a study's factors with honest uncertainty: pure functions on a DataFrame of runs (one row per run).

- :func:`fit_effects`: main effects, quadratics and interactions (OLS on coded columns, Lenth when saturated),
  aliasing, multiplicity-adjusted p-values, ANOVA and a variance budget -> :class:`EffectsResult`.
- :func:`cell_means`: means with intervals per level (pair of levels), for interaction plots.
- :func:`decompose`: for undesigned runs (greedy paths, Optuna or CSV imports), an fANOVA-style variance
  decomposition with pairwise shares, bootstrap CIs and permutation noise floors ("inconclusive" under them).
- :func:`fit_surface`: the second-order response surface by OLS over every run, designed or proposed (what a
  waves study's model waves add to its saturated screen).
- :func:`reparam_hints`: reparametrisations that shrink a found interaction (lr/sqrt(batch), lr*wd, alpha/rank),
  checked on the runs when they allow it.
- :func:`detection_power`, :func:`detectable_effect`, :func:`runs_needed`: power of those tests.
- :class:`FactorInfo`, :func:`factor_infos` (from a spec's factors), :func:`infer_factors` (from the data).

No I/O here: the CLI reads the store and hands the runs in.
"""

from orchestrator.analysis.cells import cell_means
from orchestrator.analysis.coding import code_numeric, design_matrix
from orchestrator.analysis.factors import FactorInfo, factor_infos, infer_factors
from orchestrator.analysis.fanova import FanovaResult, FanovaTerm, decompose
from orchestrator.analysis.fit import fit_effects
from orchestrator.analysis.hints import Hint, reparam_hints
from orchestrator.analysis.lenth import lenth_pse
from orchestrator.analysis.power import detectable_effect, detection_power, runs_needed
from orchestrator.analysis.results import (
    AnovaRow,
    AnovaTable,
    BudgetRow,
    EffectsResult,
    TermEffect,
    VarianceBudget,
)
from orchestrator.analysis.runs import select_runs
from orchestrator.analysis.surface import fit_surface

__all__ = [
    "AnovaRow", "AnovaTable", "BudgetRow", "EffectsResult", "FactorInfo", "FanovaResult", "FanovaTerm", "Hint",
    "TermEffect", "VarianceBudget",
    "cell_means", "code_numeric", "decompose", "design_matrix", "detectable_effect", "detection_power", "factor_infos",
    "fit_effects", "fit_surface", "infer_factors", "lenth_pse", "reparam_hints", "runs_needed", "select_runs",
]
