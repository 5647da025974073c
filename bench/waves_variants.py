"""mode waves under variants of its search: median regret curves, and a comparison paired by seed.

    .venv/bin/python bench/waves_variants.py [--surfaces llm_finetune,friedman1,hartmann6,rosenbrock,screening]
                                             [--variants fitted,worst] [--reps 20] [--jobs 2]

Variants (the first is the reference of the paired comparison):
  fitted, worst, qNN   the GP's constant prior mean (``refine.PRIOR_MEAN``): fitted (the default), pinned at the
                       worst observation, or at the NN-th percentile on the bad side
  span25               the acquisition box narrowed to the runs' span widened by a quarter of it on each side
  sobol-first          a scrambled Sobol first wave instead of the screen, then the model over every factor
  lhs-screen           the screen's fraction (same rows, signs, seeds and center runs) with each run's value of each
                       numeric factor at a distinct level inside the half of the range its sign points to (a
                       Latin-hypercube stratification, :func:`lhs_points`); the effects read on those runs snapped to
                       the screening levels, the model told the real values
  dsd-screen, dsd-full  a definitive screening design (conference matrix of order 8 and its fold-over, 16 runs) as
                       the first wave when the factors are numeric and at most 8 (otherwise the default fraction), at
                       the quarter points and center (dsd-screen) or the ends and center (dsd-full); then the model
                       over every factor, as sobol-first
All but fitted were tried and dropped (docs/benchmarks.md); they are kept here, as patches of the strategy made in
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


def lhs_points(region, axes: dict, rows, rng) -> list[dict]:
    """The points of the coded ``rows`` (+-1 per active factor) of ``region``, each numeric factor's value moved off its
    screening level to a distinct level of its own side: the runs of a side of factor f take the midpoints of as many
    equal strata of that half of f's range (unit scale, so log where f is log), [0, 0.5) for -1 and (0.5, 1] for +1,
    in a random order per factor and side (``rng``); integers rounded, kept strictly on their side of the window's
    center; categoricals and fixed factors as ``region.decode`` has them.

    Why the halves of the whole range and not of the quarter-point window: the strata's midpoints average exactly the
    quarter points (0.25 and 0.75 of the range), where the screen's levels are, so the contrast of the sign columns
    estimates the same main effects and bilinear interactions as the two-level screen (E|u - 0.5| = 0.25 on each
    side); the halves of the window ([0.25, 0.5) and (0.5, 0.75]) would centre the sides at 0.375 and 0.625 and read
    every effect at half its size against the same run noise, and the center runs' curvature at a third."""
    import numpy as np

    rows = np.asarray(rows)
    windows = region.as_dict()
    points = [region.decode(axes, row) for row in rows]
    for j, name in enumerate(region.active):
        axis = axes[name]
        if not axis.numeric:
            continue
        middle = axis.center(*windows[name])
        for side in (-1, 1):
            at = np.flatnonzero(rows[:, j] == side)
            if not len(at):
                continue
            units = (np.arange(len(at)) + 0.5) / (2 * len(at)) + (0.5 if side > 0 else 0.0)
            for i, u in zip(at, rng.permutation(units)):
                value = axis.from_unit(u)
                if side < 0 and not value < middle:  # an integer rounded onto the center
                    value = max(axis.low, middle - 1)
                elif side > 0 and not value > middle:
                    value = min(axis.high, middle + 1)
                points[i][name] = value
    return points


