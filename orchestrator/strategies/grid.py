from __future__ import annotations

import math

from orchestrator.cells import Cell, WavePlan, make_cell
from orchestrator.designs import FullFactorial
from orchestrator.errors import SpecError
from orchestrator.run_record import RunRecord
from orchestrator.strategies.base import Strategy
from orchestrator.wave_kinds import GRID


class Grid(Strategy):
    """The full factorial (x seeds), cut into waves of at most ``runs_per_wave`` cells.

    Cells are dealt to waves by the sum of their level indices modulo the number of waves. For two-level factors
    in two waves this is the classic blocking on the highest-order interaction: each wave is a balanced half
    fraction, so the first wave alone already estimates every main effect, and a study stopped early is not
    confounded with "which wave it ran in".
    """

    name = "grid"

    def __init__(self, spec):
        super().__init__(spec)
        self._design = FullFactorial()

    def cells(self) -> list[Cell]:
        points = self._design.points(self.spec.factors)
        return [make_cell(self.spec.study, p, seed) for seed in self.spec.run_seeds for p in points]

    def planned_runs(self) -> int:
        return math.prod(len(f.levels) for f in self.spec.factors.values()) * len(self.spec.run_seeds)

    def waves(self, runs_per_wave: int) -> list[list[Cell]]:
        cells = self.cells()
        n_waves = math.ceil(len(cells) / runs_per_wave)
        index = {name: {level: i for i, level in enumerate(f.levels)} for name, f in self.spec.factors.items()}

        def block(cell: Cell) -> int:
            return sum(index[name][level] for name, level in cell.levels.items()) % n_waves

        ordered = sorted(range(len(cells)), key=lambda i: (block(cells[i]), i))
        return [[cells[i] for i in ordered[w * runs_per_wave:(w + 1) * runs_per_wave]] for w in range(n_waves)]

    def propose(self, known_keys: set[str], runs_per_wave: int, runs: list[RunRecord]) -> WavePlan | None:
        for number, wave in enumerate(self.waves(runs_per_wave), start=1):
            todo = [c for c in wave if c.key not in known_keys]
            if todo:
                return WavePlan(todo, GRID,
                                f"full factorial, block {number} of {math.ceil(self.planned_runs() / runs_per_wave)}")
        return None

    def check_budget(self, runs_per_wave: int) -> None:
        limits = self.spec.strategy
        n_cells = self.planned_runs()
        n_waves = math.ceil(n_cells / runs_per_wave)
        if limits.max_runs is not None and n_cells > limits.max_runs:
            raise SpecError([("strategy.max_runs", f"the full factorial x seeds needs {n_cells} runs; raise "
                              "max_runs or drop levels", limits.max_runs)])
        if limits.max_waves is not None and n_waves > limits.max_waves:
            raise SpecError([("strategy.max_waves", f"{n_cells} runs at {runs_per_wave} per wave need {n_waves} "
                              "waves; raise max_waves or runs_per_wave", limits.max_waves)])
