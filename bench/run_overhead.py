"""What orchestration costs a run, and what warm reuse saves, measured in one process run.

1. Overhead: N tiny-Qwen3.5 fine-tuning runs called directly, one after another, against the same N runs through
   wavesweep (local Ray with one CPU slot, so they also run one after another, SQLite store, curves streamed).
   Ratio = direct time / orchestrated time (target >= 0.97). Both sides are warm: the direct side after one
   warm-up run in this process, the orchestrated side after a one-run warm-up study that starts the Ray worker
   and imports torch there; that start-up is printed on its own line.
2. Warm reuse: N LoRA runs on a ~150M-parameter Qwen3.5 checkpoint saved to disk, with and without warm reuse,
   in this process; prints the base-model load time of each and what reuse saves.

    python bench/run_overhead.py [--runs 6] [--steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from experiments.qwen35 import finetune
from experiments.qwen35.models import warm_cache
from experiments.qwen35.tiny import build_tokenizer
from orchestrator.context import RunContext
from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.spec import parse_spec
from orchestrator.store import Store

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def ctx(seed: int = 0, warm_reuse: bool = False, artifact_dir: str = "") -> RunContext:
    return RunContext(study="bench", cell_key="direct", seed=seed, num_cpus=1, warm_reuse=warm_reuse,
                      artifact_dir=artifact_dir)


def overhead(runs: int, steps: int, workdir: Path) -> None:
    fixed = {"method": "full", "max_steps": steps, "n_eval": 32, "save": False}
    rates = [1e-3 * (1.5 ** i) for i in range(runs)]
    finetune.run({**fixed, "learning_rate": 1e-3, "max_steps": 2}, ctx())  # warm-up: imports, kernels
    t0 = time.perf_counter()
    for lr in rates:
        finetune.run({**fixed, "learning_rate": lr}, ctx())
    direct = time.perf_counter() - t0

    def spec(study: str, levels: list[float]) -> dict:
        return {"study": study, "experiment": "experiments.qwen35.finetune:run", "fixed": fixed,
                "factors": {"learning_rate": {"levels": levels, "scale": "log"}}, "response": {"metric": "eval_loss"},
                "strategy": {"mode": "grid", "runs_per_wave": len(levels)}, "artifacts": str(workdir / "art"),
                "resources": {"cpus_per_run": 1, "warm_reuse": True, "max_runs_per_worker": runs + 2}}

    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    t_ray = time.perf_counter()
    with RayExecutor(num_cpus=1) as executor:
        ray_start = time.perf_counter() - t_ray
        t1 = time.perf_counter()
        warm_spec = spec("warmup", [1e-3, 2e-3])
        warm_spec["fixed"] = {**fixed, "max_steps": 2}
        run_study(parse_spec(warm_spec), store, executor)
        startup = time.perf_counter() - t1
        t2 = time.perf_counter()
        run_study(parse_spec(spec("measured", rates)), store, executor)
        orchestrated = time.perf_counter() - t2
    done = [r for r in store.runs("measured") if r["status"] == "COMPLETE"]
    assert len(done) == runs, [r["error_message"] for r in store.runs("measured")]
    print(f"overhead: {runs} runs x {steps} steps of tiny Qwen3.5 full fine-tuning, one CPU slot")
    print(f"  direct (in-process)          {direct:8.2f} s  ({direct / runs:.2f} s/run)")
    print(f"  orchestrated (Ray + SQLite)  {orchestrated:8.2f} s  ({orchestrated / runs:.2f} s/run)")
    print(f"  ratio direct / orchestrated  {direct / orchestrated:8.3f}   (target >= 0.97)")
    print(f"  start-up, not in the ratio:  ray.init {ray_start:.2f} s; first worker + imports + 2 short runs "
          f"{startup:.2f} s")


def warm_reuse(runs: int, workdir: Path) -> None:
    config = transformers.Qwen3_5TextConfig(
        vocab_size=len(build_tokenizer()), hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
        num_attention_heads=8, num_key_value_heads=2, head_dim=128, linear_num_key_heads=4,
        linear_num_value_heads=8, linear_key_head_dim=128, linear_value_head_dim=128,
        layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 3, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.Qwen3_5ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    path = workdir / "bench-model"
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    del model
    params = {"model": str(path), "method": "lora", "max_steps": 2, "batch_size": 4, "n_train": 8, "n_eval": 4,
              "lora_rank": 8, "save": False}
    totals = {}
    for reuse in (False, True):
        warm_cache().clear()
        loads, t0 = [], time.perf_counter()
        for i in range(runs):
            loads.append(finetune.run({**params, "learning_rate": 1e-3 * (i + 1)}, ctx(warm_reuse=reuse))["load_s"])
        totals[reuse] = (sum(loads), time.perf_counter() - t0, loads)
    cold, warm = totals[False], totals[True]
    print(f"warm reuse: {runs} LoRA runs on a {n_params / 1e6:.0f}M-parameter Qwen3.5 checkpoint (float32, CPU)")
    print(f"  cold: model load {cold[0]:6.2f} s of {cold[1]:6.2f} s  (per run: "
          + ", ".join(f"{x:.2f}" for x in cold[2]) + ")")
    print(f"  warm: model load {warm[0]:6.2f} s of {warm[1]:6.2f} s  (per run: "
          + ", ".join(f"{x:.2f}" for x in warm[2]) + ")")
    print(f"  load time saved: {cold[0] - warm[0]:.2f} s ({(cold[0] - warm[0]) / cold[0]:.0%} of loading; "
          f"wall {cold[1] / warm[1]:.2f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        overhead(args.runs, args.steps, Path(tmp))
        warm_reuse(args.runs, Path(tmp))


if __name__ == "__main__":
    main()
