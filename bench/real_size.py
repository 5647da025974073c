"""Qwen3.5 at released sizes: parameter counts, and what one run really allocates against the packing estimate.

    python bench/real_size.py counts [--rank 16]
    python bench/real_size.py memory --device cpu [--steps 2 --batch 4 --seq 256]
    python bench/real_size.py memory --device cuda --steps 20 --batch 16 --seq 512 [--fast-path DIR]

``counts``: per released size, the language model's parameters and the LoRA trainable parameters per preset
(rank 16), counted on the meta device, with the packing estimate per method (``orchestrator.execution.packing``).

``memory``: fine-tunes ``Qwen/Qwen3.5-0.8B`` built at random init (``init: random``: nothing downloaded), once with
LoRA and once fully, each in a fresh process (peaks and imported kernels stay apart), in bfloat16 compute (full:
float32 master weights). Prints the training and evaluation peaks against the estimate (ratio = measured /
estimate), and tokens/s over the steps after the first. On CUDA the peak is the allocator's; on the CPU it is the
process's peak resident memory since the run began, minus what the process held before loading (so the ratio
compares what the run added; the estimate's 1 GB CUDA context is left out of it there). ``--fast-path DIR`` runs
each method again with DIR (where flash-linear-attention is installed) on PYTHONPATH, to time the fused Gated
DeltaNet kernels against transformers' reference implementation. The data are synthetic: ``--seq`` characters
per sequence under the character tokenizer (no tokenizer can be downloaded), of which 64 are the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "Qwen/Qwen3.5-0.8B"
ANSWER_CHARS = 64
WORDS = ("alpha", "beta", "gamma", "delta", "sigma", "omega", "theta", "kappa", "lambda", "zeta")


def counts(rank: int) -> None:
    from experiments.qwen35.counts import released_counts
    from orchestrator.sizing import memory_gb

    rows = released_counts(rank)
    presets = list(rows[0].lora)
    print(f"{'model':<22}{'params':>15}" + "".join(f"{'LoRA ' + p:>16}" for p in presets)
          + f"{'est. LoRA GB':>14}{'est. full GB':>14}")
    for row in rows:
        print(f"{row.model:<22}{row.params:>15,}" + "".join(f"{row.lora[p]:>16,}" for p in presets)
              + f"{memory_gb(row.model, 'lora'):>14.1f}{memory_gb(row.model, 'full'):>14.1f}")


def write_data(directory: Path, seq: int, n: int) -> Path:
    rng = random.Random(0)

    def text(chars: int) -> str:
        words = []
        while sum(len(w) + 1 for w in words) < chars:
            words.append(rng.choice(WORDS))
        return " ".join(words)[:chars]

    path = directory / "train.jsonl"
    with path.open("w") as file:
        for _ in range(n):
            file.write(json.dumps({"question": text(seq - ANSWER_CHARS), "answer": text(ANSWER_CHARS)}) + "\n")
    return path


def one_run(args: argparse.Namespace) -> None:
    """Child process: one fine-tuning run; prints one JSON line."""
    import torch
    import transformers

    from experiments.qwen35 import finetune
    from experiments.qwen35.memory import peak_memory_mb, reset_peak_memory
    from orchestrator.context import RunContext

    transformers.logging.set_verbosity_error()
    reset_peak_memory(args.device)
    before_mb = 0.0 if args.device == "cuda" else peak_memory_mb(args.device)
    ctx = RunContext(study="bench", cell_key=args.method, seed=0, num_cpus=os.cpu_count() or 1,
                     gpu_ids=(0,) if args.device == "cuda" else (), warm_reuse=False)
    data = str(args.data)
    metrics = finetune.run({
        "model": MODEL, "init": "random", "method": args.method, "dtype": "bfloat16", "dataset": data,
        "train_split": "train", "eval_split": "train", "n_train": 256, "n_eval": args.batch, "chat": False,
        "max_seq_len": args.seq, "batch_size": args.batch, "max_steps": args.steps, "learning_rate": 1e-5,
        "save": False,
    }, ctx)
    print(json.dumps({"method": args.method, "before_mb": before_mb, "cuda": torch.cuda.is_available(),
                      **{k: float(v) for k, v in metrics.items()}}))


def memory(args: argparse.Namespace) -> None:
    from orchestrator.sizing import memory_gb

    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.seq, 256)
        variants = [("reference", None)] + ([("fast", args.fast_path)] if args.fast_path else [])
        results = []
        for kernels, path in variants:
            for method in ("lora", "full"):
                env = dict(os.environ)
                if path:
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
                command = [sys.executable, __file__, "_run", "--device", args.device, "--method", method,
                           "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
                           "--data", str(data)]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{kernels} {method}: FAILED\n{done.stderr[-3000:]}")
                    continue
                results.append({"kernels": kernels, **json.loads(done.stdout.strip().splitlines()[-1])})
    print(f"{MODEL} at random init, bfloat16 compute, {args.batch} x {args.seq} tokens per step, {args.steps} steps, "
          f"device {args.device}")
    print(f"{'kernels':<10}{'method':<7}{'fast':>5}{'train MB':>11}{'eval MB':>10}{'estimate MB':>13}"
          f"{'train/est':>11}{'eval/est':>10}{'tokens/s':>11}")
    for r in results:
        context_gb = 0.0 if args.device == "cuda" else 1.0  # the estimate's CUDA context: not on the CPU
        estimate = (memory_gb(MODEL, r["method"]) - context_gb) * 1024
        train, evals = r["train_peak_mem_mb"] - r["before_mb"], r["eval_peak_mem_mb"] - r["before_mb"]
        print(f"{r['kernels']:<10}{r['method']:<7}{int(r['fast_kernels']):>5}{train:>11,.0f}{evals:>10,.0f}"
              f"{estimate:>13,.0f}{train / estimate:>11.2f}{evals / estimate:>10.2f}{r['train_tokens_per_s']:>11,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("counts")
    c.add_argument("--rank", type=int, default=16)
    for name in ("memory", "_run"):
        m = sub.add_parser(name)
        m.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
        m.add_argument("--steps", type=int, default=2)
        m.add_argument("--batch", type=int, default=4)
        m.add_argument("--seq", type=int, default=256)
        m.add_argument("--fast-path", default=None)
        m.add_argument("--method", default="lora")
        m.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "counts":
        counts(args.rank)
    elif args.command == "memory":
        memory(args)
    else:
        one_run(args)


if __name__ == "__main__":
    main()
