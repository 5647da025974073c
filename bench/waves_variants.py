"""mode waves under variants of its search: median regret curves, and a comparison paired by seed.

    .venv/bin/python bench/waves_variants.py [--surfaces llm_finetune,friedman1,hartmann6,rosenbrock,screening]
                                             [--variants fitted,worst] [--reps 20] [--jobs 2]

Variants (the first is the reference of the paired comparison):
  fitted, worst, qNN   the GP's constant prior mean (``refine.PRIOR_MEAN``): fitted (the default), pinned at the
                       worst observation, or at the NN-th percentile on the bad side
  span25               the acquisition box narrowed to the runs' span widened by a quarter of it on each side
  sobol-first          a scrambled Sobol first wave instead of the screen, then the model over every factor
The last two were tried and dropped (docs/benchmarks.md); they are kept here, as patches of the strategy made in
the task's own process, so their figures can be made again.

Each (surface, repetition, variant) runs ``bench.search_quality.search_waves`` (64 runs in waves of 16, the bench's
seeds) in a fresh process, so a variant is compared with the reference on the same seeds and nothing passes
between tasks. Prints, per surface and variant, the median regret after 16, 32, 48 and 64 runs and the surface
fit's interaction recall and FDR; then each variant against the first: in how many repetitions it is better at 64
runs, and the geometric mean of the paired ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` is not an installed package


def apply(variant: str) -> None:
    """Set ``variant`` up in this process (a task's own)."""
    from orchestrator.strategies.waves import refine

    if variant == "span25":
        import botorch.optim
        import torch

        optimize = botorch.optim.optimize_acqf

        def narrowed(acq_function, bounds, **options):
            x = acq_function.model.train_inputs[0]  # the runs, in the unit cube (no input transform)
            low, high = x.min(0).values, x.max(0).values
            span = torch.where(high > low, high - low, torch.ones_like(high))
            box = torch.stack([(low - 0.25 * span).clamp(0, 1), (high + 0.25 * span).clamp(0, 1)])
            return optimize(acq_function, bounds=box, **options)

        botorch.optim.optimize_acqf = narrowed  # refine.propose imports it from there at each call
    elif variant == "sobol-first":
        from orchestrator.strategies.waves import strategy
        from orchestrator.strategies.waves.explore import explore_wave

        def screen(region, axes, seeds, runs_per_wave):
            return explore_wave(axes, list(axes), {}, seeds, runs_per_wave, 1, "first wave")

        def after(self, runs, seeds, runs_per_wave):
            wave = max(r["wave"] for r in runs) + 1
            return refine.refine_wave(self.axes, list(self.axes), {}, runs, self.spec.response.metric,
                                      self.spec.response.goal, seeds, runs_per_wave, wave, "Sobol first wave")

        strategy.screen_wave = screen
        strategy.Waves._after = after
    elif variant in ("fitted", "worst") or (variant[:1] == "q" and variant[1:].isdigit()):
        refine.PRIOR_MEAN = variant
    else:
        raise SystemExit(f"unknown variant {variant!r}: fitted, worst, qNN, span25 or sobol-first")


def task(surface_name: str, rep: int, variant: str) -> dict:
    import bench.search_quality as sq

    sq._limit_threads()
    warnings.simplefilter("ignore")
    apply(variant)
    surface = sq.get_surface(surface_name)
    found = sq.search_waves(surface, 64, rep)
    curve = [sq.regret_of_best(surface, found.points[:n], found.values[:n]) for n in sq.checkpoints(64)]
    return {"surface": surface_name, "rep": rep, "variant": variant, "curve": curve, "found": len(found.reported),
            "true_found": len(found.reported & surface.interactions), "true": len(surface.interactions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surfaces", default="llm_finetune,friedman1,hartmann6,rosenbrock,screening")
    parser.add_argument("--variants", default="fitted,worst",
                        help="comma list: fitted, worst, qNN, span25, sobol-first (the first is the reference)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    variants = args.variants.split(",")
    os.environ["OMP_NUM_THREADS"] = "1"
    tasks = [(s, r, m) for s in args.surfaces.split(",") for r in range(args.reps) for m in variants]
    rows: list[dict] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        for future in as_completed([pool.submit(task, *t) for t in tasks]):
            rows.append(future.result())
    groups = defaultdict(list)
    for row in rows:
        groups[(row["surface"], row["variant"])].append(row)
    print(f"{'surface':<13} {'variant':<12} median regret after 16 / 32 / 48 / 64 runs      recall   FDR")
    for (surface, variant), group in sorted(groups.items()):
        curve = [statistics.median(r["curve"][i] for r in group) for i in range(4)]
        found, hits = sum(r["found"] for r in group), sum(r["true_found"] for r in group)
        true = sum(r["true"] for r in group)
        recall = f"{hits / true:>6.2f}" if true else f"{'-':>6}"  # a surface without true pairs has no recall
        print(f"{surface:<13} {variant:<12} {' / '.join(f'{c:.4g}' for c in curve):<40} {recall} "
              f"{(found - hits) / max(found, 1):>5.2f}")
    final = {(r["surface"], r["rep"], r["variant"]): r["curve"][-1] for r in rows}
    print(f"\nPaired by seed against {variants[0]} (regret at 64 runs):")
    for surface in args.surfaces.split(","):
        for variant in variants[1:]:
            pairs = [(final[surface, rep, variants[0]], final[surface, rep, variant]) for rep in range(args.reps)]
            better = sum(b < a for a, b in pairs)
            ties = sum(b == a for a, b in pairs)
            ratio = statistics.geometric_mean([max(b, 1e-9) / max(a, 1e-9) for a, b in pairs])
            print(f"  {surface:<13} {variant:<12} better in {better} of {len(pairs)} ({ties} ties), "
                  f"geometric mean ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
