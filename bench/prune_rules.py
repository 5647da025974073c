"""Which pruning rule and hold-off: a waves study driven in lockstep on the learning-curve workload, no Ray.

    .venv/bin/python bench/prune_rules.py [--surfaces llm_finetune,hartmann6] [--reps 3]
        [--configs false:bound:50%,true:bound:50%,true:halving:25%,...] [--steps 40] [--waves 6] [--shape exp|wsd]

Run it from the repository root. Per surface and configuration (``prune:rule:hold-off``), ``--reps`` studies of mode
waves (16 runs a wave, ``--waves`` waves, seeds 0..reps-1) run as the driver would run them, but with every run of
a wave advancing one step at a time together (no Ray, no backfill, no timing): the strategy proposes a wave, each
run's curve (``experiments/curves.py``, the same as bench/gpu_hours.py's) is fed to the driver's own pruner
(``orchestrator/execution/pruning.py``) step by step, a prunable run it judges clearly worse stops there (PRUNED,
with its decision, which the strategy's model is told through ``RunRecord.estimate``), the others complete. Printed
per configuration: run-equivalents (steps executed / steps of a full run, over the study), the final regret of the
best completed run (the noise-free surface value of its configuration minus the optimum; median and mean over the
repetitions), runs pruned, waves run, and "wrong": pruned runs whose true final value would have beaten the best
final value finished when they were pruned (the decisions a rule gets wrong, for the search).

It isolates the rule: the same proposals, decisions at the same steps, no scheduling noise. bench/gpu_hours.py
measures the whole system (Ray, backfill, the peers) on the same workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `bench` is not an installed package

from experiments import curves
from experiments.surfaces import get_surface
from orchestrator.execution.pruning import Pruner
from orchestrator.run_record import RunRecord
from orchestrator.spec import parse_spec
from orchestrator.strategies import create_strategy
from orchestrator.wave_kinds import GREEDY, is_designed

SLOTS = 16


def study(surface_name: str, rep: int, prune, rule: str, hold: str, steps: int, waves: int,
          shape: str = "exp") -> dict:
    """One lockstep study: its run-equivalents, final regret, pruned runs, waves and wrong decisions."""
    surface = get_surface(surface_name)
    spec = surface.spec(f"rules-{rep}", mode="waves", runs_per_wave=SLOTS, max_waves=waves, seeds=[rep])
    spec["strategy"].update(prune=prune, prune_rule=rule, prune_after=hold)
    spec = parse_spec(spec, check_experiment=False)
    metric = spec.response.metric
    strategy = create_strategy(spec, SLOTS)
    pruner = Pruner(rule, surface.goal, spec.strategy.hold_off)
    sign = 1.0 if surface.goal == "minimize" else -1.0
    runs: list[RunRecord] = []
    known: set[str] = set()
    executed = wrong = wave = 0
    while (plan := strategy.next_wave(known, SLOTS, runs)) is not None:
        wave += 1
        prunable = prune == "all" or (prune is not False and (not is_designed(plan.design) or plan.design == GREEDY))
        values = {c.key: curves.curve(surface_name, c.levels, steps, c.seed, shape) for c in plan.cells}
        alive = {c.key: c for c in plan.cells}
        for step in range(1, steps + 1):
            for key, cell in alive.items():
                pruner.add(key, json.dumps(cell.levels, sort_keys=True), step, values[key][step - 1])
                executed += 1
            for key in [k for k in alive if prunable]:
                if (decision := pruner.judge(key)) is None:
                    continue
                best = min((sign * v for v in pruner.finals.values()), default=None)
                wrong += best is not None and sign * values[key][-1] < best
                cell = alive.pop(key)
                runs.append(RunRecord.build({"cell_key": key, "wave": wave, "design": plan.design, "seed": cell.seed,
                                             "status": "PRUNED", "prune": {**decision.as_dict(), "ran_to": step}},
                                            cell.levels))
        for key, cell in alive.items():
            pruner.finished(key, values[key][-1])
            runs.append(RunRecord.build({"cell_key": key, "wave": wave, "design": plan.design, "seed": cell.seed,
                                         "status": "COMPLETE"}, cell.levels, {metric: values[key][-1]}))
        known.update(c.key for c in plan.cells)
    done = [r for r in runs if r.status == "COMPLETE"]
    best = min(done, key=lambda r: sign * r.metrics[metric])
    return {"run_equivalents": executed / steps, "regret": abs(surface.value(best.levels) - surface.optimum),
            "pruned": sum(r.status == "PRUNED" for r in runs), "waves": wave, "wrong": wrong}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--surfaces", default="llm_finetune,hartmann6")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", default="false:bound:50%,true:bound:50%,true:bound:25%,true:halving:25%,"
                                             "true:halving:50%,true:median:25%,all:bound:50%")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--shape", default="exp", choices=curves.SHAPES, help="curve family: experiments/curves.py")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # the GP's Cholesky jitter notes
    for name in args.surfaces.split(","):
        print(f"{name}: {args.reps} reps, {args.waves} waves x {SLOTS}, {args.steps} steps a run, {args.shape} curves",
              flush=True)
        for config in args.configs.split(","):
            prune, rule, hold = config.split(":")
            prune = {"true": True, "false": False}.get(prune, prune)
            rows = [study(name, rep, prune, rule, hold, args.steps, args.waves, args.shape) for rep in range(args.reps)]
            regrets = [r["regret"] for r in rows]
            print(f"  {config:18} run-equivalents {statistics.fmean(r['run_equivalents'] for r in rows):5.1f}  "
                  f"regret median {statistics.median(regrets):.4f} mean {statistics.fmean(regrets):.4f}  "
                  f"pruned {statistics.fmean(r['pruned'] for r in rows):4.1f}  "
                  f"waves {statistics.fmean(r['waves'] for r in rows):.1f}  "
                  f"wrong {sum(r['wrong'] for r in rows)}", flush=True)


if __name__ == "__main__":
    main()
