"""Which model columns this data can separate.

Columns are taken in order; a column that is a linear combination of the columns already kept (identical, an
exact negative, a sum, or all zero) adds no information: it is *not estimable* and is dropped from the fit. Its
effect is then carried by the kept columns it combines, so each of those is reported as aliased with it. Because
the design orders columns from low to high order, the kept representative of an alias set is the lowest-order
one: in a 2^(3-1) fraction with C = AB, ``A`` is estimated (aliased with ``B:C``) and ``B:C`` is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Relative size below which a column (or a combination coefficient) counts as zero. Coded columns are O(1), so
# this sits far above rounding error (1e-15) and far below any real difference between two design columns.
_TOL = 1e-8


@dataclass(frozen=True)
class Aliasing:
    kept: tuple[str, ...]  # estimable columns, in design order
    dropped: dict[str, tuple[str, ...]]  # not estimable column -> the kept columns it is a combination of

    def aliases_of(self, column: str) -> tuple[str, ...]:
        """The dropped columns whose effect the kept ``column``'s estimate also carries."""
        return tuple(name for name, combo in self.dropped.items() if column in combo)


def find_aliasing(matrix: pd.DataFrame) -> Aliasing:
    kept: list[str] = []
    basis: list[np.ndarray] = []  # orthonormal basis of the kept columns
    dropped: dict[str, tuple[str, ...]] = {}
    for name in matrix.columns:
        x = matrix[name].to_numpy(dtype=float)
        norm = np.linalg.norm(x)
        residual = x
        # Gram-Schmidt twice: one pass loses orthogonality when columns are nearly dependent.
        for _ in range(2):
            if basis:
                q = np.column_stack(basis)
                residual = residual - q @ (q.T @ residual)
        if norm > 0 and np.linalg.norm(residual) > _TOL * norm:
            kept.append(name)
            basis.append(residual / np.linalg.norm(residual))
            continue
        coef = np.linalg.lstsq(matrix[kept].to_numpy(dtype=float), x, rcond=None)[0] if kept else np.array([])
        scale = max(1.0, float(np.max(np.abs(coef), initial=0.0)))
        dropped[name] = tuple(k for k, c in zip(kept, coef) if abs(c) > _TOL * scale)
    return Aliasing(tuple(kept), dropped)
