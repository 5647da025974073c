"""What `wavesweep run` and `status` print about a study's best cells: the table, the best configuration, the cells
within the noise of it; and, for a greedy path, the interactions it cannot see."""

from __future__ import annotations

from rich.console import Console

from orchestrator.reporting.summary import TIE_RULE, best_cells, tied_with_best
from orchestrator.reporting.tables import table
from orchestrator.run_record import PARAM


def best_value(runs: list[dict], metric: str, goal: str) -> str:
    """The best cell's mean as `status` lists it per study ("-" without a COMPLETE run)."""
    best = best_cells(runs, metric, goal, top=1)
    return "-" if best.empty else f"{metric}={best['mean'].iloc[0]:.4g}"


def print_best(console: Console, runs: list[dict], metric: str, goal: str, top: int = 5) -> None:
    """The best cells (a table), the best configuration, and the cells that cannot be told from it."""
    every = best_cells(runs, metric, goal, top=len(runs))
    if every.empty:
        console.print(f"No COMPLETE run has {metric!r} yet.", highlight=False, soft_wrap=True, markup=False)
        return
    best = every.head(top)
    factors = [c for c in best.columns if c.startswith(PARAM)]
    title = (f"Best cells by mean {metric} ({'lowest' if goal == 'minimize' else 'highest'} first; n: seeds, "
             "vs best: Welch t-test)")
    # Narrow on purpose: at 80 columns (a pipe) the three-factor demo fits with every level and number whole; the
    # metric is in the title, the verdict wraps at its space ("tied" / "p=0.088") instead of a number folding.
    rows = [(*[str(row[c]) for c in factors], f"{row['mean']:.4g}",
             "-" if row["std"] != row["std"] else f"{row['std']:.2g}", str(row["n"]), _verdict(row))
            for _, row in best.iterrows()]
    console.print(table((*[c.removeprefix(PARAM) for c in factors], "mean", "std", "n", "vs best"), rows,
                        title=title, wrap=("vs best",)))

    def config(row) -> str:
        return ", ".join(f"{c.removeprefix(PARAM)}={row[c]}" for c in factors)

    first = best.iloc[0]
    console.print(f"Best configuration: {config(first)} ({metric} = {first['mean']:.4g})", highlight=False,
                  soft_wrap=True, markup=False)
    tied, unknown = tied_with_best(every)
    if len(tied):
        # One cell a line: joined into one line, four demo cells made 300 characters that a pipe does not fold.
        console.print(f"Not distinguishable from it ({len(tied)} cell(s)):", highlight=False)
        for _, row in tied.iterrows():
            console.print(f"  {config(row)} ({metric} = {row['mean']:.6g}, p = {row['p_vs_best']:.2g})",
                          highlight=False, soft_wrap=True, markup=False)
    elif first["n"] >= 2:
        console.print("Every other cell with 2 or more seeds is distinguishable from it.", highlight=False)
    if first["n"] < 2:
        console.print("The best cell has one seed: which cells are within the noise of it cannot be told.",
                      highlight=False)
    elif len(unknown):
        console.print(f"{len(unknown)} cell(s) with one seed cannot be told from it.", highlight=False)
    console.print(f"Rule: {TIE_RULE}.", highlight=False, markup=False)  # prose: folds at the width, at spaces


def _verdict(row) -> str:
    """The table's "vs best" cell: the comparison's verdict and p-value."""
    if row["vs_best"] in ("best", "unknown"):
        return "-" if row["vs_best"] == "unknown" else "best"
    p = row["p_vs_best"]
    return f"{row['vs_best']} " + ("p<0.01" if p < 0.01 else f"p={p:.2g}")  # 7 characters at most: see print_best


def print_blind_spots(console: Console, spec, runs: list[dict]) -> None:
    """What a greedy path cannot estimate (its two-way blind spots) and the smallest design that would."""
    from orchestrator.strategies import blind_spots

    blind, proposal = blind_spots(spec, runs)
    if not blind:
        console.print("Greedy path: every two-way interaction is estimable from the runs.", highlight=False)
        return
    console.print("Greedy mode changes one factor at a time, so it cannot estimate these interactions: "
                  + ", ".join(f"{a}:{b}" for a, b in blind) + ".", highlight=False, soft_wrap=True, markup=False)
    console.print(f"The smallest extra design that would: {len(proposal)} runs around the best point found:",
                  highlight=False)
    for cell in proposal:
        console.print("  " + ", ".join(f"{k}={v}" for k, v in cell.levels.items()), highlight=False, markup=False)