def snap_first_wave(region, axes: dict, runs: list[dict]) -> list[dict]:
    """Copies of the runs of the first wave among ``runs`` with each active numeric factor at the screening level of
    its side of the window's center (a center run stays at the center); the other runs as they are."""
    if not runs:
        return runs
    first = min(r["wave"] for r in runs)
    windows = region.as_dict()
    out = []
    for run in runs:
        if run["wave"] == first:
            run = dict(run)
            for name in region.active:
                if axes[name].numeric:
                    low, high = windows[name]
                    middle, value = axes[name].center(low, high), run[f"param.{name}"]
                    if value != middle:
                        run[f"param.{name}"] = low if value < middle else high
        out.append(run)
    return out


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
    elif variant == "lhs-screen":
        import numpy as np

        from orchestrator.cells import WavePlan
        from orchestrator.designs.fractional_factorial import choose_fraction
        from orchestrator.strategies.waves import screen as screening
        from orchestrator.strategies.waves import strategy
        from orchestrator.strategies.waves.explore import wave_seed
        from orchestrator.strategies.waves.space import screening_region

        def screen(region, axes, seeds, runs_per_wave):
            # screen.screen_wave's fraction, copies and center runs; only the points of the fraction move.
            active = region.active
            per_seed = runs_per_wave // len(seeds.seeds)
            fraction = choose_fraction(len(active), per_seed)
            copies = max(1, per_seed // fraction.runs)
            centers = min(screening.CENTER_RUNS, per_seed - copies * fraction.runs) if region.has_centers(axes) else 0
            rng = np.random.default_rng([wave_seed(seeds.study, 1), *seeds.seeds])
            rows = np.tile(fraction.coded_matrix(), (copies, 1))  # each copy its own levels (all distinct)
            points = lhs_points(region, axes, rows, rng)
            cells = seeds.at_every_seed(points)
            if centers:
                cells += seeds.cells([region.decode(axes, [0] * len(active))] * (centers * len(seeds.seeds)))
            design = "fractional_factorial" if fraction.resolution else "full_factorial"
            extra = (f" x {copies} copies" if copies > 1 else "") + (f" + {centers} center runs" if centers else "")
            return WavePlan(cells, design, f"screen: {fraction}{extra}, levels stratified in each sign's half range")

        read, fold_wave = strategy.read, strategy.fold_wave

        def snapped_read(region, axes, runs, metric, goal):
            return read(region, axes, snap_first_wave(region, axes, runs), metric, goal)

        def snapped_fold_wave(region, axes, seeds, reading, designed, runs_per_wave):
            return fold_wave(region, axes, seeds, reading, snap_first_wave(region, axes, designed), runs_per_wave)

        def screened_region(self, runs):
            # The first wave's levels no longer span the window: the region is the one the screen was given.
            return screening_region(self.axes, screening.INSETS[self.spec.strategy.screen])

        strategy.screen_wave = screen
        strategy.read = snapped_read  # strategy._after calls these names of its own module
        strategy.fold_wave = snapped_fold_wave
        strategy.Waves._screened_region = screened_region
    elif variant in ("dsd-screen", "dsd-full"):
        import numpy as np

        from orchestrator.cells import WavePlan
        from orchestrator.designs.definitive_screening import ORDERS, conference_matrix
        from orchestrator.strategies.waves import screen as screening
        from orchestrator.strategies.waves import strategy
        from orchestrator.strategies.waves.space import screening_region

        screen_wave, after = strategy.screen_wave, strategy.Waves._after

        def dsd_order(region, axes, per_seed):
            order = max((n for n in ORDERS if 2 * n <= per_seed), default=0)
            numeric = all(axes[n].numeric for n in region.active)
            return order if numeric and order >= len(region.active) else 0

        def screen(region, axes, seeds, runs_per_wave):
            if variant == "dsd-full":
                region = screening_region(axes, screening.INSETS["corners"])
            per_seed = runs_per_wave // len(seeds.seeds)
            order = dsd_order(region, axes, per_seed)
            if not order:  # too many factors for a DSD in one wave: the fraction as the default has it
                return screen_wave(region, axes, seeds, runs_per_wave)
            c = conference_matrix(order)[:, :len(region.active)]
            centers = min(screening.CENTER_RUNS, per_seed - 2 * order)
            rows = np.vstack([c, -c, np.zeros((centers, len(region.active)), dtype=int)])
            cells = seeds.at_every_seed([region.decode(axes, row) for row in rows])
            return WavePlan(cells, "definitive_screening", f"screen: DSD of order {order}, {centers} centers")

        def after_dsd(self, runs, seeds, runs_per_wave):
            first = min(r["wave"] for r in runs)
            if not any(r["wave"] == first and r.get("design") == "definitive_screening" for r in runs):
                return after(self, runs, seeds, runs_per_wave)
            wave = max(r["wave"] for r in runs) + 1
            return refine.refine_wave(self.axes, list(self.axes), {}, runs, self.spec.response.metric,
                                      self.spec.response.goal, seeds, runs_per_wave, wave, "DSD first wave")

        strategy.screen_wave = screen
        strategy.Waves._after = after_dsd
    elif variant in ("fitted", "worst") or (variant[:1] == "q" and variant[1:].isdigit()):
        refine.PRIOR_MEAN = variant
    else:
        raise SystemExit(f"unknown variant {variant!r}: fitted, worst, qNN, span25, sobol-first, lhs-screen, "
                         "dsd-screen or dsd-full")


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
                        help="comma list: fitted, worst, qNN, span25, sobol-first, lhs-screen, dsd-screen, dsd-full "
                             "(the first is the reference)")
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
