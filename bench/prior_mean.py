"""mode waves under each GP prior mean (``refine.PRIOR_MEAN``): median regret curves and a comparison paired by seed.

    .venv/bin/python bench/prior_mean.py [--surfaces llm_finetune,friedman1,hartmann6,rosenbrock,screening]
                                         [--means fitted,worst] [--reps 20] [--jobs 2]

Each (surface, repetition, prior mean) runs ``bench.search_quality.search_waves`` (64 runs in waves of 16, the
bench's seeds) in a fresh process with ``refine.PRIOR_MEAN`` set, so a variant is compared with the default on the
same seeds and nothing passes between tasks. Prints, per surface and mean, the median regret after 16, 32, 48 and
64 runs and the surface fit's interaction recall and FDR; then each mean against the first: in how many
repetitions it is better at 64 runs, and the geometric mean of the paired ratios.
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


def task(surface_name: str, rep: int, mean: str) -> dict:
    import bench.search_quality as sq
    from orchestrator.strategies.waves import refine

    sq._limit_threads()
    warnings.simplefilter("ignore")
    refine.PRIOR_MEAN = mean
    surface = sq.get_surface(surface_name)
    found = sq.search_waves(surface, 64, rep)
    curve = [sq.regret_of_best(surface, found.points[:n], found.values[:n]) for n in sq.checkpoints(64)]
    return {"surface": surface_name, "rep": rep, "mean": mean, "curve": curve, "found": len(found.reported),
            "true_found": len(found.reported & surface.interactions), "true": len(surface.interactions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surfaces", default="llm_finetune,friedman1,hartmann6,rosenbrock,screening")
    parser.add_argument("--means", default="fitted,worst", help="comma list: fitted, worst, qNN (NN-th percentile)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    means = args.means.split(",")
    os.environ["OMP_NUM_THREADS"] = "1"
    tasks = [(s, r, m) for s in args.surfaces.split(",") for r in range(args.reps) for m in means]
    rows: list[dict] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        for future in as_completed([pool.submit(task, *t) for t in tasks]):
            rows.append(future.result())
    groups = defaultdict(list)
    for row in rows:
        groups[(row["surface"], row["mean"])].append(row)
    print(f"{'surface':<13} {'prior mean':<10} median regret after 16 / 32 / 48 / 64 runs      recall   FDR")
    for (surface, mean), group in sorted(groups.items()):
        curve = [statistics.median(r["curve"][i] for r in group) for i in range(4)]
        found, hits = sum(r["found"] for r in group), sum(r["true_found"] for r in group)
        true = sum(r["true"] for r in group)
        recall = f"{hits / true:>6.2f}" if true else f"{'-':>6}"  # a surface without true pairs has no recall
        print(f"{surface:<13} {mean:<10} {' / '.join(f'{c:.4g}' for c in curve):<40} {recall} "
              f"{(found - hits) / max(found, 1):>5.2f}")
    final = {(r["surface"], r["rep"], r["mean"]): r["curve"][-1] for r in rows}
    print(f"\nPaired by seed against {means[0]} (regret at 64 runs):")
    for surface in args.surfaces.split(","):
        for mean in means[1:]:
            pairs = [(final[surface, rep, means[0]], final[surface, rep, mean]) for rep in range(args.reps)]
            better = sum(b < a for a, b in pairs)
            ties = sum(b == a for a, b in pairs)
            ratio = statistics.geometric_mean([max(b, 1e-9) / max(a, 1e-9) for a, b in pairs])
            print(f"  {surface:<13} {mean:<10} better in {better} of {len(pairs)} ({ties} ties), "
                  f"geometric mean ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
